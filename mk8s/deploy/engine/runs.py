"""What every run over a cluster's nodes with a bundle takes and leaves (``mk8s
deploy``, ``mk8s restore``): its settings, from which the session's come, and the
per-node report with its table."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mk8s import ui
from mk8s.bundle.format.keys import TrustedKey
from mk8s.deploy.cluster import Cluster
from mk8s.deploy.engine.known import NodeOutcome, NodeState
from mk8s.deploy.engine.phase import Phase, run_phases
from mk8s.deploy.engine.session import Session, SessionSettings


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """The cluster, the bundle and the keys it must be signed with, how wide the run
    goes and how long it waits, where its state and the kubeconfig go."""

    cluster: Cluster
    bundle: Path
    trusted: Sequence[TrustedKey]
    allow_unsigned: bool = False
    jobs: int | None = None
    dry_run: bool = False
    ready_timeout: float = 900.0
    poll_interval: float = 0.5
    state_base: Path | None = None
    kubeconfig_out: Path | None = None

    def session_settings(self) -> SessionSettings:
        return SessionSettings(
            cluster=self.cluster,
            state_base=self.state_base,
            jobs=self.jobs,
            ready_timeout=self.ready_timeout,
            poll_interval=self.poll_interval,
            dry_run=self.dry_run,
        )


@dataclass
class NodesReport:
    """What a run did on each node: ``ok`` when every node is Ready."""

    outcomes: dict[str, NodeOutcome]

    @property
    def ok(self) -> bool:
        return all(o.state == NodeState.READY for o in self.outcomes.values())

    def table(self) -> str:
        rows = [("NODE", "ROLE", "STATE", "VERSION", "TIME")]
        for o in self.outcomes.values():
            rows.append((o.node.name, o.node.role, o.state, o.version or "-", f"{o.seconds:.1f}s"))
        lines = [ui.table(rows)]
        lines += [ui.safe(f"{o.node.name}: {o.error}") for o in self.outcomes.values() if o.error]
        return "\n".join(lines)


def plan_only(s: Session, phases: Sequence[Phase]) -> None:
    """A dry run: every phase prints what it would do; every node is PLANNED."""
    run_phases(phases, s)
    for o in s.known.outcomes.values():
        o.state = NodeState.PLANNED


def run_locked(
    s: Session,
    phases: Sequence[Phase],
    *,
    what: str,
    goes_on: str,
    before: Callable[[Session], None] | None = None,
    after: Sequence[Callable[[Session], None]] = (),
) -> None:
    """The real run, holding the cluster's state lock: ``before``, the phases, then
    ``after``; Ctrl-C becomes :class:`~mk8s.errors.Interrupted` saying which nodes
    finished and that the same command ``goes_on``."""
    with s.state.locked():
        if before is not None:
            before(s)
        try:
            run_phases(phases, s)
            for step in after:
                step(s)
        except KeyboardInterrupt:
            raise s.interrupted(what, goes_on) from None
        finally:
            s.close()


__all__ = ["NodesReport", "RunSettings", "plan_only", "run_locked"]
