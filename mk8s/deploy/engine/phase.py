"""The one engine that runs deploy, upgrade and day-2 operations as ordered phases.

A :class:`Phase` has one small lifecycle: a ``title``; ``nodes`` it touches;
``should_run``; ``steps`` (the values it would execute on one node); ``begin`` and
``run`` (do it);
``plan`` (the lines ``--dry-run`` prints, by default made from the same ``steps``);
``cleanup`` (after the run, also when a later phase failed). :func:`run_phases` walks
the list once, for a real run and for a dry run alike: there is no second description
of what a deploy does.

Phases marked ``background`` (stage, install) run per node in the session's pool, so a
node's later phases start as soon as its own preparation is done; a phase that needs a
node prepared calls ``session.wait_prepared(node)``. Phases marked ``pipelined``
(connect, facts) run per node through one pool as well, each node going on to its next
phase as soon as its own previous one is done (no lock-step rounds of
``concurrency``); when every node is through, each phase's ``finish`` runs, in order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from mk8s.deploy.cluster import Node
from mk8s.deploy.engine.session import Session
from mk8s.deploy.steps import Step
from mk8s.errors import Mk8sError


class Phase:
    """One phase. Subclasses set ``title`` and override what they need."""

    title = ""
    # Run per node in the session's background pool; later phases wait per node.
    background = False
    # Run per node through one pool with the pipelined phases next to it, then
    # ``finish`` once every node is through.
    pipelined = False
    # Shown as "## N. title" in a dry run; an unnumbered phase's lines head the plan.
    numbered = True

    def nodes(self, s: Session) -> Sequence[Node]:
        """The nodes this phase touches, in the order it touches them."""
        return ()

    def should_run(self, s: Session) -> bool:
        return not s.known.stop_reason

    def steps(self, s: Session, node: Node) -> list[Step]:
        """What this phase does on ``node``, as values (pure, from the session's facts)."""
        return []

    def run_node(self, s: Session, node: Node) -> None:
        """Do this phase on one node: by default execute its steps in order."""
        for step in self.steps(s, node):
            if not step.empty:
                s.execute(node, step)

    def begin(self, s: Session) -> None:
        """Once, before the phase works on any node (a background phase too)."""

    def run(self, s: Session) -> None:
        """Do this phase: by default ``begin``, then ``run_node`` on each node in turn."""
        self.begin(s)
        for node in self.nodes(s):
            if s.known.alive(node):
                guarded(s, node, self.run_node)

    def plan(self, s: Session) -> list[str]:
        """What ``--dry-run`` prints for this phase: each node's steps."""
        lines: list[str] = []
        for node in self.nodes(s):
            lines.append(f"[{node.name} {node.address} {node.role}]")
            for step in self.steps(s, node):
                lines += [f"  {line}" for line in step.describe(node.ssh.user)]
        return lines

    def finish(self, s: Session) -> None:
        """A pipelined phase: once, after every node went through ``run_node``."""

    def cleanup(self, s: Session) -> None:
        """Undo or release what ``run`` left behind; called for every phase that ran."""


def guarded(s: Session, node: Node, fn: Callable[[Session, Node], None]) -> None:
    """``fn(s, node)``; an expected error fails that node only (the others go on)."""
    try:
        fn(s, node)
    except Mk8sError as e:
        s.fail(node, e)


def run_phases(phases: Sequence[Phase], s: Session) -> None:
    """Run ``phases`` in order (or, for a dry run, collect their plans in
    ``s.known.plan_lines``). Errors raised by a phase propagate after cleanup."""
    done: list[Phase] = []
    number = 0
    try:
        i = 0
        while i < len(phases):
            phase = phases[i]
            if not phase.should_run(s):
                i += 1
                continue
            if s.dry_run:
                if phase.numbered:
                    number += 1
                    s.known.plan_lines += ["", f"## {number}. {phase.title}"]
                s.known.plan_lines += phase.plan(s)
                done.append(phase)
                i += 1
                continue
            s.known.phase = phase.title
            group = _group(phases, i)
            if phase.background:
                _start_in_background(group, s)
            elif phase.pipelined:
                _pipeline(group, s)
            else:
                phase.run(s)
            done += group
            i += len(group)
    except KeyboardInterrupt:
        s.abort()  # running uploads and commands end now, so cleanup does not wait
        raise
    finally:
        for phase in reversed(done):
            phase.cleanup(s)


def _group(phases: Sequence[Phase], i: int) -> list[Phase]:
    """``phases[i]`` and the phases after it that run the same way (background, or
    pipelined) with it."""
    first = phases[i]
    group = [first]
    if not (first.background or first.pipelined):
        return group
    for nxt in phases[i + 1 :]:
        if (nxt.background, nxt.pipelined) != (first.background, first.pipelined):
            break
        group.append(nxt)
    return group


def _pipeline(group: list[Phase], s: Session) -> None:
    """Each node through the group's phases in order, ``concurrency`` nodes at a time
    (a worker takes the next node as soon as it is free); then each phase's ``finish``."""
    order, members = _members(group, s)

    def chain(node: Node) -> None:
        for phase, names in zip(group, members, strict=True):
            if node.name in names:
                phase.run_node(s, node)

    s.parallel(order, chain)
    for phase in group:
        phase.finish(s)


def _members(group: list[Phase], s: Session) -> tuple[list[Node], list[set[str]]]:
    """After each phase's ``begin``: every node of the group in order, and the names
    each phase touches (asked once, not once per node)."""
    order: list[Node] = []
    members: list[set[str]] = []
    seen: set[str] = set()
    for phase in group:
        phase.begin(s)
        nodes = phase.nodes(s)
        members.append({n.name for n in nodes})
        order += [n for n in nodes if n.name not in seen]
        seen |= members[-1]
    return order, members


def _start_in_background(group: list[Phase], s: Session) -> None:
    """Each node runs the group's phases in order, in the session's pool."""
    order, members = _members(group, s)

    def chain(node: Node) -> None:
        for phase, names in zip(group, members, strict=True):
            if not s.known.alive(node):
                return
            if node.name in names:
                guarded(s, node, phase.run_node)

    pool = s.background()
    for node in order:
        s.prepared[node.name] = pool.submit(chain, node)


__all__ = ["Phase", "guarded", "run_phases"]
