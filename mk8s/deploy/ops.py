"""Day-2 operations on a deployed cluster: status, kubeconfig, reset."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mk8s import ui
from mk8s.deploy import facts as facts_mod
from mk8s.deploy import plan
from mk8s.deploy.cluster import Cluster, Node
from mk8s.deploy.run import _node_ready, _parallel, _Runner, connect_many, connect_node
from mk8s.deploy.state import StateDir
from mk8s.errors import ConnectError, DeployError, Mk8sError
from mk8s.files import atomic_write

Log = Callable[[str], None]


@dataclass
class NodeStatus:
    node: Node
    reachable: bool = False
    version: str = ""
    service: str = "-"
    ready: bool = False
    error: str = ""


def _close(runner: _Runner) -> None:
    for t in runner.conns.values():
        t.close()


def status(
    cluster: Cluster, *, state_base: Path | None = None, log: Log = ui.note
) -> list[NodeStatus]:
    """What each node runs and whether it is Ready. Never changes anything."""
    runner = _Runner(StateDir(cluster.name, state_base), log)
    out = {n.name: NodeStatus(n) for n in cluster.nodes}
    try:
        errors = connect_many(cluster.nodes, runner, cluster.options.concurrency)
        for name, err in errors.items():
            out[name].error = err

        def probe(node: Node) -> None:
            st = out[node.name]
            st.reachable = True
            try:
                basic = runner.conns[node.name].run(facts_mod.BASIC).stdout
                f = facts_mod.parse(basic, None)
                if f.can_root:
                    priv = runner.conns[node.name].run(facts_mod.privileged("/nonexistent"))
                    f = facts_mod.parse(basic, priv.stdout)
                st.version = f.rke2_tag or ""
                active = f.server_active if node.is_server else f.agent_active
                st.service = f"{plan.service(node)} {'active' if active else 'inactive'}"
            except Mk8sError as e:
                st.error = str(e)

        _parallel(
            [n for n in cluster.nodes if n.name in runner.conns], cluster.options.concurrency, probe
        )
        nodes_json = _ask_any_server(cluster, runner)
        for st in out.values():
            if nodes_json is not None:
                st.ready, version = _node_ready(nodes_json, st.node.name)
                st.version = st.version or version
    finally:
        _close(runner)
    return list(out.values())


def _ask_any_server(cluster: Cluster, runner: _Runner) -> str | None:
    for node in cluster.servers:
        t = runner.conns.get(node.name)
        if t is None:
            continue
        try:
            r = t.run(plan.nodes_command())
        except Mk8sError:
            continue
        if r.exit_code == 0:
            return r.stdout
    return None


def status_table(rows: list[NodeStatus]) -> str:
    table = [("NODE", "ADDRESS", "ROLE", "SERVICE", "VERSION", "READY")]
    for r in rows:
        ready = "Ready" if r.ready else ("unreachable" if not r.reachable else "NotReady")
        table.append((r.node.name, r.node.address, r.node.role, r.service, r.version or "-", ready))
    lines = [ui.table(table)]
    lines += [ui.safe(f"{r.node.name}: {r.error}") for r in rows if r.error]
    return "\n".join(lines)


def fetch_kubeconfig(
    cluster: Cluster, out: Path | None = None, *, state_base: Path | None = None, log: Log = ui.note
) -> Path:
    """Fetch rke2.yaml from the first reachable server, pointed at the cluster address."""
    runner = _Runner(StateDir(cluster.name, state_base), log)
    errors: list[str] = []
    try:
        for node in cluster.servers:
            try:
                t = connect_node(node)
            except ConnectError as e:
                errors.append(str(e))
                continue
            runner.conns[node.name] = t
            try:
                text = t.run(plan.kubeconfig_command()).stdout
            except Mk8sError as e:
                errors.append(str(e))
                continue
            host = plan.api_host(cluster)
            target = out or Path.cwd() / f"{cluster.name}.kubeconfig"
            atomic_write(target, plan.rewrite_kubeconfig(text, host).encode(), mode=0o600)
            return target
    finally:
        _close(runner)
    raise DeployError(
        "no server could give the kubeconfig: " + "; ".join(errors),
        "check that the cluster is deployed (mk8s status)",
    )


def reset(
    cluster: Cluster,
    node_name: str | None = None,
    *,
    state_base: Path | None = None,
    log: Log = ui.note,
) -> list[str]:
    """Uninstall RKE2: one node (taken out of the cluster first) or all of them.

    The whole cluster goes agents first, then servers (the first server last).
    Returns the names reset; raises DeployError naming the nodes that failed.
    """
    state = StateDir(cluster.name, state_base)
    with state.locked():
        runner = _Runner(state, log)
        try:
            return _reset(cluster, node_name, state, runner, log)
        finally:
            _close(runner)


def _reset(
    cluster: Cluster, node_name: str | None, state: StateDir, runner: _Runner, log: Log
) -> list[str]:
    failed: dict[str, str] = {}
    done: list[str] = []
    if node_name is not None:
        target = cluster.node(node_name)
        targets = [target]
        others = [s for s in cluster.servers if s.name != target.name]
        errors = connect_many([target, *others], runner, cluster.options.concurrency)
        if target.name in errors:
            raise ConnectError(errors[target.name])
        for s in others:
            if s.name in runner.conns:
                try:
                    runner.run(s, "reset", plan.delete_node_command(target.name))
                    break
                except Mk8sError:
                    continue
    else:
        first, servers, agents = plan.order(cluster)
        targets = [*agents, *reversed(servers), first]
        errors = connect_many(targets, runner, cluster.options.concurrency)
        failed.update(errors)

    def uninstall(node: Node) -> None:
        if node.name not in runner.conns:
            return
        start = time.monotonic()
        try:
            runner.run(node, "reset", plan.uninstall_command())
            log(f"{node.name}: RKE2 uninstalled ({time.monotonic() - start:.1f}s)")
            done.append(node.name)
        except Mk8sError as e:
            failed[node.name] = str(e)

    if node_name is None:
        first, servers, agents = plan.order(cluster)
        _parallel(agents, cluster.options.concurrency, uninstall)
        for s in [*reversed(servers), first]:
            uninstall(s)
    else:
        uninstall(targets[0])
    journal = state.read_journal()
    for name in done:
        journal["nodes"][name] = {"state": "reset"}
    state.write_journal(journal)
    if failed:
        raise DeployError(
            "reset failed on " + "; ".join(f"{n}: {e}" for n, e in failed.items()),
            "fix the node (or its connection) and run reset again",
        )
    return done
