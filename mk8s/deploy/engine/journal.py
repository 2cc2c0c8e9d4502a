"""What the runs of one cluster recorded: ``journal.json`` in its state directory.

Per node, where it last ended (with the bundle, and for a node left Ready the
start-only inputs it runs with); the nodes an interrupted upgrade left cordoned; the
charts mk8s placed, the images it pushed and the workloads the bundle carried. A run
reads it once and writes it through at every change; a dry run reads it to assume
the nodes as the last run left them.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from mk8s.deploy.state import StateDir


class Journal:
    """The journal of one run's cluster (:class:`StateDir`'s ``journal.json``).
    Thread-safe."""

    def __init__(self, state: StateDir) -> None:
        self.state = state
        self._data: dict[str, Any] | None = None
        self._lock = threading.RLock()

    def read(self) -> dict[str, Any]:
        """The journal: read once, then kept up to date (:meth:`write` saves changes
        made to it)."""
        with self._lock:
            if self._data is None:
                self._data = self.state.read_journal()
            return self._data

    def write(self) -> None:
        """Save the journal as it now stands."""
        with self._lock:
            self.state.write_journal(self.read())

    def put(self, key: str, value: object) -> None:
        """Set one top-level entry and save."""
        with self._lock:
            self.read()[key] = value
            self.write()

    def record(self, node: str, entry: Mapping[str, object], bundle: str | None) -> None:
        """Where ``node`` ended in this run (values as text), with the bundle; saved."""
        with self._lock:
            self.read()["nodes"][node] = {
                **{k: str(v) for k, v in entry.items()},
                **({"bundle": bundle} if bundle else {}),
            }
            self.write()

    def record_many(self, entries: Mapping[str, Mapping[str, object]], bundle: str | None) -> None:
        """:meth:`record` for many nodes at once, saved once (a converged cluster of a
        thousand nodes writes its journal once, not a thousand times)."""
        with self._lock:
            nodes = self.read()["nodes"]
            for node, entry in entries.items():
                nodes[node] = {
                    **{k: str(v) for k, v in entry.items()},
                    **({"bundle": bundle} if bundle else {}),
                }
            self.write()

    def mark_cordoned(self, node: str, cordoned: bool) -> None:
        """Remember that mk8s cordoned ``node``, or no longer has; saved."""
        with self._lock:
            journal = self.read()
            left = set(journal.setdefault("cordoned", []))
            left = left | {node} if cordoned else left - {node}
            journal["cordoned"] = sorted(left)
            self.write()

    def cordoned(self) -> set[str]:
        """The nodes an earlier (interrupted) run cordoned and did not uncordon."""
        left = self.read().get("cordoned", [])
        return {str(n) for n in left} if isinstance(left, list) else set()


__all__ = ["Journal"]
