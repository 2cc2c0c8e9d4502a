"""The nodes already converged: Ready at the bundle's release with nothing to change.

Decided from the facts each node gave in its one round trip (and the node list the
first server gave in its own; :mod:`mk8s.deploy.builders.converged`), before anything
changes. They are marked Ready at once and every later phase leaves them alone: a
converged node gets no port probe, no readiness poll and no other command, so a run
that adds one node to a big cluster costs about what it costs on a small one
(docs/scale.md). Every other node goes through every check as before.
"""

from __future__ import annotations

from collections.abc import Sequence

from mk8s.deploy.builders.converged import converged
from mk8s.deploy.cluster import Node
from mk8s.deploy.engine.phase import Phase
from mk8s.deploy.engine.session import Session


def converged_nodes(s: Session) -> list[Node]:
    """The nodes this run leaves alone (computed once; kept in ``known.converged``)."""
    ctx = s.known.context
    found = [
        n
        for n in s.cluster.nodes
        if s.known.alive(n) and converged(ctx, n, s.known.facts[n.name], s.known.listed.get(n.name))
    ]
    s.known.converged = frozenset(n.name for n in found)
    return found


def not_converged(s: Session, nodes: Sequence[Node]) -> list[Node]:
    """``nodes`` without the converged ones."""
    return [n for n in nodes if n.name not in s.known.converged]


class SettleConverged(Phase):
    title = "nodes already converged (Ready at this release, nothing to change): left alone"

    def run(self, s: Session) -> None:
        found = converged_nodes(s)
        if not found:
            return
        tag = s.known.context.manifest.release.tag
        s.log(
            f"{len(found)} of {len(s.cluster.nodes)} nodes converged (Ready at {tag},"
            " nothing to change): left alone"
        )
        s.mark_converged({n.name: s.known.listed[n.name].version for n in found})

    def plan(self, s: Session) -> list[str]:
        found = converged_nodes(s)
        if not found:
            return ["  (none)"]
        return [
            "  Ready at this release (as the journal says) with nothing to change; a real"
            " run judges each by its facts and the node list, and sends it nothing more:",
            "  " + ", ".join(n.name for n in found),
        ]


__all__ = ["SettleConverged", "converged_nodes", "not_converged"]
