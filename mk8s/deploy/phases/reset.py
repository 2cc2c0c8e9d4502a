"""Day-2 reset: take one node out of the cluster and uninstall RKE2 from it, or
uninstall the whole cluster (agents first, then the servers, the first one last).

RKE2's uninstall script leaves the node registered in its cluster (rancher/rke2
``bundle/bin/rke2-uninstall.sh``), and a node reinstalled under the same name is then
refused ("Node password rejected") until it is deleted. So a node is uninstalled only
after the cluster let it go: with ``--node``, if no other server could delete it from
the cluster, reset stops with the reason, unless ``--force``; in a whole-cluster reset
each node is deleted from the cluster (on the first server still up) before its
uninstall, so a reset that stops halfway leaves no stale node behind. A node already
gone from the cluster is fine.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from mk8s.deploy.builders import kubectl, plan
from mk8s.deploy.cluster import Node
from mk8s.deploy.command import Command
from mk8s.deploy.engine.known import NodeState
from mk8s.deploy.engine.phase import Phase
from mk8s.deploy.engine.session import Session
from mk8s.deploy.phases.removal import ConfirmRemoved, GuardQuorum
from mk8s.deploy.steps import Step
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


def remove_from_cluster(s: Session, name: str, servers: Sequence[Node]) -> str:
    """``kubectl delete node NAME`` on the first of ``servers`` that can: "" when done,
    else why none could. RKE2's uninstall script leaves the node registered, and a
    node reinstalled under its name is then refused ("Node password rejected")."""
    reasons: list[str] = []
    for server in servers:
        if not s.remote.connected(server):
            reasons.append(f"{server.name}: not reachable")
            continue
        try:
            r = s.remote.run(
                server, "reset", kubectl.delete_node_command(name, s.cluster.paths(server))
            )
        except Mk8sError as e:
            reasons.append(str(e))
            continue
        if r.exit_code == 0:
            s.log(f"{name}: removed from the cluster (on {server.name})")
            return ""
        last = (r.stderr.strip() or r.stdout.strip()).splitlines()
        reasons.append(f"{server.name}: exited {r.exit_code}: {last[-1] if last else ''}")
    return "; ".join(reasons) or "no other server"


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
        why = remove_from_cluster(s, self.node_name, self.nodes(s))
        if not why:
            return
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

    def removers(self, s: Session, node: Node) -> list[Node]:
        """Whole-cluster reset: the servers, first server first, still up to delete
        ``node`` from the cluster before its uninstall (none for the last one left)."""
        if self.node_name is not None:
            return []  # RemoveFromCluster did it
        first = s.cluster.bootstrap
        servers = [first, *(n for n in s.cluster.servers if n.name != first.name)]
        return [n for n in servers if n.name != node.name and (s.dry_run or s.known.alive(n))]

    def steps(self, s: Session, node: Node) -> list[Step]:
        removal = Step(node.name, "reset", (uninstall(s, node),))
        removers = self.removers(s, node)
        if not removers:
            return [removal]
        on = removers[0]
        delete = kubectl.delete_node_command(node.name, s.cluster.paths(on))
        return [Step(on.name, "reset", (delete,)), removal]

    def plan(self, s: Session) -> list[str]:
        lines: list[str] = []
        for node in self.nodes(s):
            lines.append(f"[{node.name} {node.address} {node.role}]")
            for step in self.steps(s, node):
                user = s.cluster.node(step.node).ssh.user
                on = "" if step.node == node.name else f"on {step.node}: "
                lines += [f"  {on}{line}" for line in step.describe(user)]
        return lines

    def run_node(self, s: Session, node: Node) -> None:
        if not s.remote.connected(node) or not s.known.alive(node):
            return
        removers = self.removers(s, node)
        if removers:
            # The whole cluster goes: a node no server could delete is uninstalled anyway.
            why = remove_from_cluster(s, node.name, removers)
            if why:
                s.log(f"{node.name}: NOT removed from the cluster ({why}); uninstalling it")
        start = time.monotonic()
        try:
            s.remote.run(node, "reset", uninstall(s, node))
        except Mk8sError as e:
            s.fail(node, e)
            return
        s.known.outcomes[node.name].state = NodeState.RESET
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
    return [
        ConnectForReset(node_name),
        GuardQuorum(node_name),
        RemoveFromCluster(node_name, force),
        ConfirmRemoved(node_name, force),
        Uninstall(node_name),
    ]


__all__ = ["reset_phases"]
