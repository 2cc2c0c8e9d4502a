"""Start the first server, then join the other servers one at a time.

[RKE2: the first server starts without ``server:``; parallel etcd joins fail with "too
many learner members", so each server waits until the one before is Ready.]
A server this run leaves alone (active, same version, same config) joins nothing: it
is only checked for Ready, and all such servers are checked at once.
"""

from __future__ import annotations

from collections.abc import Sequence

from mk8s.deploy.builders import plan
from mk8s.deploy.cluster import Node
from mk8s.deploy.engine import diagnose
from mk8s.deploy.engine.known import NodeState
from mk8s.deploy.engine.phase import Phase, guarded
from mk8s.deploy.engine.session import Session
from mk8s.deploy.phases.converged import not_converged
from mk8s.deploy.steps import Step
from mk8s.errors import Mk8sError


def start_steps(s: Session, node: Node) -> list[Step]:
    """Write config.yaml and start the service (if needed), then wait until Ready."""
    start = plan.start_step(
        s.known.context, node, s.known.facts[node.name], timeout=s.settings.ready_timeout
    )
    return [start, plan.wait_step(node, s.settings.ready_timeout, paths=s.cluster.paths(node))]


def unchanged(s: Session, node: Node) -> bool:
    """Whether this run neither installs, configures nor restarts ``node``."""
    return (
        s.known.alive(node)
        and not plan.start_step(s.known.context, node, s.known.facts[node.name]).commands
    )


def check_unchanged(s: Session, nodes: Sequence[Node]) -> None:
    """Wait for Ready on every unchanged server in ``nodes``, all at once."""
    quiet = [n for n in nodes if unchanged(s, n)]
    if quiet:
        s.log(f"{', '.join(n.name for n in quiet)}: unchanged; checking they are Ready at once")
    s.parallel(quiet, lambda n: guarded(s, n, start_and_wait))


def start_and_wait(s: Session, node: Node) -> None:
    s.wait_prepared(node)
    if not s.known.alive(node):
        return
    start, wait = start_steps(s, node)
    if start.commands:
        s.log(f"{node.name}: starting {plan.service(node)}")
    try:
        s.execute(node, start)
        s.execute(node, wait)
    except Mk8sError as e:  # failed, stopped after its timeout, or not Ready in time
        raise diagnose.explain(s.remote, node, e) from e


class BootstrapServer(Phase):
    title = "start the first server (it bootstraps the cluster)"

    def nodes(self, s: Session) -> Sequence[Node]:
        return not_converged(s, [s.cluster.bootstrap])

    def steps(self, s: Session, node: Node) -> list[Step]:
        return start_steps(s, node)

    def run(self, s: Session) -> None:
        first = s.cluster.bootstrap
        if unchanged(s, first):
            check_unchanged(s, s.cluster.servers)  # the first server and its peers
        else:
            guarded(s, first, start_and_wait)
        if s.known.outcomes[first.name].state != NodeState.READY:
            s.known.stop("the first server is not ready")


class JoinServers(Phase):
    title = "join the other servers one at a time"

    def nodes(self, s: Session) -> Sequence[Node]:
        return not_converged(s, plan.order(s.cluster)[1])

    def should_run(self, s: Session) -> bool:
        return not s.known.stop_reason and bool(self.nodes(s))

    def steps(self, s: Session, node: Node) -> list[Step]:
        return start_steps(s, node)

    def run(self, s: Session) -> None:
        check_unchanged(s, self.nodes(s))
        for node in self.nodes(s):
            guarded(s, node, start_and_wait)  # a node already Ready is skipped
            if s.known.outcomes[node.name].state != NodeState.READY:
                s.known.stop(f"server {node.name} failed; servers join one at a time")
                return
