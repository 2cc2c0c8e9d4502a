"""``mk8s restore``: the restore phases run by the engine, and the report they leave.

The same list runs for ``--dry-run`` (each phase prints what it would do; the snapshot,
the bundle and the token are checked all the same) and for the real run, which holds
the cluster's state lock. Ctrl-C leaves the restore's progress in the journal: the same
command finishes it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from mk8s import ui
from mk8s.callbacks import Log, TransferProgress
from mk8s.deploy.engine.phase import run_phases
from mk8s.deploy.engine.remote import Connect, connect_ssh
from mk8s.deploy.engine.runs import NodesReport, RunSettings, plan_only, run_locked
from mk8s.deploy.engine.session import Session
from mk8s.deploy.lifecycle import index
from mk8s.deploy.lifecycle.restore import restore_phases
from mk8s.deploy.phases.connect import ConnectAll
from mk8s.deploy.phases.inputs import record_inputs


@dataclass(frozen=True, kw_only=True)
class RestoreSettings(RunSettings):
    """Everything one ``mk8s restore`` needs: a run's settings and the snapshot."""

    snapshot: Path


@dataclass
class RestoreReport(NodesReport):
    """What a restore did: per node, and in all."""

    record: index.SnapshotRecord | None = None
    kubeconfig: Path | None = None
    seconds: float = 0.0
    plan_text: str = ""
    stopped: str = ""
    notes: list[str] = field(default_factory=list)


def restore(
    settings: RestoreSettings,
    log: Log = ui.note,
    progress: TransferProgress | None = None,
    *,
    connect: Connect = connect_ssh,
) -> RestoreReport:
    """Restore the cluster to the snapshot (with ``dry_run``: only plan it).

    Raises SnapshotRejected (exit 3) or BundleRejected (exit 3), InputError (exit 2: a
    bundle of another RKE2 version, another token), PreflightError and StateLockedError
    before any node is changed. Returns a report; ``report.ok`` is False when a node
    failed after changes began (the same command goes on from there).
    """
    s = Session(settings.session_settings(), log=log, progress=progress, connect=connect)
    run, phases = restore_phases(
        settings.snapshot,
        settings.bundle,
        settings.trusted,
        allow_unsigned=settings.allow_unsigned,
        kubeconfig_out=settings.kubeconfig_out,
    )
    if settings.dry_run:
        plan_only(s, phases)
        return RestoreReport(s.known.outcomes, run.record, plan_text="\n".join(s.known.plan_lines))
    # The checks that read only local files (the snapshot, the bundle, the token) come
    # before the state lock: a refusal leaves .mk8s as it was.
    local = next(i for i, p in enumerate(phases) if isinstance(p, ConnectAll))
    run_phases(phases[:local], s)
    run_locked(
        s,
        phases[local:],
        what="restore",
        goes_on="it goes on from where this one stopped",
        after=(record_inputs,),
    )
    kubeconfig = s.known.kubeconfig
    return RestoreReport(
        s.known.outcomes,
        run.checked.record if run.checked else None,
        kubeconfig=kubeconfig if isinstance(kubeconfig, Path) else None,
        seconds=time.monotonic() - s.started,
        stopped=s.known.stop_reason,
    )


__all__ = ["RestoreReport", "RestoreSettings", "restore"]
