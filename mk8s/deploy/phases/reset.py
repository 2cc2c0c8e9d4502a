"""Day-2 reset: take one node out of the cluster and uninstall RKE2 from it, or
uninstall the whole cluster (agents first, then the servers, the first one last).

A node is uninstalled only after the cluster let it go: if no other server could
delete it from the cluster, reset stops with the reason (its later re-join would be
refused with "Node password rejected"), unless ``--force``. A node already gone from
the cluster is fine.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from mk8s.deploy import kubectl, plan
from mk8s.deploy.cluster import Node
from mk8s.deploy.command import Command
from mk8s.deploy.engine import Phase
from mk8s.deploy.session import Session
from mk8s.deploy.steps import NodeState, Step
from mk8s.errors import ConnectError, DeployError, Mk8sError


def uninstall(s: Session, node: Node) -> Command:
    """rke2-uninstall.sh, told the node's data-dir."""
    return kubectl.uninstall_command(s.cluster.paths(node), s.cluster.rke2.prefixes)


def reset_targets(s: Session, node_name: str | None) -> list[Node]:
    """The nodes to uninstall, in the order they go."""
    if node_name is not None:
        return [s.cluster.node(node_name)]
    first, servers, agents = plan.order(s.cluster)
    return [*agents, *reversed(servers), first]


class ConnectForReset(Phase):
    title = "connect to the nodes to reset (and the servers that remove them)"

    def __init__(self, node_name: str | None) -> None:
        self.node_name = node_name

    def nodes(self, s: Session) -> Sequence[Node]:
        targets = reset_targets(s, self.node_name)
        if self.node_name is None:
            return targets
        return [*targets, *(n for n in s.cluster.servers if n.name != self.node_name)]

    def run(self, s: Session) -> None:
        errors = s.connect_nodes(self.nodes(s))
        for name, err in errors.items():
            if self.node_name == name:
                raise ConnectError(err)
            if self.node_name is None:
                s.fail(s.cluster.node(name), ConnectError(err))


class RemoveFromCluster(Phase):
    title = "remove the node from the cluster (on another server)"

    def __init__(self, node_name: str | None, force: bool) -> None:
        self.node_name = node_name
        self.force = force

    def should_run(self, s: Session) -> bool:
        if self.node_name is None:
            return False
        # The only server is the whole cluster: there is nobody to tell.
        return any(n.name != self.node_name for n in s.cluster.servers)

    def nodes(self, s: Session) -> Sequence[Node]:
        return [n for n in s.cluster.servers if n.name != self.node_name]

    def steps(self, s: Session, node: Node) -> list[Step]:
        assert self.node_name is not None
        cmd = kubectl.delete_node_command(self.node_name, s.cluster.paths(node))
        return [Step(node.name, "reset", (cmd,))]

    def run(self, s: Session) -> None:
        assert self.node_name is not None
        reasons: list[str] = []
        for server in self.nodes(s):
            if server.name not in s.conns:
                reasons.append(f"{server.name}: not reachable")
                continue
            try:
                cmd = kubectl.delete_node_command(self.node_name, s.cluster.paths(server))
                r = s.run(server, "reset", cmd)
            except Mk8sError as e:
                reasons.append(str(e))
                continue
            if r.exit_code == 0:
                s.log(f"{self.node_name}: removed from the cluster (on {server.name})")
                return
            last = (r.stderr.strip() or r.stdout.strip()).splitlines()
            reasons.append(f"{server.name}: exited {r.exit_code}: {last[-1] if last else ''}")
        why = "; ".join(reasons) or "no other server"
        if self.force:
            s.log(f"{self.node_name}: NOT removed from the cluster ({why}); going on (--force)")
            return
        raise DeployError(
            f"could not remove {self.node_name} from the cluster, so nothing was"
            f" uninstalled: {why}",
            "bring a server back (mk8s status), then reset again; or pass --force to"
            " uninstall anyway (the node must then be deleted from the cluster by hand"
            " before it can rejoin under the same name)",
        )


class Uninstall(Phase):
    title = "uninstall RKE2 (agents in parallel, then servers one at a time)"

    def __init__(self, node_name: str | None) -> None:
        self.node_name = node_name

    def nodes(self, s: Session) -> Sequence[Node]:
        return reset_targets(s, self.node_name)

    def should_run(self, s: Session) -> bool:
        return True

    def steps(self, s: Session, node: Node) -> list[Step]:
        return [Step(node.name, "reset", (uninstall(s, node),))]

    def run_node(self, s: Session, node: Node) -> None:
        if node.name not in s.conns or not s.alive(node):
            return
        start = time.monotonic()
        try:
            s.run(node, "reset", uninstall(s, node))
        except Mk8sError as e:
            s.fail(node, e)
            return
        s.outcomes[node.name].state = NodeState.RESET
        s.record(node, state=NodeState.RESET)
        s.log(f"{node.name}: RKE2 uninstalled ({time.monotonic() - start:.1f}s)")

    def run(self, s: Session) -> None:
        targets = self.nodes(s)
        agents = [n for n in targets if not n.is_server]
        s.parallel(agents, lambda n: self.run_node(s, n))
        for node in targets:
            if node.is_server:
                self.run_node(s, node)


def reset_phases(node_name: str | None, *, force: bool = False) -> list[Phase]:
    return [ConnectForReset(node_name), RemoveFromCluster(node_name, force), Uninstall(node_name)]


__all__ = ["reset_phases"]
