"""Join the agents: started in parallel (bounded, ``--no-block``: an agent whose join is
refused retries for ever), then waited for together; one not Ready in time is failed
with the cause its journal names.

Running agents that must restart to take a start-only change
(:mod:`mk8s.deploy.builders.restart`) go after the others, in batches of
``options.upgrade.maxUnavailable`` (the number of agents the operator lets be down at
once, as in an upgrade): each batch restarts in parallel and must be Ready before the
next starts; a batch with a failed node stops the rest.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from mk8s.deploy.builders import plan, restart, upgradeplan
from mk8s.deploy.cluster import Node
from mk8s.deploy.engine import diagnose
from mk8s.deploy.engine.known import NodeState
from mk8s.deploy.engine.phase import Phase, guarded
from mk8s.deploy.engine.readiness import wait_all_ready
from mk8s.deploy.engine.session import Session
from mk8s.deploy.phases.converged import not_converged
from mk8s.deploy.phases.servers import start_steps
from mk8s.deploy.steps import Step, WaitReady
from mk8s.errors import DeployError, Mk8sError


def restarting(s: Session, node: Node) -> bool:
    """Whether this run restarts ``node``'s running service."""
    return (
        s.known.alive(node)
        and restart.active(node, s.known.facts[node.name])
        and bool(plan.start_step(s.known.context, node, s.known.facts[node.name]).commands)
    )


class JoinAgents(Phase):
    title = "join the agents in parallel (running ones that restart: in batches)"

    def nodes(self, s: Session) -> Sequence[Node]:
        return not_converged(s, s.cluster.agents)

    def should_run(self, s: Session) -> bool:
        return not s.known.stop_reason and bool(self.nodes(s))

    def steps(self, s: Session, node: Node) -> list[Step]:
        return start_steps(s, node)

    def run(self, s: Session) -> None:
        again = [n for n in self.nodes(s) if restarting(s, n)]
        start_all(s, [n for n in self.nodes(s) if n not in again])
        size = s.cluster.options.upgrade.batch_size(len(s.cluster.agents))
        for batch in upgradeplan.batches(again, size):
            s.log(f"restarting {', '.join(n.name for n in batch)} (at most {size} at once)")
            start_all(s, batch)
            failed = [n.name for n in batch if s.known.outcomes[n.name].state == NodeState.FAILED]
            if failed:
                s.known.stop(
                    f"restarting {', '.join(failed)} failed; the other agents were left alone"
                )
                return

    def plan(self, s: Session) -> list[str]:
        again = [n for n in self.nodes(s) if restarting(s, n)]
        size = s.cluster.options.upgrade.batch_size(len(s.cluster.agents))
        head = (
            [f"  restart running agents in batches of {size}, each Ready before the next:"]
            + [
                "    [" + ", ".join(n.name for n in b) + "]"
                for b in upgradeplan.batches(again, size)
            ]
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
        if not s.known.alive(node):
            return
        start = start_steps(s, node)[0]
        if start.commands:
            s.log(f"{node.name}: starting {plan.service(node)}")
        s.execute(node, start)
        with lock:
            launched.append(node)

    s.parallel(nodes, lambda n: guarded(s, n, launch))
    # Waiting holds no worker: one node list per poll interval answers for all.
    deadline = time.monotonic() + s.settings.ready_timeout
    results = wait_all_ready(s.poller(), launched, s.settings.ready_timeout)
    listed = [s.cluster.node(n) for n, r in results.items() if not isinstance(r, Mk8sError)]
    results.update(confirm_active(s, listed, deadline))
    for name, result in results.items():
        node = s.cluster.node(name)
        if isinstance(result, Mk8sError):
            s.fail(node, diagnose.explain(s.remote, node, result))
        else:
            s.mark_ready(node, result)


def confirm_active(s: Session, nodes: Sequence[Node], deadline: float) -> dict[str, Mk8sError]:
    """Of ``nodes`` (listed Ready), those whose own rke2-agent has not reported ready
    by ``deadline``: the Ready node may be the Node object an earlier install left
    (it stays Ready for a grace period after its kubelet is gone) while this agent's
    join is refused and retried."""
    pending = {n.name: n for n in nodes}
    state: dict[str, str] = {}

    def ask(node: Node) -> None:  # on every agent still to confirm, in parallel
        wait = plan.wait_step(node, s.settings.ready_timeout, paths=s.cluster.paths(node))
        probe = wait.actions[0]
        assert isinstance(probe, WaitReady) and probe.active is not None
        state[node.name] = s.remote.run(node, "wait-ready", probe.active).stdout.strip()

    while True:
        s.parallel(list(pending.values()), ask)
        for name in [n for n in pending if state.get(n) == "active"]:
            del pending[name]
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(s.settings.poll_interval)
    return {
        name: DeployError(
            f"{name} was not Ready within {s.settings.ready_timeout:.0f}s (the cluster lists"
            f" a node {name}, but its rke2-agent is {state[name] or 'unknown'}: it has not"
            " joined)",
            f"look at `journalctl -u rke2-agent` on {name}, then deploy again",
        )
        for name in pending
    }
