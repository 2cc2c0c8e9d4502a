"""``mk8s deploy``, ``status``, ``kubeconfig`` and ``reset``."""

from __future__ import annotations

from pathlib import Path

import click

from mk8s import ui
from mk8s.bundle.format import keys
from mk8s.cli.common import ALLOW_UNSIGNED, JOBS, WAIT, key_option
from mk8s.deploy import ops
from mk8s.deploy.apply import DeploySettings, deploy
from mk8s.deploy.cluster import Cluster
from mk8s.deploy.cluster import load_cluster as _load_cluster
from mk8s.errors import DeployError
from mk8s.untrusted import shown_list

CLUSTER_FILE = click.option(
    "-f",
    "--file",
    "cluster_file",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="The cluster.yaml file.",
)


def load_cluster(path: Path) -> Cluster:
    """cluster.yaml, validated; what the loader changed (a node name it lower-cased)
    is said once, as a warning."""
    cluster = _load_cluster(path)
    for line in cluster.notes:
        ui.warn(line)
    return cluster


@click.command("deploy")
@CLUSTER_FILE
@click.option(
    "--bundle",
    "bundle_path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="The bundle file.",
)
@key_option(required=False)
@click.option(
    "--base",
    "base_path",
    type=click.Path(path_type=Path, dir_okay=True),
    help="The full bundle a delta --bundle was made against (deltas only).",
)
@ALLOW_UNSIGNED
@click.option(
    "--dry-run", is_flag=True, help="Verify the bundle and print the plan; contact no node."
)
@JOBS
@WAIT
def deploy_cmd(
    cluster_file: Path,
    bundle_path: Path,
    key_paths: tuple[Path, ...],
    base_path: Path | None,
    allow_unsigned: bool,
    dry_run: bool,
    jobs: int | None,
    ready_timeout: float,
) -> None:
    """Verify the bundle, then install and join every node of cluster.yaml.

    Order: verify; connect and preflight every node (nothing changes if one fails);
    upload and install in parallel; the first server; the other servers one at a
    time; the agents in parallel; then NAME.kubeconfig (0600) in this directory.
    Safe to re-run: what is already in place is skipped. A delta bundle needs --base,
    the full bundle it was made against: the release is rebuilt from both and checked
    against its pins before any node is touched.
    """
    if not key_paths and not allow_unsigned:
        raise click.UsageError("give the bundle signer's public key with --key")
    cluster = load_cluster(cluster_file)
    settings = DeploySettings(
        cluster=cluster,
        bundle=bundle_path,
        trusted=keys.load_trusted_keys(key_paths),
        allow_unsigned=allow_unsigned,
        jobs=jobs,
        dry_run=dry_run,
        ready_timeout=ready_timeout,
        base=base_path,
    )
    if dry_run:
        report = deploy(settings)
    else:
        with ui.Transfers("uploaded to") as progress:
            report = deploy(settings, progress=progress)
    if dry_run:
        click.echo(ui.safe(report.plan_text, keep_newlines=True))
        return
    click.echo(report.table())
    if report.kubeconfig:
        click.echo(f"kubeconfig: {report.kubeconfig}")
    click.echo(f"uploaded {ui.human_bytes(report.uploaded_bytes)} in {report.seconds:.1f}s")
    if not report.ok:
        bad = [o.node.name for o in report.outcomes.values() if o.state != "ready"]
        raise DeployError(
            f"{len(bad)} node(s) not Ready: {shown_list(bad)}",
            "fix what the table says, then run the same deploy again (it resumes)",
        )


@click.command("status")
@CLUSTER_FILE
def status_cmd(cluster_file: Path) -> None:
    """Show what each node runs and whether it is Ready (exit 1 unless all are)."""
    cluster = load_cluster(cluster_file)
    rows = ops.status(cluster)
    click.echo(ops.status_table(rows))
    carried = ops.carried_workloads(cluster)
    if carried:
        click.echo(ui.safe("the deployed bundle carried: " + "; ".join(carried)))
    bad = [r for r in rows if not r.ready]
    if bad:
        gone = [r.node.name for r in bad if not r.reachable]
        raise DeployError(
            f"{len(bad)} node(s) not Ready: {shown_list([r.node.name for r in bad])}"
            + (f" ({len(gone)} unreachable)" if gone else ""),
            "see the table above: fix an unreachable node's connection; for a reachable"
            " node not Ready run mk8s deploy again (it converges the node)",
        )


@click.command("kubeconfig")
@CLUSTER_FILE
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Where to write it (default: NAME.kubeconfig here).",
)
def kubeconfig_cmd(cluster_file: Path, output: Path | None) -> None:
    """Fetch the admin kubeconfig, pointed at the cluster's address (written 0600)."""
    path = ops.fetch_kubeconfig(load_cluster(cluster_file), output)
    click.echo(f"kubeconfig: {path}")


@click.command("reset")
@CLUSTER_FILE
@click.option("--node", "node_name", help="Reset only this node (taken out of the cluster).")
@click.option("--yes", is_flag=True, help="Confirm: this uninstalls RKE2 and deletes its data.")
@click.option(
    "--force",
    is_flag=True,
    help="With --node: uninstall even if no server could remove the node from the cluster.",
)
def reset_cmd(cluster_file: Path, node_name: str | None, yes: bool, force: bool) -> None:
    """Uninstall RKE2 from one node, or from all (agents first, then servers).

    With --node, the node is first deleted from the cluster on another server; if that
    fails, nothing is uninstalled (its re-join would be refused) unless --force.
    """
    if not yes:
        raise click.UsageError("reset deletes RKE2 and its data; pass --yes to confirm")
    if force and node_name is None:
        raise click.UsageError("--force applies to --node only")
    cluster = load_cluster(cluster_file)
    done = ops.reset(cluster, node_name, force=force)
    click.echo(f"reset: {', '.join(done) or 'nothing to do'}")
