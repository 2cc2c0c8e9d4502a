"""``mk8s backup`` (and ``--list``) and ``mk8s restore``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from mk8s import ui
from mk8s.bundle.format import keys
from mk8s.cli.common import ALLOW_UNSIGNED, JOBS, WAIT, key_option, stdin_is_terminal
from mk8s.cli.deploy import CLUSTER_FILE, load_cluster
from mk8s.errors import DeployError
from mk8s.untrusted import shown_list

if TYPE_CHECKING:
    from mk8s.deploy.lifecycle.restore_run import RestoreReport


@click.command("backup")
@CLUSTER_FILE
@click.option(
    "--name",
    default=None,
    help="Snapshot name for rke2 etcd-snapshot save (default mk8s-backup); RKE2 adds"
    " -NODE-UNIXTIME.",
)
@click.option("--list", "list_", is_flag=True, help="List the snapshots here and on the servers.")
def backup_cmd(cluster_file: Path, name: str | None, list_: bool) -> None:
    """Take an etcd snapshot on a Ready server and copy it to .mk8s/NAME/snapshots/.

    The copy (0600) is recorded with its sha256, the RKE2 version, the bundle, an id
    of the token and the time in .mk8s/NAME/snapshots/index.json: mk8s restore takes
    only snapshots that match their record. Keep the token (.mk8s/NAME/token) with
    the snapshots: a snapshot is restored only with the token it was taken under.
    """
    from mk8s.deploy.lifecycle import backup, snapshot

    if list_ and name is not None:
        raise click.UsageError("--name takes a snapshot; --list only lists")
    if name is not None:
        snapshot.check_name(name)  # before anything connects
    cluster = load_cluster(cluster_file)
    if list_:
        found = backup.list_snapshots(cluster)
        click.echo(backup.listing_text(found))
        if found.errors or found.missing:
            raise DeployError(
                f"not every snapshot could be listed or found: {shown_list(list(found.errors))}"
                + (f"; missing here: {shown_list(found.missing)}" if found.missing else ""),
                "check the servers (mk8s status) and the files in " + str(found.home),
            )
        return
    record = backup.backup(cluster, name or snapshot.DEFAULT_NAME)
    home = Path.cwd() / ".mk8s" / cluster.name / "snapshots"
    click.echo(
        ui.safe(
            f"snapshot: {home / record.file} ({ui.human_bytes(record.size)}, sha256"
            f" {record.sha256}, RKE2 {record.rke2_version}, taken on {record.node})"
        )
    )


@click.command("restore")
@CLUSTER_FILE
@click.option(
    "--snapshot",
    "snapshot_path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="The snapshot file (its record must be in the index.json beside it or in"
    " .mk8s/NAME/snapshots/).",
)
@click.option(
    "--bundle",
    "bundle_path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="The bundle of the RKE2 version the snapshot was taken on.",
)
@key_option(required=False)
@ALLOW_UNSIGNED
@click.option(
    "--dry-run", is_flag=True, help="Check the inputs and print the plan; change nothing."
)
@click.option(
    "--yes", is_flag=True, help="Confirm: the cluster's state is replaced by the snapshot's."
)
@JOBS
@WAIT
def restore_cmd(
    cluster_file: Path,
    snapshot_path: Path,
    bundle_path: Path,
    key_paths: tuple[Path, ...],
    allow_unsigned: bool,
    dry_run: bool,
    yes: bool,
    jobs: int | None,
    ready_timeout: float,
) -> None:
    """Restore the cluster to an etcd snapshot taken by mk8s (RKE2's procedure).

    Refused before anything changes: a snapshot that does not match its record (exit
    3), a bundle of another RKE2 version than the snapshot's or another token (exit 2).
    Then: every node staged; RKE2 stopped on every server (rke2-killall.sh); the
    snapshot's RKE2 installed where another runs (so restoring the pre-upgrade
    snapshot with the old bundle rolls an upgrade back); the first server reset from
    the snapshot and started; the other servers rejoin one at a time; the agents
    restart. Works onto new hosts too. Interrupted, the same command goes on.
    """
    from mk8s.deploy.lifecycle.restore_run import RestoreSettings, restore

    if not key_paths and not allow_unsigned:
        raise click.UsageError("give the bundle signer's public key with --key")
    cluster = load_cluster(cluster_file)
    if not dry_run and not yes:
        _confirm(cluster.name, snapshot_path)
    settings = RestoreSettings(
        cluster=cluster,
        snapshot=snapshot_path,
        bundle=bundle_path,
        trusted=keys.load_trusted_keys(key_paths),
        allow_unsigned=allow_unsigned,
        jobs=jobs,
        dry_run=dry_run,
        ready_timeout=ready_timeout,
    )
    if dry_run:
        click.echo(ui.safe(restore(settings).plan_text, keep_newlines=True))
        return
    with ui.Transfers("uploaded to") as progress:
        report = restore(settings, progress=progress)
    _report(report)


def _confirm(cluster: str, snapshot_path: Path) -> None:
    """Ask on a terminal; without one (and without --yes) refuse: exit 2."""
    if not stdin_is_terminal():
        raise click.UsageError(
            "restore replaces the cluster's state with the snapshot's; pass --yes to"
            " confirm (or --dry-run to see the plan)"
        )
    click.confirm(
        f"Restore cluster {cluster} to {snapshot_path.name}? Everything written since the"
        " snapshot is lost",
        abort=True,
        err=True,
    )


def _report(report: RestoreReport) -> None:
    click.echo(report.table())
    if report.kubeconfig:
        click.echo(f"kubeconfig: {report.kubeconfig}")
    if not report.ok:
        bad = [o.node.name for o in report.outcomes.values() if o.state != "ready"]
        raise DeployError(
            f"the restore did not finish: {len(bad)} node(s) not Ready: {shown_list(bad)}"
            + (f" ({report.stopped})" if report.stopped else ""),
            "fix what the table says, then run the same restore again (it goes on)",
        )
    click.echo(f"restored in {report.seconds:.1f}s")
