"""mk8s/files.py: files mk8s writes and reads."""

from __future__ import annotations

import stat
from pathlib import Path


def test_atomic_write_never_follows_a_symlink(tmp_path: Path) -> None:
    from mk8s.files import atomic_write

    target = tmp_path / "victim"
    target.write_text("keep")
    out = tmp_path / "out"
    atomic_write(out, b"new", mode=0o600)
    assert out.read_bytes() == b"new" and stat.S_IMODE(out.stat().st_mode) == 0o600
    assert target.read_text() == "keep"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
