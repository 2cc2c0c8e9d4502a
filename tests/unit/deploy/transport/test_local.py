"""mk8s/deploy/transport/local.py: LocalTransport runs, masks, feeds stdin, times out and
resumes transfers on this machine."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from mk8s.deploy.command import Command, Secret
from mk8s.deploy.transport import LocalTransport
from mk8s.errors import RemoteCommandError


def test_local_run_check_and_mask() -> None:
    t = LocalTransport("here")
    r = t.run(Command.argv("sh", "-c", "echo out; echo err >&2"))
    assert (r.exit_code, r.stdout, r.stderr, r.ok) == (0, "out\n", "err\n", True)
    assert t.run(Command.argv("false", check=False)).exit_code == 1
    cmd = Command.script("echo {s} >&2; exit 3", {"s": Secret("hunter2")})
    with pytest.raises(RemoteCommandError) as info:
        t.run(cmd)
    assert str(info.value) == "here: `echo *** >&2; exit 3` exited 3: ***"


def test_local_stdin_and_timeout() -> None:
    t = LocalTransport("here")
    assert t.run(Command.argv("cat", stdin=Secret("s3"))).stdout == "s3"
    start = time.monotonic()
    with pytest.raises(RemoteCommandError, match=r"here: `sleep 30` timed out after 0.5s"):
        t.run(Command.argv("sleep", "30", timeout=0.5))
    assert time.monotonic() - start < 5


def test_local_put_get_resume(tmp_path: Path) -> None:
    t = LocalTransport()
    data = os.urandom(3 * 1024 * 1024 + 17)
    src = tmp_path / "src"
    src.write_bytes(data)
    dst = str(tmp_path / "dst")
    assert t.put(data[:1000], dst, mode=0o600) == 1000
    assert t.stat(dst) is not None and t.stat(dst).mode == 0o600  # type: ignore[union-attr]
    seen: list[int] = []
    assert t.put(src, dst, offset=1000, mode=0o600, progress=seen.append) == len(data) - 1000
    assert sum(seen) == len(data) - 1000
    assert t.get(dst) == data
    assert t.size(str(tmp_path / "nope")) is None
    with pytest.raises(RemoteCommandError, match="cannot resume"):
        t.put(src, dst, offset=len(data) + 5)
