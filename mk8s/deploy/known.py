"""What one run knows: the results phases leave for later phases, as typed fields.

A phase that works something out once (where the cluster stands, what an upgrade
moves, the status of each node) keeps it here, and later phases read it back by name
and type. Data only: nothing here runs or reads anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mk8s.deploy.cluster import Node
from mk8s.deploy.membership import Membership
from mk8s.deploy.upgrade import UpgradePlan


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


@dataclass
class Known:
    """What phases worked out for later phases (each field None until one does)."""

    # The phase running now (what a Ctrl-C message says the run was doing).
    phase: str = "starting"
    # Where the cluster stands (new, or which live server it is reached through).
    membership: Membership | None = None
    # What this run upgrades (computed once from the facts).
    upgrade: UpgradePlan | None = None
    # The admin kubeconfig this run wrote.
    kubeconfig: Path | None = None
    # Day-2 status: one row per node, by name.
    statuses: dict[str, NodeStatus] = field(default_factory=dict)


__all__ = ["Known", "NodeStatus"]
