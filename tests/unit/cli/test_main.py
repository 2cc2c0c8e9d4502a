"""mk8s/cli/__init__.py: the one place errors are caught, and the debug log it writes."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest


def test_debug_log_never_follows_a_planted_symlink(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mk8s.cli import _write_debug_log

    target = tmp_path / "victim"
    target.write_text("keep\n")
    state = tmp_path / "state"
    (state / "mk8s").mkdir(parents=True)
    (state / "mk8s" / "debug.log").symlink_to(target)
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    where = _write_debug_log(RuntimeError("boom"))
    assert target.read_text() == "keep\n"
    assert where is not None and where.parent == tmp_path / "tmp"
    assert stat.S_IMODE(where.stat().st_mode) == 0o600
