"""Safe removal of a server (``mk8s reset --node``): etcd quorum first, then proof that
its member is gone.

Before anything changes, :class:`GuardQuorum` asks the cluster which nodes are etcd
members and which are up (listed Ready, and, for the servers of cluster.yaml, their
rke2-server active), and refuses (exit 2) a removal after which the servers left up
would not hold etcd quorum (:func:`mk8s.deploy.quorum.removal_problem`).

Deleting a server's Node is what removes its etcd member in RKE2: k3s's member
controller (k3s-io/k3s pkg/etcd/member_controller.go ``onRemove`` -> ``RemovePeer``) is a
wrangler OnRemove handler, whose finalizer keeps the Node until the member is removed
(rancher/wrangler pkg/generic/remove.go), and ``kubectl delete`` waits for the Node to
go. :class:`ConfirmRemoved` checks that it went, so the member was removed.
"""

from __future__ import annotations

from collections.abc import Sequence

from mk8s.deploy.builders import quorum, units
from mk8s.deploy.cluster import Node
from mk8s.deploy.command import Command
from mk8s.deploy.engine.phase import Phase
from mk8s.deploy.engine.session import Session
from mk8s.deploy.phases.status import ask_any_server
from mk8s.errors import DeployError, Mk8sError, RemovalRefused


def _target(s: Session, name: str | None) -> Node | None:
    """The server being removed, or None (a whole reset, or an agent)."""
    if name is None:
        return None
    node = s.cluster.node(name)
    return node if node.is_server else None


def servers_up(s: Session) -> dict[str, bool]:
    """Each reachable server of cluster.yaml -> its rke2-server is active."""
    found: dict[str, bool] = {}

    def one(node: Node) -> None:
        try:
            r = s.remote.run(node, "reset", units.active_command("rke2-server"))
        except Mk8sError:
            found[node.name] = False
            return
        found[node.name] = r.stdout.strip() == "active"

    s.parallel([n for n in s.cluster.servers if s.remote.connected(n)], one)
    return found


class GuardQuorum(Phase):
    title = "check that etcd keeps quorum without the server"

    def __init__(self, node_name: str | None) -> None:
        self.node_name = node_name

    def should_run(self, s: Session) -> bool:
        return _target(s, self.node_name) is not None

    def run(self, s: Session) -> None:
        target = _target(s, self.node_name)
        assert target is not None
        listing = ask_any_server(s)
        if listing is None:
            return  # no server answers: the removal below fails and says so
        members = quorum.etcd_members(listing)
        active = servers_up(s)
        known = {n.name for n in s.cluster.servers}
        up = {
            name: ready and (active.get(name, False) if name in known else True)
            for name, ready in members.items()
        }
        why = quorum.removal_problem(target.name, up)
        if why:
            down = sorted(n for n, ok in up.items() if not ok and n != target.name)
            first = f"mk8s reset --node {down[0]} --yes" if down else ""
            raise RemovalRefused(
                f"refusing to remove {target.name}; nothing was changed: {why}",
                "bring the servers that are down back first (mk8s status; mk8s deploy starts"
                " them)" + (f", or remove a server that is down first ({first})" if first else ""),
            )
        left = {n: ok for n, ok in up.items() if n != target.name}
        s.log(
            f"{target.name}: etcd keeps quorum without it"
            f" ({sum(left.values())} of {len(left)} members up)"
        )


def still_listed_command(name: str, on: Node, s: Session) -> Command:
    paths = s.cluster.paths(on)
    return Command.argv(
        paths.kubectl,
        "--kubeconfig",
        paths.kubeconfig,
        "get",
        "node",
        name,
        "-o",
        "name",
        "--ignore-not-found",
        sudo=True,
        timeout=60,
        description=f"is node {name} still there (its etcd member not yet removed)?",
    )


class ConfirmRemoved(Phase):
    title = "check that the server's Node, and so its etcd member, is gone"

    def __init__(self, node_name: str | None, force: bool) -> None:
        self.node_name, self.force = node_name, force

    def should_run(self, s: Session) -> bool:
        return _target(s, self.node_name) is not None and len(s.cluster.servers) > 1

    def nodes(self, s: Session) -> Sequence[Node]:
        return [n for n in s.cluster.servers if n.name != self.node_name and s.remote.connected(n)]

    def run(self, s: Session) -> None:
        assert self.node_name is not None
        seen = ""
        for on in self.nodes(s):
            try:
                r = s.remote.run(on, "reset", still_listed_command(self.node_name, on, s))
            except Mk8sError as e:
                seen = str(e)
                continue
            if r.exit_code != 0:
                seen = f"{on.name}: exited {r.exit_code}: {r.stderr.strip()[-200:]}"
                continue
            if not r.stdout.strip():
                s.log(f"{self.node_name}: its etcd member is removed (its Node is gone)")
                return
            seen = "its Node is still terminating: its etcd member was not removed yet"
            break
        if self.force:
            s.log(f"{self.node_name}: removal not confirmed ({seen}); going on (--force)")
            return
        raise DeployError(
            f"could not confirm that {self.node_name} left the cluster, so nothing was"
            f" uninstalled: {seen or 'no other server answers'}",
            "bring the servers that are down back (mk8s status), wait a minute, then reset again",
        )


__all__ = ["ConfirmRemoved", "GuardQuorum", "servers_up"]
