"""``mk8s certs`` and ``mk8s certs rotate``: each a list of phases
(:mod:`mk8s.deploy.phases.certificates`) run by the same engine and session as a deploy."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path

from mk8s import ui
from mk8s.callbacks import Log
from mk8s.deploy.builders import certfiles as certs
from mk8s.deploy.cluster import Cluster
from mk8s.deploy.engine.known import NodeState
from mk8s.deploy.engine.phase import Phase, run_phases
from mk8s.deploy.engine.remote import Connect, connect_ssh
from mk8s.deploy.engine.session import Session, SessionSettings
from mk8s.deploy.phases.certificates import (
    CertRun,
    ConnectForCerts,
    ReadCerts,
    ReadState,
    RefreshKubeconfig,
    RestartAgents,
    RotateServers,
)


@dataclass
class CertReport:
    """Every node's certificates, as read at ``now``."""

    nodes: list[certs.NodeCerts]
    now: datetime.datetime

    def problems(self) -> dict[str, str]:
        """node -> why its certificates need attention (expired, under 30 days, unread)."""
        out = {nc.node.name: certs.verdict(nc, self.now) for nc in self.nodes}
        return {n: why for n, why in out.items() if why}

    def table(self) -> str:
        rows = [("NODE", "ROLE", "EARLIEST EXPIRY (UTC)", "CERTIFICATE", "CA EXPIRY", "STATE")]
        for nc in self.nodes:
            first, ca = nc.earliest, nc.earliest_ca
            why = certs.verdict(nc, self.now)
            rows.append(
                (
                    nc.node.name,
                    nc.node.role,
                    certs.shown_expiry(nc, self.now),
                    first.name if first else "-",
                    f"{ca.not_after:%Y-%m-%d}" if ca else "-",
                    "ok" if not why else ("EXPIRED" if nc.expired(self.now) else "ATTENTION"),
                )
            )
        lines = [ui.table(rows)]
        lines += [ui.safe(f"{n}: {why}") for n, why in self.problems().items()]
        for nc in self.nodes:
            lines += [ui.safe(f"{nc.node.name}: {p}") for p in nc.problems]
        return "\n".join(lines)

    def as_json(self) -> dict[str, object]:
        return {
            "checkedAt": self.now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "warnDays": certs.WARN_DAYS,
            "nodes": [certs.as_json(nc, self.now) for nc in self.nodes],
        }


def _report(cluster: Cluster, run: CertRun) -> CertReport:
    return CertReport(
        [run.found.get(n.name) or certs.NodeCerts(n, error="not read") for n in cluster.nodes],
        run.now,
    )


def check(
    cluster: Cluster,
    *,
    state_base: Path | None = None,
    log: Log = ui.note,
    connect: Connect = connect_ssh,
) -> CertReport:
    """Read every node's certificates (never changes anything)."""
    s = Session(SessionSettings(cluster=cluster, state_base=state_base), log=log, connect=connect)
    run = CertRun()
    try:
        run_phases([ConnectForCerts(run, strict=False), ReadCerts(run)], s)
    finally:
        s.close()
    return _report(cluster, run)


@dataclass(frozen=True, kw_only=True)
class RotateSettings:
    cluster: Cluster
    dry_run: bool = False
    ready_timeout: float = 900.0
    jobs: int | None = None
    state_base: Path | None = None
    kubeconfig_out: Path | None = None


@dataclass
class RotateResult:
    """A rotation's plan (dry run) or the nodes' certificates after it."""

    plan_text: str = ""
    mode: str = ""
    after: CertReport | None = None
    kubeconfig: Path | None = None
    ready: list[str] = field(default_factory=list)


def rotation_phases(run: CertRun, after: CertRun, kubeconfig_out: Path | None) -> list[Phase]:
    """``mk8s certs rotate``, in order."""
    return [
        ConnectForCerts(run, strict=True),
        ReadCerts(run),
        ReadState(run),
        RotateServers(run),
        RestartAgents(run),
        RefreshKubeconfig(kubeconfig_out),
        ReadCerts(after, after=True),
    ]


def rotate(
    settings: RotateSettings,
    *,
    log: Log = ui.note,
    connect: Connect = connect_ssh,
) -> RotateResult:
    """Rotate every node's certificates (or, with ``dry_run``, print the plan)."""
    session_settings = SessionSettings(
        cluster=settings.cluster,
        state_base=settings.state_base,
        jobs=settings.jobs,
        ready_timeout=settings.ready_timeout,
        dry_run=settings.dry_run,
    )
    s = Session(session_settings, log=log, connect=connect)
    run, after = CertRun(), CertRun()
    phases = rotation_phases(run, after, settings.kubeconfig_out)
    if settings.dry_run:
        try:
            run_phases(phases, s)
        finally:
            s.close()
        mode = run.rotation.mode if run.rotation else ""
        return RotateResult(plan_text="\n".join(s.known.plan_lines), mode=mode)
    with s.state.locked():
        try:
            run_phases(phases, s)
        except KeyboardInterrupt:
            raise s.interrupted("certs rotate", "a rotation can be repeated") from None
        finally:
            s.close()
    kubeconfig = s.known.kubeconfig
    return RotateResult(
        mode=run.rotation.mode if run.rotation else "",
        after=_report(settings.cluster, after),
        kubeconfig=kubeconfig,
        ready=[o.node.name for o in s.known.outcomes.values() if o.state == NodeState.READY],
    )


__all__ = ["CertReport", "RotateResult", "RotateSettings", "check", "rotate", "rotation_phases"]
