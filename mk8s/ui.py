"""Output for people: progress bars on a terminal, plain lines otherwise.

Results go to stdout; progress, notes and warnings go to stderr so that ``--json``
output stays machine-readable.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any, TextIO

import click

_lock = threading.Lock()


def is_terminal(stream: TextIO | None = None) -> bool:
    stream = stream or sys.stderr
    return stream.isatty() and os.environ.get("TERM") != "dumb"


def note(message: str) -> None:
    """A progress line on stderr."""
    with _lock:
        click.echo(safe(message, keep_newlines=True), err=True)


def warn(message: str) -> None:
    with _lock:
        click.echo(f"mk8s: warning: {safe(message, keep_newlines=True)}", err=True)


_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))}
_CONTROL.update({0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t", 0x1B: "\\x1b"})
# Bidirectional overrides and isolates reorder what a terminal shows.
_CONTROL.update({c: f"\\u{c:04x}" for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))})
_CONTROL_KEEP_NEWLINE = {k: v for k, v in _CONTROL.items() if k != 0x0A}


def safe(text: object, *, keep_newlines: bool = False) -> str:
    """``text`` with control characters escaped (``\\x1b``, ``\\n``...).

    Everything printed that came from a bundle, a lock, a cluster file or a node goes
    through here, so untrusted text cannot move the cursor, recolour or redraw the
    operator's terminal (an unverified bundle must not be able to print "VERIFIED").
    """
    return str(text).translate(_CONTROL_KEEP_NEWLINE if keep_newlines else _CONTROL)


def table(rows: Sequence[Sequence[object]]) -> str:
    """Rows as left-aligned columns two spaces apart; cells are made :func:`safe`."""
    cells = [[safe(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))] if cells else []
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells
    )


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class ProgressBar:
    """A byte-count progress display: a rich bar on a terminal; otherwise a plain line
    every ``PLAIN_INTERVAL`` seconds, so quick operations print nothing extra."""

    PLAIN_INTERVAL = 5.0

    def __init__(self, label: str, total: int) -> None:
        self.label = label
        self.total = total
        self._last_print = time.monotonic()
        self._rich = None
        self._task = None
        if is_terminal():
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )
            from rich.progress import Progress as RichProgress

            self._rich = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                transient=True,
            )
            self._task = self._rich.add_task(label, total=total or None)

    def __enter__(self) -> ProgressBar:
        if self._rich is not None:
            self._rich.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._rich is not None:
            self._rich.stop()

    def update(self, done: int, total: int | None = None) -> None:
        if total is not None:
            self.total = total
        if self._rich is not None and self._task is not None:
            self._rich.update(self._task, completed=done, total=self.total or None)
            return
        now = time.monotonic()
        if now - self._last_print >= self.PLAIN_INTERVAL:
            self._last_print = now
            pct = f"{done * 100 // self.total}% " if self.total else ""
            note(f"{self.label}: {pct}({human_bytes(done)} of {human_bytes(self.total)})")


class Transfers:
    """Progress for many transfers: a bar each plus a total on a terminal; otherwise a
    line when each one completes (``VERB NAME (SIZE)``). Call it as
    ``progress(name, bytes_done, total)``, from any thread."""

    def __init__(self, verb: str) -> None:
        self.verb = verb
        self._mutex = threading.Lock()
        self.rich = None
        self.tasks: dict[str, Any] = {}
        self.done: set[str] = set()
        if is_terminal():
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TransferSpeedColumn,
            )

            self.rich = Progress(
                TextColumn("{task.description:<40}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                transient=True,
            )
            self.total = self.rich.add_task("total", total=None)
            self.sizes: dict[str, tuple[int, int | None]] = {}

    def __enter__(self) -> Transfers:
        if self.rich is not None:
            self.rich.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.rich is not None:
            self.rich.stop()

    def __call__(self, name: str, done: int, total: int | None) -> None:
        with self._mutex:
            self._update(name, done, total)

    def _update(self, name: str, done: int, total: int | None) -> None:
        if self.rich is not None:
            if name not in self.tasks:
                self.tasks[name] = self.rich.add_task(name, total=total)
            self.rich.update(self.tasks[name], completed=done, total=total)
            self.sizes[name] = (done, total)
            all_total = sum(t or 0 for _, t in self.sizes.values())
            self.rich.update(
                self.total,
                completed=sum(d for d, _ in self.sizes.values()),
                total=all_total or None,
            )
            return
        if total is not None and done >= total and name not in self.done:
            self.done.add(name)
            note(f"{self.verb} {name} ({human_bytes(total)})")
