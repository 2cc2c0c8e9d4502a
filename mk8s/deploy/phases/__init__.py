"""The phases of mk8s's operations, one concern per module, and their ordered lists.

A deploy is :func:`deploy_phases`: verify, connect, gather facts, preflight, token,
(when the bundle is newer than the cluster: upgrade preflight and an etcd snapshot),
stage and install (in the background, per node), (the rolling upgrade: servers one at
a time, agents in batches), the first server, the other servers one at a time, the
charts the bundle dropped uninstalled, the agents in parallel, the kubeconfig. Day-2
operations are lists of phases of their own (:mod:`.status`, :mod:`.reset`), run by the
same engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mk8s.bundle import keys
from mk8s.deploy.engine import Phase
from mk8s.deploy.phases.agents import JoinAgents
from mk8s.deploy.phases.charts import UninstallDroppedCharts
from mk8s.deploy.phases.connect import Connect, GatherFacts
from mk8s.deploy.phases.images import PeerPorts, PushImages, RegistryPreflight
from mk8s.deploy.phases.kubeconfig import WriteKubeconfig
from mk8s.deploy.phases.preflight import Preflight, Token
from mk8s.deploy.phases.servers import BootstrapServer, JoinServers
from mk8s.deploy.phases.stage import Install, Stage
from mk8s.deploy.phases.upgrade import (
    Snapshot,
    UncordonLeftovers,
    UpgradeAgents,
    UpgradePreflight,
    UpgradeServers,
)
from mk8s.deploy.phases.verify import VerifyBundle


def deploy_phases(
    bundle: Path,
    trusted: Sequence[keys.TrustedKey],
    *,
    allow_unsigned: bool = False,
    kubeconfig_out: Path | None = None,
    base: Path | None = None,
) -> list[Phase]:
    """The deploy, in order (``base``: the full bundle a delta ``bundle`` needs)."""
    stage = Stage(bundle, trusted, allow_unsigned, base)
    return [
        VerifyBundle(bundle, trusted, allow_unsigned, base),
        Connect(),
        GatherFacts(),
        Preflight(),
        Token(),
        RegistryPreflight(),
        UpgradePreflight(),
        Snapshot(),
        stage,
        Install(),
        PushImages(stage),
        UpgradeServers(),
        UpgradeAgents(),
        BootstrapServer(),
        JoinServers(),
        UninstallDroppedCharts(),
        PeerPorts(),
        JoinAgents(),
        UncordonLeftovers(),
        WriteKubeconfig(kubeconfig_out),
    ]


__all__ = ["deploy_phases"]
