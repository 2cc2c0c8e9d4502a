"""Join the agents: started in parallel (bounded), then waited for together.

Running agents that must restart to take a start-only change (:mod:`..restart`) go
after the others, in batches of ``options.upgrade.maxUnavailable`` (the number of
agents the operator lets be down at once, as in an upgrade): each batch restarts in
parallel and must be Ready before the next starts; a batch with a failed node stops
the rest.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from mk8s.deploy import plan, restart, upgrade
from mk8s.deploy.cluster import Node
from mk8s.deploy.engine import Phase, guarded
from mk8s.deploy.phases.servers import start_steps
from mk8s.deploy.readiness import wait_all_ready
from mk8s.deploy.session import Session
from mk8s.deploy.steps import NodeState, Step
from mk8s.errors import Mk8sError


def restarting(s: Session, node: Node) -> bool:
    """Whether this run restarts ``node``'s running service."""
    return (
        s.alive(node)
        and restart.active(node, s.facts[node.name])
        and bool(plan.start_step(s.context, node, s.facts[node.name]).commands)
    )


class JoinAgents(Phase):
    title = "join the agents in parallel (running ones that restart: in batches)"

    def nodes(self, s: Session) -> Sequence[Node]:
        return s.cluster.agents

    def should_run(self, s: Session) -> bool:
        return not s.stop_reason and bool(self.nodes(s))

    def steps(self, s: Session, node: Node) -> list[Step]:
        return start_steps(s, node)

    def run(self, s: Session) -> None:
        again = [n for n in self.nodes(s) if restarting(s, n)]
        start_all(s, [n for n in self.nodes(s) if n not in again])
        size = s.cluster.options.upgrade.batch_size(len(s.cluster.agents))
        for batch in upgrade.batches(again, size):
            s.log(f"restarting {', '.join(n.name for n in batch)} (at most {size} at once)")
            start_all(s, batch)
            failed = [n.name for n in batch if s.outcomes[n.name].state == NodeState.FAILED]
            if failed:
                s.stop(f"restarting {', '.join(failed)} failed; the other agents were left alone")
                return

    def plan(self, s: Session) -> list[str]:
        again = [n for n in self.nodes(s) if restarting(s, n)]
        size = s.cluster.options.upgrade.batch_size(len(s.cluster.agents))
        head = (
            [f"  restart running agents in batches of {size}, each Ready before the next:"]
            + ["    [" + ", ".join(n.name for n in b) + "]" for b in upgrade.batches(again, size)]
            if again
            else []
        )
        return head + super().plan(s)


def start_all(s: Session, nodes: Sequence[Node]) -> None:
    """Start (or restart) ``nodes`` in parallel, then wait until all are Ready."""
    launched: list[Node] = []
    lock = threading.Lock()

    def launch(s: Session, node: Node) -> None:
        s.wait_prepared(node)
        if not s.alive(node):
            return
        start = start_steps(s, node)[0]
        if start.commands:
            s.log(f"{node.name}: starting {plan.service(node)}")
        s.execute(node, start)
        with lock:
            launched.append(node)

    s.parallel(nodes, lambda n: guarded(s, n, launch))
    # Waiting holds no worker: one node list per poll interval answers for all.
    for name, result in wait_all_ready(s, launched, s.settings.ready_timeout).items():
        node = s.cluster.node(name)
        if isinstance(result, Mk8sError):
            s.fail(node, result)
        else:
            s.mark_ready(node, result)
