"""``mk8s certs`` (every node's earliest certificate expiry) and ``mk8s certs rotate``."""

from __future__ import annotations

from pathlib import Path

import click

from mk8s import ui
from mk8s.cli.common import WAIT, print_json
from mk8s.cli.deploy import load_cluster
from mk8s.deploy import certops
from mk8s.deploy.builders.certfiles import WARN_DAYS
from mk8s.errors import DeployError
from mk8s.untrusted import shown_list

FILE_HELP = "The cluster.yaml file."


@click.group("certs", invoke_without_command=True)
@click.option(
    "-f",
    "--file",
    "cluster_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help=FILE_HELP,
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def certs(ctx: click.Context, cluster_file: Path | None, as_json: bool) -> None:
    """Show each node's earliest certificate expiry (exit 1 if one is within 30 days).

    RKE2 renews a leaf certificate at a start when it is expired or within 120 days of
    expiry; `mk8s certs rotate` makes new ones on every node. `mk8s certs -f
    cluster.yaml` reads the certificates under server/tls and agent/ on every node.
    """
    if ctx.invoked_subcommand is not None:
        return
    if cluster_file is None:
        raise click.UsageError("give the cluster file with -f cluster.yaml")
    report = certops.check(load_cluster(cluster_file))
    if as_json:
        print_json(report.as_json())
    else:
        click.echo(report.table())
    problems = report.problems()
    if problems:
        raise DeployError(
            f"certificates need attention on {shown_list(sorted(problems))} (expired, within"
            f" {WARN_DAYS} days, or not read)",
            f"run mk8s certs rotate -f {cluster_file} --yes (check first with --dry-run);"
            " an unreachable node: fix its connection (mk8s status)",
        )


@certs.command("rotate")
@click.option(
    "-f",
    "--file",
    "cluster_file",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help=FILE_HELP,
)
@click.option("--yes", is_flag=True, help="Confirm: this restarts RKE2 on every node.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Read the nodes (nothing changes) and print the plan.",
)
@WAIT
def rotate_cmd(cluster_file: Path, yes: bool, dry_run: bool, ready_timeout: float) -> None:
    """Rotate RKE2's certificates on every node (RKE2 docs: security/certificates.md).

    Servers one at a time: stop rke2-server, `rke2 certificate rotate`, start, wait
    until Ready; then the agents restart in batches (options.upgrade.maxUnavailable)
    and get new certificates from their server. A cluster that is down (its
    certificates expired while it was powered off) has every server stopped and
    rotated, then started together. Writes NAME.kubeconfig again.
    """
    if not yes and not dry_run:
        raise click.UsageError(
            "certs rotate restarts RKE2 on every node; pass --yes to confirm"
            " (or --dry-run to see the plan)"
        )
    settings = certops.RotateSettings(
        cluster=load_cluster(cluster_file), dry_run=dry_run, ready_timeout=ready_timeout
    )
    result = certops.rotate(settings)
    if dry_run:
        click.echo(ui.safe(result.plan_text, keep_newlines=True))
        return
    assert result.after is not None
    click.echo(result.after.table())
    if result.kubeconfig:
        click.echo(f"kubeconfig: {result.kubeconfig}")
    problems = result.after.problems()
    if problems:
        raise DeployError(
            f"after the rotation, certificates still need attention on"
            f" {shown_list(sorted(problems))}",
            "see the table above; a CA is not rotated by mk8s certs rotate",
        )
