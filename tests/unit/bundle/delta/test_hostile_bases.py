"""What `bundle create --base` makes of files that are no bundle and no lock: a
directory, a FIFO nobody writes to, a device. Each is refused at once (exit 2) with
what it is; none is waited on."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from mk8s.bundle.delta.create import load_base
from mk8s.errors import InputError, Mk8sError


def _load_within(path: Path, seconds: float) -> BaseException | None:
    """load_base(path) in a thread: its error, or None if it did not return in time
    (a FIFO without a writer blocks ``open`` for ever)."""
    got: list[BaseException] = []

    def load() -> None:
        try:
            load_base(path)
        except BaseException as e:  # handed to the test
            got.append(e)

    t = threading.Thread(target=load, daemon=True)
    t.start()
    t.join(seconds)
    return got[0] if got else None


@pytest.mark.parametrize(
    ("name", "what"),
    [("fifo", "is a FIFO"), ("dir", "is a directory"), ("/dev/zero", "is a device")],
)
def test_odd_files_as_create_base_are_refused_at_once(tmp_path: Path, name: str, what: str) -> None:
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    path = tmp_path / name
    e = _load_within(path, 20)
    assert e is not None, f"--base {path}: still waiting"
    assert isinstance(e, InputError), repr(e)
    assert isinstance(e, Mk8sError) and f"--base {path} {what}" in e.problem, e.problem
