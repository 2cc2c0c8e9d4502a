"""Day-2 operations on a deployed cluster: status, kubeconfig, reset.

Each is a list of phases (:mod:`mk8s.deploy.phases.status`, :mod:`.phases.reset`)
run by the same engine and session as a deploy.
"""

from __future__ import annotations

from pathlib import Path

from mk8s import ui
from mk8s.callbacks import Log
from mk8s.deploy.builders import certfiles as certs
from mk8s.deploy.cluster import Cluster
from mk8s.deploy.engine.known import NodeState
from mk8s.deploy.engine.phase import run_phases
from mk8s.deploy.engine.remote import Connect, connect_ssh
from mk8s.deploy.engine.session import Session, SessionSettings
from mk8s.deploy.phases.certificates import CertRun, ReadCerts
from mk8s.deploy.phases.reset import reset_phases
from mk8s.deploy.phases.status import (
    AskReadiness,
    ConnectReachable,
    FetchKubeconfig,
    NodeStatus,
    ProbeNodes,
    statuses,
)
from mk8s.deploy.state import StateDir
from mk8s.errors import DeployError


def _session(cluster: Cluster, state_base: Path | None, log: Log, connect: Connect) -> Session:
    return Session(
        SessionSettings(cluster=cluster, state_base=state_base), log=log, connect=connect
    )


def status(
    cluster: Cluster,
    *,
    state_base: Path | None = None,
    log: Log = ui.note,
    connect: Connect = connect_ssh,
) -> list[NodeStatus]:
    """What each node runs and whether it is Ready. Never changes anything."""
    s = _session(cluster, state_base, log, connect)
    found = CertRun()
    try:
        run_phases([ConnectReachable(), ProbeNodes(), AskReadiness(), ReadCerts(found)], s)
    finally:
        s.close()
    rows = list(statuses(s).values())
    for r in rows:
        nc = found.found.get(r.node.name)
        if nc is not None and r.reachable and nc.certs:  # a node with RKE2's certificates
            r.certs = certs.shown_expiry(nc, found.now)
            r.certs_problem = certs.verdict(nc, found.now)
    return rows


def status_table(rows: list[NodeStatus]) -> str:
    table = [("NODE", "ADDRESS", "ROLE", "SERVICE", "VERSION", "IMAGES", "READY", "CERTS EXPIRE")]
    for r in rows:
        ready = "Ready" if r.ready else ("unreachable" if not r.reachable else "NotReady")
        n = r.node
        table.append(
            (n.name, n.address, n.role, r.service, r.version or "-", r.images, ready, r.certs)
        )
    lines = [ui.table(table)]
    lines += [ui.safe(f"{r.node.name}: {r.error}") for r in rows if r.error]
    lines += [
        ui.safe(f"{r.node.name}: certificates: {r.certs_problem}: run mk8s certs rotate")
        for r in rows
        if r.certs_problem
    ]
    for r in rows:
        if r.placed:
            lines.append(ui.safe(f"{r.node.name} applies: {', '.join(r.placed)}"))
    versions = sorted({r.version for r in rows if r.version})
    if len(versions) > 1:
        lines.append(
            ui.safe(
                f"MIXED VERSIONS: {', '.join(versions)}: an upgrade is under way or stopped;"
                " run mk8s deploy with the newer bundle to finish it"
            )
        )
    return "\n".join(lines)


def carried_workloads(cluster: Cluster, *, state_base: Path | None = None) -> list[str]:
    """The workloads the last deploy's bundle carried (from the journal)."""
    found = StateDir(cluster.name, state_base).read_journal().get("workloads", [])
    return [str(w) for w in found] if isinstance(found, list) else []


def fetch_kubeconfig(
    cluster: Cluster,
    out: Path | None = None,
    *,
    state_base: Path | None = None,
    log: Log = ui.note,
    connect: Connect = connect_ssh,
) -> Path:
    """Fetch rke2.yaml from the first reachable server, pointed at the cluster address."""
    s = _session(cluster, state_base, log, connect)
    try:
        run_phases([FetchKubeconfig(out)], s)
    finally:
        s.close()
    assert s.known.kubeconfig is not None  # FetchKubeconfig wrote it, or raised
    return s.known.kubeconfig


def reset(
    cluster: Cluster,
    node_name: str | None = None,
    *,
    force: bool = False,
    state_base: Path | None = None,
    log: Log = ui.note,
    connect: Connect = connect_ssh,
) -> list[str]:
    """Uninstall RKE2: one node (taken out of the cluster first) or all of them.

    The whole cluster goes agents first, then servers (the first server last). Returns
    the names reset; raises DeployError naming the nodes that failed, and (for one
    node) when the cluster could not let it go, unless ``force``.
    """
    if node_name is not None:
        cluster.node(node_name)  # ClusterFileError naming the known names
    s = _session(cluster, state_base, log, connect)
    with s.state.locked():
        try:
            run_phases(reset_phases(node_name, force=force), s)
        except KeyboardInterrupt:
            raise s.interrupted("reset", "it uninstalls what is left") from None
        finally:
            s.close()
    failed = {
        o.node.name: o.error for o in s.known.outcomes.values() if o.state == NodeState.FAILED
    }
    if failed:
        raise DeployError(
            "reset failed on " + "; ".join(f"{n}: {e}" for n, e in failed.items()),
            "fix the node (or its connection) and run reset again",
        )
    return [o.node.name for o in s.known.outcomes.values() if o.state == NodeState.RESET]
