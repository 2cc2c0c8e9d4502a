"""The session: one run of mk8s against one cluster's nodes, and its public API.

Phases (deploy, upgrade, day-2) and the engine work only through a :class:`Session`:
connect nodes, run an audited command, execute a :class:`~mk8s.deploy.steps.Step`,
record what happened to each node (outcome and journal). The connect function is
injectable, so orchestration runs against any :class:`Transport`. Every remote
command goes to the audit log with secrets masked, with its exit code.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mk8s import ui
from mk8s.bundle.format.reader import VerifiedBundle
from mk8s.callbacks import Log, TransferProgress
from mk8s.deploy.cluster import Cluster, Node
from mk8s.deploy.command import Command, as_user
from mk8s.deploy.context import Context
from mk8s.deploy.facts import NodeFacts
from mk8s.deploy.state import StateDir
from mk8s.deploy.steps import NodeState, PlaceUploads, Step, WaitReady
from mk8s.deploy.transport import Result, SSHTransport, Transport
from mk8s.deploy.uploads import Uploader
from mk8s.errors import Interrupted, Mk8sError, RemoteCommandError

Connect = Callable[[Node], Transport]


def connect_ssh(node: Node) -> Transport:
    """An open SSH connection to ``node``; ConnectError / HostKeyError otherwise."""
    t = SSHTransport.for_node(node)
    t.connect()
    return t


@dataclass
class NodeOutcome:
    """What happened to one node in this run."""

    node: Node
    state: NodeState = NodeState.PENDING
    version: str = ""
    seconds: float = 0.0
    error: str = ""
    uploaded_bytes: int = 0


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
    """One run's shared state. Thread-safe where phases use threads."""

    settings: SessionSettings
    log: Log = ui.note
    progress: TransferProgress | None = None
    connect: Connect = connect_ssh
    conns: dict[str, Transport] = field(default_factory=dict)
    facts: dict[str, NodeFacts] = field(default_factory=dict)
    outcomes: dict[str, NodeOutcome] = field(default_factory=dict)
    verified: VerifiedBundle | None = None
    ctx: Context | None = None
    plan_lines: list[str] = field(default_factory=list)
    stop_reason: str = ""
    started: float = field(default_factory=time.monotonic)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.state = StateDir(self.cluster.name, self.settings.state_base)
        self.outcomes = {n.name: NodeOutcome(n) for n in self.cluster.nodes}
        self.uploader = Uploader(self)
        self._lock = threading.Lock()
        self._clocks = {n.name: time.monotonic() for n in self.cluster.nodes}
        self._journal: dict[str, Any] | None = None
        self._pool: ThreadPoolExecutor | None = None
        self.prepared: dict[str, Future[None]] = {}

    # -- basics ------------------------------------------------------------------------
    @property
    def cluster(self) -> Cluster:
        return self.settings.cluster

    @property
    def dry_run(self) -> bool:
        return self.settings.dry_run

    @property
    def context(self) -> Context:
        if self.ctx is None:
            raise RuntimeError("no deploy context yet (the token phase builds it)")
        return self.ctx

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
                t = self.connect(node)
            except Mk8sError as e:
                with self._lock:
                    errors[node.name] = str(e)
                return
            with self._lock:
                self.conns[node.name] = t

        self.parallel([n for n in nodes if n.name not in self.conns], one)
        return errors

    def abort(self) -> None:
        """Cut every connection (work in flight fails at once); then close as usual."""
        for t in list(self.conns.values()):
            with contextlib.suppress(Exception):
                t.close()

    def interrupted(self, what: str, again: str) -> Interrupted:
        """The Ctrl-C message: what this run finished, what it left, how to go on."""
        phase = self.extra.get("phase", "starting")
        done = [o.node.name for o in self.outcomes.values() if o.state == NodeState.READY]
        reset = [o.node.name for o in self.outcomes.values() if o.state == NodeState.RESET]
        other = [
            o.node.name
            for o in self.outcomes.values()
            if o.state not in (NodeState.READY, NodeState.RESET)
        ]
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
        for t in self.conns.values():
            with contextlib.suppress(Exception):
                t.close()

    # -- commands --------------------------------------------------------------------
    def run(self, node: Node, step: str, cmd: Command) -> Result:
        """Run ``cmd`` on ``node`` and write it (masked) and its exit code to the audit
        log. Raises RemoteCommandError / ConnectError as the transport does."""
        t = self.conns[node.name]
        shown = as_user(cmd, node.ssh.user).display()  # what the node really runs, masked
        start = time.monotonic()
        try:
            result = t.run(cmd)
        except RemoteCommandError as e:
            self.audit(node, step, command=shown, exit=None, error=cmd.mask(str(e)), start=start)
            raise
        self.audit(node, step, command=shown, exit=result.exit_code, start=start)
        return result

    def audit(self, node: Node, step: str, *, start: float | None = None, **record: Any) -> None:
        if start is not None:
            record["seconds"] = round(time.monotonic() - start, 3)
        self.state.audit(node=node.name, step=step, **record)

    def execute(self, node: Node, step: Step) -> None:
        """Run a step's actions in order. The uploads are sent when the step reaches its
        PlaceUploads, which then checks and places them; a WaitReady blocks until the
        node is Ready."""
        from mk8s.deploy.readiness import wait_ready

        for action in step.actions:
            if isinstance(action, Command):
                self.run(node, step.name, action)
            elif isinstance(action, PlaceUploads):
                self.uploader.send(node, step.name, action)
            elif isinstance(action, WaitReady):
                self.mark_ready(node, wait_ready(self, node, action))

    # -- outcomes --------------------------------------------------------------------
    def alive(self, node: Node) -> bool:
        return self.outcomes[node.name].state == NodeState.PENDING

    def fail(self, node: Node, e: BaseException) -> None:
        o = self.outcomes[node.name]
        o.state, o.error = NodeState.FAILED, str(e)
        o.seconds = time.monotonic() - self._clocks[node.name]
        self.log(f"{node.name}: FAILED: {e}")
        self.record(node, state=NodeState.FAILED, error=str(e))

    def mark_ready(self, node: Node, version: str) -> None:
        o = self.outcomes[node.name]
        o.state, o.version = NodeState.READY, version
        o.seconds = time.monotonic() - self._clocks[node.name]
        self.log(f"{node.name}: Ready ({version})")
        self.record(node, state=NodeState.READY, version=version, role=node.role)

    def stop(self, reason: str) -> None:
        """Stop the run: every node not yet done is skipped with ``reason``."""
        self.stop_reason = reason
        for o in self.outcomes.values():
            if o.state == NodeState.PENDING:
                o.state, o.error = NodeState.SKIPPED, reason

    def mark_cordoned(self, node: Node, cordoned: bool) -> None:
        """Remember (in the journal) that mk8s cordoned ``node``, or no longer has."""
        journal = self.journal()
        with self._lock:
            left = set(journal.setdefault("cordoned", []))
            left = left | {node.name} if cordoned else left - {node.name}
            journal["cordoned"] = sorted(left)
            self.state.write_journal(journal)

    def cordoned(self) -> set[str]:
        """The nodes an earlier (interrupted) run cordoned and did not uncordon."""
        left = self.journal().get("cordoned", [])
        return {str(n) for n in left} if isinstance(left, list) else set()

    # -- journal ---------------------------------------------------------------------
    def journal(self) -> dict[str, Any]:
        """What the last runs recorded per node (read once, then kept up to date)."""
        with self._lock:
            if self._journal is None:
                self._journal = self.state.read_journal()
            return self._journal

    def record(self, node: Node, **entry: Any) -> None:
        journal = self.journal()
        bundle = self.verified.bundle_id if self.verified else None
        with self._lock:
            journal["nodes"][node.name] = {
                **{k: str(v) for k, v in entry.items()},
                **({"bundle": bundle} if bundle else {}),
            }
            self.state.write_journal(journal)


__all__ = [
    "Connect",
    "NodeOutcome",
    "Session",
    "SessionSettings",
    "connect_ssh",
]
