"""Charts the bundle no longer carries are uninstalled on purpose, once the servers are
Ready (helm-controller deletes nothing when a file leaves server/manifests: see
:mod:`mk8s.deploy.builders.addons`). The charts mk8s placed are recorded in the journal, so
a dry run shows the same uninstalls without contacting a node.
"""

from __future__ import annotations

from collections.abc import Sequence

from mk8s.deploy.builders import addons
from mk8s.deploy.cluster import Node
from mk8s.deploy.engine.known import NodeState
from mk8s.deploy.engine.phase import Phase, guarded
from mk8s.deploy.engine.session import Session
from mk8s.deploy.steps import Step

JOURNAL_KEY = "placed"  # the files mk8s placed in server/manifests, last run


class UninstallDroppedCharts(Phase):
    title = "uninstall the charts the bundle no longer carries (kubectl delete helmchart)"

    def nodes(self, s: Session) -> Sequence[Node]:
        return [n for n in s.cluster.servers if n.name in s.known.facts]

    def should_run(self, s: Session) -> bool:
        return not s.known.stop_reason and bool(s.cluster.servers)

    def steps(self, s: Session, node: Node) -> list[Step]:
        cmds = addons.uninstall_dropped(s.known.context, node, s.known.facts[node.name])
        return [Step(node.name, "uninstall-charts", tuple(cmds))] if cmds else []

    def run_node(self, s: Session, node: Node) -> None:
        for name in addons.dropped_charts(s.known.context, s.known.facts[node.name]):
            s.log(f"{node.name}: uninstalling chart {name} (the bundle no longer carries it)")
        super().run_node(s, node)

    def run(self, s: Session) -> None:
        # The servers are Ready by now (no longer pending): run on those that are.
        ready = [n for n in self.nodes(s) if s.known.outcomes[n.name].state == NodeState.READY]
        for node in ready:
            guarded(s, node, self.run_node)
        if all(s.known.outcomes[n.name].state == NodeState.READY for n in s.cluster.servers):
            s.journal.put(JOURNAL_KEY, placed(s))

    def plan(self, s: Session) -> list[str]:
        lines = []
        for node in self.nodes(s):
            for name in addons.dropped_charts(s.known.context, s.known.facts[node.name]):
                lines.append(
                    f"# {node.name}: uninstall chart {name}: the bundle no longer carries it"
                )
        lines += super().plan(s)
        return lines or ["  (none: every chart mk8s placed is still in the bundle)"]


def placed(s: Session) -> dict[str, list[str]]:
    """Per server, the files the bundle's charts and manifests are placed as."""
    arts = addons.workload_artifacts(s.known.context)
    out = {}
    for node in s.cluster.servers:
        where = s.cluster.paths(node).manifests_dir
        out[node.name] = sorted(addons.placed_path(a, where) for a in arts)
    return out


def journal_placed(s: Session, node: Node) -> frozenset[str]:
    """What the last run recorded as placed on ``node`` (a dry run's assumed facts)."""
    found = s.journal.read().get(JOURNAL_KEY)
    mine = found.get(node.name) if isinstance(found, dict) else None
    return frozenset(str(p) for p in mine) if isinstance(mine, list) else frozenset()
