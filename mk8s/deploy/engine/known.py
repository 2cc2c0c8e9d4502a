"""What one run knows: the bundle, each node's facts and outcome, the deploy context,
and the results phases leave for later phases, as typed fields.

Phases read and write :class:`Known` (``session.known``); the session
(:mod:`mk8s.deploy.engine.session`) is what acts. A phase that works something out once
(where the cluster stands, what an upgrade moves, the status of each node) keeps it
here, and later phases read it back by name and type. Data only: nothing here runs,
connects or reads a file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from mk8s.bundle.format.reader import VerifiedBundle
from mk8s.deploy.builders.context import Context
from mk8s.deploy.builders.facts import NodeFacts
from mk8s.deploy.builders.kubectl import Listed
from mk8s.deploy.builders.membership import Membership
from mk8s.deploy.builders.upgradeplan import UpgradePlan
from mk8s.deploy.cluster import Cluster, Node


class NodeState(StrEnum):
    """Where one node stands in a deploy, an upgrade or a day-2 run."""

    PENDING = "pending"
    READY = "ready"
    FAILED = "failed"
    SKIPPED = "skipped"
    PLANNED = "planned"
    RESET = "reset"


@dataclass
class NodeOutcome:
    """What happened to one node in this run."""

    node: Node
    state: NodeState = NodeState.PENDING
    version: str = ""
    seconds: float = 0.0
    error: str = ""


@dataclass
class NodeStatus:
    """One row of ``mk8s status``: what a node runs and whether it is Ready."""

    node: Node
    reachable: bool = False
    version: str = ""
    service: str = "-"
    ready: bool = False
    error: str = ""
    images: str = ""  # where the node gets its images (spec.images)
    placed: tuple[str, ...] = ()  # mk8s's charts and manifests on a server
    certs: str = "-"  # the earliest leaf certificate expiry (builders/certfiles.py)
    certs_problem: str = ""  # why the certificates need attention


@dataclass
class Known:
    """What one run knows about its cluster. A field is empty (None) until the phase
    that finds it out has run."""

    cluster: Cluster
    # The bundle, verified (the verify phase).
    verified: VerifiedBundle | None = None
    # What each node reported (the facts phase; a dry run assumes them).
    facts: dict[str, NodeFacts] = field(default_factory=dict)
    # What every step shares: token, bundle, anchor (the token phase).
    ctx: Context | None = None
    # Where each node stands in this run.
    outcomes: dict[str, NodeOutcome] = field(init=False)
    # Why the run stopped early ("" while it goes on).
    stop_reason: str = ""
    # The phase running now (what a Ctrl-C message says the run was doing).
    phase: str = "starting"
    # What a dry run prints: each phase's plan, in order.
    plan_lines: list[str] = field(default_factory=list)
    # Where the cluster stands (new, or which live server it is reached through).
    membership: Membership | None = None
    # What this run upgrades (computed once from the facts).
    upgrade: UpgradePlan | None = None
    # The admin kubeconfig this run wrote.
    kubeconfig: Path | None = None
    # Day-2 status: one row per node, by name.
    statuses: dict[str, NodeStatus] = field(default_factory=dict)
    # The cluster's node list as the facts found it (empty: no server answered).
    listed: dict[str, Listed] = field(default_factory=dict)
    # The nodes this run leaves alone: Ready at the bundle's release with nothing to
    # change (the converged phase); later phases neither check nor touch them.
    converged: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        self.outcomes = {n.name: NodeOutcome(n) for n in self.cluster.nodes}

    @property
    def context(self) -> Context:
        if self.ctx is None:
            raise RuntimeError("no deploy context yet (the token phase builds it)")
        return self.ctx

    def alive(self, node: Node) -> bool:
        """Whether ``node`` is still to be done in this run (not failed, skipped, done)."""
        return self.outcomes[node.name].state == NodeState.PENDING

    def stop(self, reason: str) -> None:
        """Stop the run: every node not yet done is skipped with ``reason``."""
        self.stop_reason = reason
        for o in self.outcomes.values():
            if o.state == NodeState.PENDING:
                o.state, o.error = NodeState.SKIPPED, reason


__all__ = ["Known", "NodeOutcome", "NodeState", "NodeStatus"]
