"""The parts of a split bundle read as one stream, pinned: read sizes, reading through a
BufferedReader, a part truncated or removed while being read, hashing for join, and
which part is blamed when the reader fails. Exact messages; real files.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from mk8s.bundle.format.parts import PartRejected, find_bad_part
from mk8s.bundle.format.partstream import CHUNK, PartsReader, open_parts
from mk8s.errors import BundleRejected, OutputError
from tests.support.bundles import split_data

NAME = "b.tar.zst"
AGAIN = "copy that part again from the original medium"
DATA = bytes(range(256)) * 2  # 512 bytes: parts of 200, 200, 112


def _flip(path: Path, at: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- hashing the parts ------------------------------------------------------------------------


def test_find_bad_part(tmp_path: Path) -> None:
    data = bytes(range(256)) * (CHUNK // 256) + b"1234567"  # part 0 is read in two chunks
    result = split_data(tmp_path, data, CHUNK + 5)
    paths, ps = list(result.part_paths), result.index.parts
    assert [p.size for p in ps] == [CHUNK + 5, 2]
    assert find_bad_part(paths, ps) is None
    _flip(paths[1])
    bad = find_bad_part(paths, ps)
    assert bad is not None and str(bad) == (
        f"part {NAME}.001 is damaged or out of order: its sha256 is {_sha(paths[1].read_bytes())}, "
        f"the parts index says {ps[1].sha256}; {AGAIN}"
    )
    paths[1].write_bytes(b"678")
    bad = find_bad_part(paths, ps)
    assert (
        bad is not None
        and str(bad) == f"part {NAME}.001 is 3 bytes, the parts index says 2; {AGAIN}"
    )
    paths[0].unlink()  # gone since the check: a missing part, like any other
    with pytest.raises(PartRejected) as e:
        find_bad_part(paths, ps)
    assert str(e.value) == f"part {paths[0]} does not exist; {AGAIN}"


# -- reading the parts ------------------------------------------------------------------------


def test_reader_read_sizes_are_bounded(tmp_path: Path) -> None:
    data = bytes(range(256)) * (CHUNK // 256) + b"1234567"
    result = split_data(tmp_path, data, CHUNK + 5)
    r = PartsReader(result.index, list(result.part_paths))
    got = [r.read(1), r.read(), r.read(None), r.read(CHUNK)]
    assert [len(x) for x in got] == [1, CHUNK, 4, 2]  # never more than asked, nor than CHUNK
    assert b"".join(got) == data and r.read(CHUNK) == b""
    r.close()
    r = PartsReader(result.index, list(result.part_paths))
    assert r.read(1) == data[:1]
    r.close()  # in the middle of a part
    r.close()  # closing twice is fine, as for any file
    assert r.closed


def test_reader_as_a_buffered_stream(tmp_path: Path) -> None:
    result = split_data(tmp_path, DATA, 200)
    raw = open_parts(result.part_paths[0])
    assert raw is not None and raw.readable()
    with io.BufferedReader(raw, buffer_size=64) as f:  # type: ignore[arg-type]
        assert b"".join(iter(lambda: f.read(50), b"")) == DATA  # through readinto
    assert open_parts(tmp_path / "src" / NAME) is None


def test_part_truncated_while_being_read(tmp_path: Path) -> None:
    result = split_data(tmp_path, DATA, 200)
    r = PartsReader(result.index, list(result.part_paths))
    assert r.read(CHUNK) == DATA[:200]
    os.truncate(result.part_paths[1], 20)  # after the check, before its end is read
    assert r.read(CHUNK) == DATA[200:220]
    with pytest.raises(PartRejected) as e:
        r.read(CHUNK)
    assert str(e.value) == (
        f"part {NAME}.001 ended 180 bytes early (it was truncated while being read; the "
        f"parts index says 200 bytes); {AGAIN}"
    )
    r.close()


def test_part_removed_after_the_check(tmp_path: Path) -> None:
    result = split_data(tmp_path, DATA, 200)
    raw = open_parts(result.index_path)
    assert raw is not None
    result.part_paths[1].unlink()
    with raw, pytest.raises(PartRejected) as e:
        while raw.read(CHUNK):
            pass
    assert str(e.value) == f"part {result.part_paths[1]} does not exist; {AGAIN}"


def test_parts_are_hashed_while_read_only_for_join(tmp_path: Path) -> None:
    result = split_data(tmp_path, DATA, 200)
    _flip(result.part_paths[1], 7)
    r = PartsReader(result.index, list(result.part_paths))
    assert len(r.read(CHUNK) + r.read(CHUNK) + r.read(CHUNK)) == len(DATA)  # not hashed
    r.close()
    r = PartsReader(result.index, list(result.part_paths), hash_parts=True)
    assert r.read(CHUNK) == DATA[:200]
    with pytest.raises(PartRejected) as e:
        r.read(CHUNK)
    assert str(e.value) == (
        f"part {NAME}.001 is damaged or out of order: its sha256 is "
        f"{_sha(result.part_paths[1].read_bytes())}, the parts index says "
        f"{result.index.parts[1].sha256}; {AGAIN}"
    )
    r.close()


def test_blame_only_the_parts_read_so_far(tmp_path: Path) -> None:
    """A damaged part the reader has not reached is not blamed: its own error stands."""
    result = split_data(tmp_path, DATA, 200)
    _flip(result.part_paths[2])
    own = BundleRejected("the reader's own error")
    with (
        pytest.raises(BundleRejected) as e,
        PartsReader(result.index, list(result.part_paths)) as r,
    ):
        r.read(10)
        raise own
    assert e.value is own
    damaged = f"^part {NAME}.002 is damaged"
    with (
        pytest.raises(PartRejected, match=damaged),
        PartsReader(result.index, list(result.part_paths)) as r,
    ):
        while r.read(CHUNK):
            pass
        raise own


def test_an_error_not_about_the_bundle_is_not_blamed_on_a_part(tmp_path: Path) -> None:
    result = split_data(tmp_path, DATA, 200)
    _flip(result.part_paths[0])
    disk_full = OutputError("no space left")
    with pytest.raises(OutputError) as e, PartsReader(result.index, list(result.part_paths)) as r:
        r.read(CHUNK)
        raise disk_full
    assert e.value is disk_full
