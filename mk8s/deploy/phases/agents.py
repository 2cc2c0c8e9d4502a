"""Join the agents: started in parallel (bounded, ``--no-block``: an agent whose join is
refused retries for ever), then waited for together; one not Ready in time is failed
with the cause its journal names."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from mk8s.deploy import diagnose, plan
from mk8s.deploy.cluster import Node
from mk8s.deploy.engine import Phase, guarded
from mk8s.deploy.phases.servers import start_steps
from mk8s.deploy.readiness import wait_all_ready
from mk8s.deploy.session import Session
from mk8s.deploy.steps import Step
from mk8s.errors import Mk8sError


class JoinAgents(Phase):
    title = "join the agents in parallel"

    def nodes(self, s: Session) -> Sequence[Node]:
        return s.cluster.agents

    def should_run(self, s: Session) -> bool:
        return not s.stop_reason and bool(self.nodes(s))

    def steps(self, s: Session, node: Node) -> list[Step]:
        return start_steps(s, node)

    def run(self, s: Session) -> None:
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

        s.parallel(self.nodes(s), lambda n: guarded(s, n, launch))
        # Waiting holds no worker: one node list per poll interval answers for all.
        for name, result in wait_all_ready(s, launched, s.settings.ready_timeout).items():
            node = s.cluster.node(name)
            if isinstance(result, Mk8sError):
                s.fail(node, diagnose.explain(s, node, result))
            else:
                s.mark_ready(node, result)
