"""Run one command and measure it: wall time and peak RSS of the whole process tree.

Peak RSS is ``ru_maxrss`` from ``wait4`` on the command (and its CPU seconds, user
plus system, from the same rusage): the rusage of a child
includes every descendant it waited for, and ``ru_maxrss`` is the largest resident set
among them (so for ``bash -c 'zstd -dc B | sha256sum'`` it is the larger of the two).
A child forked straight from this (large) Python process would report at least this
process's RSS (the high-water mark counts the time between fork and exec), so the
command is started by a tiny parent: GNU ``/usr/bin/time`` (``%M``), or else a
``python3 -S`` launcher, which waits for it and reports its rusage.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


class BenchError(RuntimeError):
    """A benchmarked command failed (its output is in the message)."""


@dataclass(frozen=True)
class Sample:
    seconds: float
    max_rss: int  # bytes
    code: int
    out: str
    err: str
    cpu: float = 0.0  # user + system seconds of the command and what it waited for


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    timeout: float = 3600.0,
    check: bool = True,
) -> Sample:
    """Run ``argv`` to completion; time it from fork to exit and take its peak RSS."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.NamedTemporaryFile(prefix="mk8s-bench-rss-") as rss,
    ):
        start = time.perf_counter()
        proc = subprocess.Popen(
            _rss_wrapper(argv, rss.name),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
        )
        timer = threading.Timer(timeout, _kill_group, (proc.pid,))
        timer.start()
        try:
            _, status, _usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        kib, cpu = _read_usage(rss.name)
        sample = Sample(
            seconds,
            kib * 1024,
            proc.returncode,
            out.read().decode("utf-8", "replace"),
            err.read().decode("utf-8", "replace"),
            cpu,
        )
    if check and sample.code != 0:
        tail = (sample.err.strip() or sample.out.strip())[-1500:]
        raise BenchError(f"`{' '.join(argv)[:300]}` exited {sample.code}: {tail}")
    return sample


def _kill_group(pid: int) -> None:
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)


_LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(f"{usage.ru_maxrss} {usage.ru_utime:.2f} {usage.ru_stime:.2f}")
sys.exit(os.waitstatus_to_exitcode(status) & 255)
"""


def _rss_wrapper(argv: Sequence[str], report: str) -> list[str]:
    """``argv`` under a small parent that writes the command's peak RSS (KiB) and its
    user and system CPU seconds to ``report``."""
    gnu_time = "/usr/bin/time"
    if os.path.exists(gnu_time):
        return [gnu_time, "-q", "-f", "%M %U %S", "-o", report, *argv]
    py = shutil.which("python3", path="/usr/bin:/bin") or "python3"
    return [py, "-S", "-E", "-c", _LAUNCHER, report, *argv]


def _read_usage(path: str) -> tuple[int, float]:
    """(peak RSS in KiB, CPU seconds) from the report's last line; zeros if unreadable."""
    try:
        lines = Path(path).read_text().strip().splitlines()
    except OSError:
        return 0, 0.0
    words = lines[-1].split() if lines else []
    try:
        return int(words[0]), float(words[1]) + float(words[2])
    except (IndexError, ValueError):
        return 0, 0.0


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def parse_size(text: str) -> int:
    """``2GiB``, ``512MiB``, ``4M``, ``1000`` -> bytes (binary units)."""
    t = text.strip().lower().replace(" ", "")
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    for suffix in ("ib", "b"):
        if t.endswith(suffix) and t[: -len(suffix)][-1:].isalpha():
            t = t[: -len(suffix)]
            break
    if t and t[-1] in units:
        return int(float(t[:-1]) * units[t[-1]])
    return int(t.rstrip("b"))
