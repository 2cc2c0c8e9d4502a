"""``mk8s deploy``: the deploy phases run by the engine, and the report they leave.

The order (README, "Deploying"; :func:`deploy_phases`): verify the bundle before any
node is touched; connect and gather facts on every node in parallel; preflight (fail
fast, change nothing); the token; stage and install in the background, servers first;
the first server; the other servers one at a time; the agents in parallel; the
kubeconfig. A dry run walks the same phases and prints what each would do.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mk8s import ui
from mk8s.bundle.format import keys
from mk8s.bundle.workload_sources import summary
from mk8s.callbacks import Log, TransferProgress
from mk8s.deploy.engine.known import NodeState
from mk8s.deploy.engine.phase import Phase
from mk8s.deploy.engine.remote import Connect, connect_ssh
from mk8s.deploy.engine.runs import NodesReport, RunSettings, plan_only, run_locked
from mk8s.deploy.engine.session import Session
from mk8s.deploy.phases.agents import JoinAgents
from mk8s.deploy.phases.connect import ConnectAll, GatherFacts
from mk8s.deploy.phases.converged import SettleConverged
from mk8s.deploy.phases.dropcharts import UninstallDroppedCharts
from mk8s.deploy.phases.images import PeerPorts, PushImages, RegistryPreflight
from mk8s.deploy.phases.inputs import record_inputs
from mk8s.deploy.phases.kubeconfig import WriteKubeconfig
from mk8s.deploy.phases.preflight import Preflight, RestoreUnfinished, Token
from mk8s.deploy.phases.servers import BootstrapServer, JoinServers
from mk8s.deploy.phases.stage import Install, Stage
from mk8s.deploy.phases.unlisted import NameUnlisted
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
        RestoreUnfinished(),
        VerifyBundle(bundle, trusted, allow_unsigned, base),
        ConnectAll(),
        GatherFacts(),
        Preflight(),
        Token(),
        SettleConverged(),
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
        NameUnlisted(),
        WriteKubeconfig(kubeconfig_out),
    ]


@dataclass(frozen=True, kw_only=True)
class DeploySettings(RunSettings):
    """Everything one ``mk8s deploy`` needs."""

    base: Path | None = None  # the full bundle a delta ``bundle`` was made against


@dataclass
class DeployReport(NodesReport):
    """What a deploy did: per node, and in all."""

    kubeconfig: Path | None = None
    bundle_id: str = ""
    seconds: float = 0.0
    plan_text: str = ""
    uploaded_bytes: int = field(default=0)


def deploy(
    settings: DeploySettings,
    log: Log = ui.note,
    progress: TransferProgress | None = None,
    *,
    connect: Connect = connect_ssh,
) -> DeployReport:
    """Deploy (or converge) the cluster; with ``dry_run``, only plan it.

    Raises BundleRejected, InputError, PreflightError and StateLockedError before any
    node is changed. Returns a report; ``report.ok`` is False when a node failed after
    changes began (the caller exits 1).
    """
    s = Session(settings.session_settings(), log=log, progress=progress, connect=connect)
    phases = deploy_phases(
        settings.bundle,
        settings.trusted,
        allow_unsigned=settings.allow_unsigned,
        kubeconfig_out=settings.kubeconfig_out,
        base=settings.base,
    )
    if settings.dry_run:
        plan_only(s, phases)
        return DeployReport(
            s.known.outcomes,
            bundle_id=s.known.verified.bundle_id if s.known.verified else "",
            plan_text="\n".join(s.known.plan_lines),
        )
    run_locked(
        s,
        phases,
        what="deploy",
        goes_on="it resumes where this one stopped",
        before=_note_resume,
        after=(_record_workloads, record_inputs),
    )
    return DeployReport(
        s.known.outcomes,
        kubeconfig=s.known.kubeconfig,
        bundle_id=s.known.verified.bundle_id if s.known.verified else "",
        seconds=time.monotonic() - s.started,
        uploaded_bytes=s.uploader.uploaded,
    )


def _record_workloads(s: Session) -> None:
    """Keep what the deployed bundle carried (for ``mk8s status``)."""
    if s.known.verified is None:
        return
    s.journal.put("workloads", summary(s.known.verified.manifest))


def _note_resume(s: Session) -> None:
    """Say which nodes the last run left failed: this run resumes them."""
    failed = sorted(
        name
        for name, entry in s.journal.read().get("nodes", {}).items()
        if isinstance(entry, dict) and entry.get("state") == NodeState.FAILED
    )
    if failed:
        s.log(f"resuming: the last run left {', '.join(failed)} failed")


__all__ = ["DeployReport", "DeploySettings", "deploy", "deploy_phases"]
