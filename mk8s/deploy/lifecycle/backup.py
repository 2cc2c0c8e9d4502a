"""``mk8s backup``: an etcd snapshot on a Ready server, copied home and recorded; and
``mk8s backup --list``: the snapshots here and those on the servers.

[rancher/rke2-docs docs/datastore/backup_restore.md: ``rke2 etcd-snapshot save`` on a
server; a snapshot is restored with the server token it was taken under, which mk8s
keeps in ``.mk8s/<name>/token`` (or spec.rke2.token.file).] The snapshot is taken on
the first server in file order whose ``rke2-server`` is active, whose API answers
``/readyz`` and which the cluster lists Ready.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mk8s import ui
from mk8s.callbacks import Log
from mk8s.deploy.builders import facts, kubectl
from mk8s.deploy.cluster import Cluster, Node
from mk8s.deploy.engine.phase import Phase, run_phases
from mk8s.deploy.engine.remote import Connect, connect_ssh
from mk8s.deploy.engine.session import Session, SessionSettings
from mk8s.deploy.lifecycle import index, snapshot
from mk8s.deploy.state import read_token_file
from mk8s.errors import DeployError, Mk8sError


@dataclass
class BackupRun:
    """What the backup's phases share."""

    name: str = snapshot.DEFAULT_NAME
    unreachable: dict[str, str] = field(default_factory=dict)
    listing: str = ""
    chosen: Node | None = None
    version: str = ""
    record: index.SnapshotRecord | None = None
    on_servers: dict[str, list[snapshot.Listed]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


class ConnectServers(Phase):
    title = "connect to the servers"

    def __init__(self, run: BackupRun) -> None:
        self.r = run

    def run(self, s: Session) -> None:
        self.r.unreachable = s.connect_nodes(s.cluster.servers)


class ProbeServers(Phase):
    title = "read what each server runs (read-only)"

    def run(self, s: Session) -> None:
        def one(node: Node) -> None:
            cmd = facts.gather("/nonexistent", s.cluster.rke2.prefixes, s.cluster.paths(node))
            s.known.facts[node.name] = facts.parse_gathered(
                s.remote.run(node, "backup", cmd).stdout
            )

        s.parallel([n for n in s.cluster.servers if s.remote.connected(n)], one)


def ready_server(s: Session, listing: str) -> Node | None:
    """The first server (file order) that runs, answers /readyz and is listed Ready."""
    for node in s.cluster.servers:
        f = s.known.facts.get(node.name)
        if f is None or not f.server_active or not kubectl.node_ready(listing, node.name)[0]:
            continue
        r = s.remote.run(node, "backup", kubectl.readyz_command(s.cluster.paths(node)))
        if r.exit_code == 0 and r.stdout.strip() == "ok":
            return node
    return None


class ChooseServer(Phase):
    title = "choose a Ready server"

    def __init__(self, run: BackupRun) -> None:
        self.r = run

    def run(self, s: Session) -> None:
        for node in s.cluster.servers:
            if node.name in s.known.facts and s.known.facts[node.name].server_active:
                r = s.remote.run(node, "backup", kubectl.nodes_command(s.cluster.paths(node)))
                if r.exit_code == 0:
                    self.r.listing = r.stdout
                    break
        self.r.chosen = ready_server(s, self.r.listing)
        versions = [kubectl.node_ready(self.r.listing, n.name)[1] for n in s.cluster.servers]
        self.r.version = snapshot.newest(versions) or ""
        if self.r.chosen is None or not self.r.version:
            why = "; ".join(f"{n}: {e}" for n, e in self.r.unreachable.items())
            raise DeployError(
                "no server is Ready to take an etcd snapshot"
                + (f" (unreachable: {why})" if why else ""),
                "bring a server back (mk8s status -f cluster.yaml), then run backup again",
            )


def cluster_token(s: Session, node: Node) -> str:
    """The server's own token (``server/node-token``), else the one mk8s keeps."""
    found = s.known.facts[node.name].node_token
    if found:
        return found
    if s.cluster.rke2.token_file is not None:
        return read_token_file(s.cluster.rke2.token_file)
    stored = s.state.read_token()
    if stored is None:
        raise DeployError(
            f"{node.name} shows no server token and none is kept in {s.state.token_path}",
            "set spec.rke2.token.file to the cluster's token, then run backup again",
        )
    return stored


class TakeSnapshot(Phase):
    title = "take the etcd snapshot and copy it home"

    def __init__(self, run: BackupRun) -> None:
        self.r = run

    def run(self, s: Session) -> None:
        node = self.r.chosen
        assert node is not None
        paths = s.cluster.paths(node)
        f = s.known.facts[node.name]
        out = s.remote.run(
            node, "snapshot", snapshot.save_command(f.rke2_prefix, self.r.name, node.name, paths)
        )
        remote = snapshot.saved_path(out.stdout, paths, node)
        taken = snapshot.Taken(
            name=self.r.name,
            kind=index.BACKUP,
            rke2_version=self.r.version,
            bundle_id=snapshot.deployed_bundle(s, node),
            token=cluster_token(s, node),
            cluster_id=snapshot.cluster_id(s, node),
        )
        self.r.record = snapshot.copy_home(s, node, remote, taken)


class ListOnServers(Phase):
    title = "list the snapshots on each server (rke2 etcd-snapshot ls)"

    def __init__(self, run: BackupRun) -> None:
        self.r = run

    def run(self, s: Session) -> None:
        self.r.errors.update(self.r.unreachable)
        for node in s.cluster.servers:
            f = s.known.facts.get(node.name)
            if f is None:
                continue
            if f.rke2_version is None:
                self.r.errors[node.name] = "RKE2 is not installed"
                continue
            try:
                r = s.remote.run(node, "backup", snapshot.ls_command(f.rke2_prefix))
            except Mk8sError as e:
                self.r.errors[node.name] = str(e)
                continue
            if r.exit_code != 0:
                last = (r.stderr.strip() or r.stdout.strip()).splitlines()[-1:]
                self.r.errors[node.name] = f"rke2 etcd-snapshot ls exited {r.exit_code}: " + (
                    last[0][:200] if last else ""
                )
                continue
            self.r.on_servers[node.name] = snapshot.parse_ls(r.stdout)


def _session(cluster: Cluster, state_base: Path | None, log: Log, connect: Connect) -> Session:
    return Session(
        SessionSettings(cluster=cluster, state_base=state_base), log=log, connect=connect
    )


def backup(
    cluster: Cluster,
    name: str = snapshot.DEFAULT_NAME,
    *,
    state_base: Path | None = None,
    log: Log = ui.note,
    connect: Connect = connect_ssh,
) -> index.SnapshotRecord:
    """Take a snapshot on a Ready server and copy it home; its record."""
    run = BackupRun(name=snapshot.check_name(name))
    s = _session(cluster, state_base, log, connect)
    index.check_home(snapshot.snapshots_home(s))  # before any server takes a snapshot
    phases: Sequence[Phase] = [
        ConnectServers(run),
        ProbeServers(),
        ChooseServer(run),
        TakeSnapshot(run),
    ]
    with s.state.locked():
        try:
            run_phases(phases, s)
        except KeyboardInterrupt:
            raise s.interrupted("backup", "it takes a new snapshot") from None
        finally:
            s.close()
    assert run.record is not None
    return run.record


@dataclass(frozen=True)
class Listing:
    """``mk8s backup --list``: the records here, what each server holds, what failed."""

    home: Path
    local: list[index.SnapshotRecord]
    missing: list[str]  # recorded files that are gone or of another size
    on_servers: dict[str, list[snapshot.Listed]]
    errors: dict[str, str]


def list_snapshots(
    cluster: Cluster,
    *,
    state_base: Path | None = None,
    log: Log = ui.note,
    connect: Connect = connect_ssh,
) -> Listing:
    """The snapshots in ``.mk8s/<name>/snapshots`` and on every reachable server."""
    run = BackupRun()
    s = _session(cluster, state_base, log, connect)
    home = snapshot.snapshots_home(s)
    local = index.check_home(home)  # a damaged index is refused before any server is asked
    try:
        run_phases([ConnectServers(run), ProbeServers(), ListOnServers(run)], s)
    finally:
        s.close()
    missing = [
        r.file
        for r in local
        if not (home / r.file).is_file() or (home / r.file).stat().st_size != r.size
    ]
    return Listing(home, local, missing, run.on_servers, run.errors)


def listing_text(found: Listing) -> str:
    """The two tables ``backup --list`` prints."""
    rows: list[tuple[str, ...]] = [("FILE", "TAKEN", "NODE", "RKE2", "KIND", "SIZE", "SHA256")]
    for r in found.local:
        gone = " (MISSING)" if r.file in found.missing else ""
        rows.append(
            (r.file + gone, r.taken_at, r.node, r.rke2_version, r.kind, ui.human_bytes(r.size),
             r.sha256[:16])
        )  # fmt: skip
    lines = [f"here ({found.home}):", ui.table(rows) if found.local else "  none"]
    server_rows: list[tuple[str, ...]] = [("SERVER", "NAME", "SIZE", "CREATED")]
    for node, listed in found.on_servers.items():
        server_rows += [(node, x.name, x.size, x.created) for x in listed] or [
            (node, "(none)", "-", "-")
        ]
    lines += ["on the servers:", ui.table(server_rows) if len(server_rows) > 1 else "  none"]
    lines += [ui.safe(f"{n}: not listed: {e}") for n, e in found.errors.items()]
    return "\n".join(lines)


__all__ = ["BackupRun", "Listing", "backup", "list_snapshots", "listing_text"]
