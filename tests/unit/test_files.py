"""mk8s/files.py: files mk8s writes and reads."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest

from mk8s.bundle.format import parts
from mk8s.errors import InputError
from mk8s.files import BoundedReader, read_regular


def test_atomic_write_never_follows_a_symlink(tmp_path: Path) -> None:
    from mk8s.files import atomic_write

    target = tmp_path / "victim"
    target.write_text("keep")
    out = tmp_path / "out"
    atomic_write(out, b"new", mode=0o600)
    assert out.read_bytes() == b"new" and stat.S_IMODE(out.stat().st_mode) == 0o600
    assert target.read_text() == "keep"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


# -- bounded reads, pinned at their edges ------------------------------------------------
def test_bounded_reader_counts_every_byte() -> None:
    r = BoundedReader(io.BytesIO(b"abcdef"), 6, lambda: InputError("over"))
    assert r.read(4) == b"abcd" and r.left == 2
    assert r.read() == b"ef" and r.left == 0
    r = BoundedReader(io.BytesIO(b"abcdef"), 5, lambda: InputError("over"))
    with pytest.raises(InputError, match="over"):
        r.read()


def test_read_regular_too_large_may_be_another_error(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"12345")
    assert read_regular(p, what="x", max_size=5) == b"12345"
    with pytest.raises(parts.PartRejected) as e:
        read_regular(p, what="x", max_size=4, too_large=parts.PartRejected)
    assert e.value.exit_code == 3
    assert str(e.value) == f"x {p} is larger than 4 bytes; this cannot be a x; check the path"
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(InputError, match="is a FIFO") as e2:
        read_regular(tmp_path / "fifo", what="x", max_size=4, too_large=parts.PartRejected)
    assert e2.value.exit_code == 2


def test_atomic_writer_leaves_the_old_file_and_no_temporary_on_failure(tmp_path: Path) -> None:
    """A download cut off (here: an error raised mid-write) keeps what was there."""
    from mk8s.files import atomic_writer

    out = tmp_path / "snap"
    out.write_bytes(b"old")
    with pytest.raises(OSError, match="cut"), atomic_writer(out, mode=0o600) as f:
        f.write(b"half of the new")
        raise OSError("cut")
    assert out.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["snap"]
    with atomic_writer(out, mode=0o600) as f:
        f.write(b"new")
    assert out.read_bytes() == b"new" and stat.S_IMODE(out.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["snap"]
