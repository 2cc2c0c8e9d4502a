"""The session: one run of mk8s against one cluster's nodes, and its public API.

Phases (deploy, upgrade, day-2) and the engine work through a :class:`Session`. What
the run knows is ``session.known`` (:class:`~mk8s.deploy.engine.known.Known`: the
bundle, facts, context, outcomes, phase results). What it does is the session's:
commands on nodes through ``session.remote`` (:class:`~mk8s.deploy.engine.remote.Remote`:
connections and the audit log); a :class:`~mk8s.deploy.steps.Step` executed (its
commands, uploads and waits); nodes worked on in parallel or in the background; and
what happened to each node recorded (its outcome, and the journal:
``session.journal``, :class:`~mk8s.deploy.engine.journal.Journal`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mk8s import ui
from mk8s.callbacks import Log, TransferProgress
from mk8s.deploy.cluster import Cluster, Node
from mk8s.deploy.command import Command
from mk8s.deploy.engine.journal import Journal
from mk8s.deploy.engine.known import Known, NodeState
from mk8s.deploy.engine.readiness import NodesPoller, wait_ready
from mk8s.deploy.engine.remote import Connect, Remote, allow_open_files, connect_ssh
from mk8s.deploy.engine.uploads import Uploader
from mk8s.deploy.state import StateDir
from mk8s.deploy.steps import PlaceUploads, Step, WaitReady
from mk8s.errors import Interrupted, Mk8sError


@dataclass(frozen=True, kw_only=True)
class SessionSettings:
    """How a session works: where its state is, how wide and how long it waits."""

    cluster: Cluster
    state_base: Path | None = None
    jobs: int | None = None
    ready_timeout: float = 900.0
    poll_interval: float = 0.5
    dry_run: bool = False

    @property
    def concurrency(self) -> int:
        return max(1, self.jobs or self.cluster.options.concurrency)


@dataclass
class Session:
    """One run: what it does on the nodes. What it knows is ``known``. Thread-safe
    where phases use threads."""

    settings: SessionSettings
    log: Log = ui.note
    progress: TransferProgress | None = None
    connect: Connect = connect_ssh
    started: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.known = Known(self.cluster)
        self.state = StateDir(self.cluster.name, self.settings.state_base)
        self.remote = Remote(self.state, self.connect)
        allow_open_files(len(self.cluster.nodes))
        self.uploader = Uploader(self.remote, self.log, self.progress)
        self._lock = threading.Lock()
        self._clocks = {n.name: time.monotonic() for n in self.cluster.nodes}
        self.journal = Journal(self.state)
        self._pool: ThreadPoolExecutor | None = None
        self._poller: NodesPoller | None = None
        self.prepared: dict[str, Future[None]] = {}

    # -- basics ------------------------------------------------------------------------
    @property
    def cluster(self) -> Cluster:
        return self.settings.cluster

    @property
    def dry_run(self) -> bool:
        return self.settings.dry_run

    def parallel(self, nodes: Iterable[Node], fn: Callable[[Node], None]) -> None:
        """``fn`` on every node, ``concurrency`` at a time; returns when all are done."""
        items = list(nodes)
        if not items:
            return
        with ThreadPoolExecutor(max_workers=min(self.settings.concurrency, len(items))) as p:
            list(p.map(fn, items))

    def background(self) -> ThreadPoolExecutor:
        """The pool for per-node work that later phases wait on (see :meth:`prepared`)."""
        if self._pool is None:
            n = min(self.settings.concurrency, max(1, len(self.cluster.nodes)))
            self._pool = ThreadPoolExecutor(max_workers=n)
        return self._pool

    def wait_prepared(self, node: Node) -> None:
        """Block until the node's background preparation (stage, install) is done."""
        fut = self.prepared.get(node.name)
        if fut is not None:
            fut.result()

    # -- connections -----------------------------------------------------------------
    def connect_nodes(self, nodes: Sequence[Node]) -> dict[str, str]:
        """Connect to ``nodes`` in parallel; return node name -> error for failures."""
        errors: dict[str, str] = {}

        def one(node: Node) -> None:
            try:
                self.remote.open(node)
            except Mk8sError as e:
                with self._lock:
                    errors[node.name] = str(e)

        self.parallel([n for n in nodes if not self.remote.connected(n)], one)
        return errors

    def abort(self) -> None:
        """Cut every connection (work in flight fails at once); then close as usual."""
        self.remote.close()

    def interrupted(self, what: str, again: str) -> Interrupted:
        """The Ctrl-C message: what this run finished, what it left, how to go on."""
        phase = self.known.phase
        outcomes = self.known.outcomes.values()
        done = [o.node.name for o in outcomes if o.state == NodeState.READY]
        reset = [o.node.name for o in outcomes if o.state == NodeState.RESET]
        other = [o.node.name for o in outcomes if o.state not in (NodeState.READY, NodeState.RESET)]
        finished = done or reset
        parts = [f"{what} interrupted while {phase}"]
        if finished:
            parts.append(f"finished: {', '.join(finished)}")
        if other:
            parts.append(
                f"not finished: {', '.join(other)} (may be half done: partly uploaded or"
                " installed, or its service starting)"
            )
        return Interrupted("; ".join(parts), f"run the same command again: {again}")

    def close_background(self) -> None:
        """Wait for background work (pending work that has not started is dropped)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def close(self) -> None:
        """Join background work and close every connection; never raises."""
        self.close_background()
        self.remote.close()

    # -- steps -----------------------------------------------------------------------
    def execute(self, node: Node, step: Step) -> None:
        """Run a step's actions in order. The uploads are sent when the step reaches its
        PlaceUploads, which then checks and places them (resuming the partial parts the
        node's facts show); a WaitReady blocks until the node is Ready."""
        for action in step.actions:
            if isinstance(action, Command):
                self.remote.run(node, step.name, action)
            elif isinstance(action, PlaceUploads):
                facts = self.known.facts.get(node.name)
                self.uploader.send(node, step.name, action, facts.partial if facts else {})
            elif isinstance(action, WaitReady):
                self.mark_ready(node, wait_ready(self.poller(), node, action))

    def poller(self) -> NodesPoller:
        """The run's one shared node list (asking the server the cluster is reached
        through: the first server, or the live member it rejoins)."""
        with self._lock:
            if self._poller is None:
                ctx = self.known.ctx
                first = ctx.anchor_node if ctx else self.cluster.bootstrap
                interval = self.settings.poll_interval
                self._poller = NodesPoller(self.remote, self.cluster, first, interval)
            return self._poller

    # -- outcomes --------------------------------------------------------------------
    def fail(self, node: Node, e: BaseException) -> None:
        o = self.known.outcomes[node.name]
        o.state, o.error = NodeState.FAILED, str(e)
        o.seconds = time.monotonic() - self._clocks[node.name]
        self.log(f"{node.name}: FAILED: {e}")
        self.record(node, state=NodeState.FAILED, error=str(e))

    def mark_ready(self, node: Node, version: str) -> None:
        o = self.known.outcomes[node.name]
        o.state, o.version = NodeState.READY, version
        o.seconds = time.monotonic() - self._clocks[node.name]
        self.log(f"{node.name}: Ready ({version})")
        self.record(node, state=NodeState.READY, version=version, role=node.role)

    def mark_converged(self, versions: dict[str, str]) -> None:
        """Mark the nodes named in ``versions`` Ready at once: each was found Ready at
        that version with nothing to change; one log line, one journal write."""
        now = time.monotonic()
        entries: dict[str, dict[str, object]] = {}
        for name, version in versions.items():
            o = self.known.outcomes[name]
            o.state, o.version = NodeState.READY, version
            o.seconds = now - self._clocks[name]
            entries[name] = {"state": NodeState.READY, "version": version, "role": o.node.role}
        verified = self.known.verified
        self.journal.record_many(entries, verified.bundle_id if verified else None)

    def record(self, node: Node, **entry: Any) -> None:
        """Record in the journal where ``node`` ended, with this run's bundle."""
        verified = self.known.verified
        self.journal.record(node.name, entry, verified.bundle_id if verified else None)


__all__ = ["Session", "SessionSettings"]
