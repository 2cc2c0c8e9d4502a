"""Split and join, pinned: every refusal with its exact message, the part-count and
part-size boundaries, where a join writes, and that a failure (signing, a full disk)
leaves nothing behind. Real files throughout; a full disk is the kernel's own file-size
limit (RLIMIT_FSIZE), not a fake.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import resource
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mk8s.bundle.format import keys, split
from mk8s.bundle.format.parts import PartRejected
from mk8s.bundle.format.partstream import CHUNK
from mk8s.bundle.format.split import JoinResult, join_parts, split_bundle
from mk8s.errors import InputError, OutputError
from tests.support.bundles import split_data

NAME = "b.tar.zst"
DATA = bytes(range(256)) * 2  # 512 bytes


def _unsigned(data: bytes) -> keys.Signature:
    return keys.unsigned()


def _src(tmp_path: Path, data: bytes = DATA, name: str = NAME) -> Path:
    src = tmp_path / name
    src.write_bytes(data)
    return src


@contextlib.contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """Writes past ``limit`` bytes fail with EFBIG, as on a full disk (Python ignores
    SIGXFSZ, so the write returns the error)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


# -- split ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [f"{NAME}.001", f"{NAME}.parts"])
def test_split_refuses_a_part_or_an_index(tmp_path: Path, name: str) -> None:
    src = _src(tmp_path, name=name)
    with pytest.raises(InputError) as e:
        split_bundle(src, 100, _unsigned)
    assert str(e.value) == (
        f"{src} is a part or index of a split bundle; join it first (`mk8s bundle join`), "
        "then split the bundle"
    )


def test_split_refuses_a_missing_or_empty_bundle(tmp_path: Path) -> None:
    src = tmp_path / NAME
    with pytest.raises(OutputError) as e:
        split_bundle(src, 100, _unsigned, out=tmp_path / "o" / NAME)
    assert str(e.value) == f"directory {tmp_path / 'o'} does not exist; create it or choose -o"
    with pytest.raises(InputError) as e:
        split_bundle(src, 100, _unsigned, out=tmp_path / "x.tar.zst")
    assert str(e.value) == f"bundle {src} does not exist; give the bundle file"
    src.write_bytes(b"")
    with pytest.raises(InputError) as e:
        split_bundle(src, 100, _unsigned, out=tmp_path / "x.tar.zst")
    assert str(e.value) == f"{src} is empty, not a bundle"
    assert sorted(os.listdir(tmp_path)) == [NAME]


@pytest.fixture
def memory_path(tmp_path: Path) -> Iterator[Path]:
    """A fresh directory in memory (tmpfs) when there is one: 1000 parts means 1000
    fsyncs, seconds on a busy disk and nothing on tmpfs. Otherwise ``tmp_path``."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    folder = Path(tempfile.mkdtemp(prefix="mk8s-test-", dir=shm))
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


def test_split_into_at_most_1000_parts(memory_path: Path) -> None:
    tmp_path = memory_path
    src = _src(tmp_path, bytes(1001))
    (tmp_path / "o").mkdir()
    with pytest.raises(InputError) as e:
        split_bundle(src, 1, _unsigned, out=tmp_path / "o" / NAME)
    assert str(e.value) == (
        f"--split 1 would cut {NAME} into 1001 parts; at most 1000 are allowed; choose a "
        "larger part size"
    )
    src.write_bytes(bytes(range(250)) * 4)
    result = split_bundle(src, 1, _unsigned, out=tmp_path / "o" / NAME)
    assert len(result.part_paths) == 1000
    assert [p.read_bytes() for p in result.part_paths[:3]] == [b"\0", b"\1", b"\2"]


def test_split_result(tmp_path: Path, ed_key: keys.PrivateKey) -> None:
    signed = split_data(tmp_path / "s", DATA, 200, ed_key)
    folder = tmp_path / "s" / "parts"
    assert (signed.index_path, signed.signature_path) == (
        folder / f"{NAME}.parts",
        folder / f"{NAME}.parts.sig",
    )
    assert signed.part_paths == tuple(folder / f"{NAME}.{i:03d}" for i in range(3))
    assert signed.signed is True
    assert split_data(tmp_path / "u", DATA, 200).signed is False
    signed.remove()
    assert os.listdir(folder) == []
    signed.remove()  # cleanup code may run twice


@pytest.mark.parametrize(
    ("size", "part_size", "sizes"),
    [
        (3, 1, [1, 1, 1]),  # one byte per part
        (CHUNK + 7, CHUNK + 5, [CHUNK + 5, 2]),  # a part read in two chunks
    ],
)
def test_split_part_sizes(tmp_path: Path, size: int, part_size: int, sizes: list[int]) -> None:
    data = (bytes(range(256)) * (size // 256 + 1))[:size]
    result = split_data(tmp_path, data, part_size)
    assert [p.size for p in result.index.parts] == sizes
    assert [p.stat().st_size for p in result.part_paths] == sizes
    assert b"".join(p.read_bytes() for p in result.part_paths) == data


def test_split_refuses_to_replace_without_force(tmp_path: Path) -> None:
    src = _src(tmp_path)
    out = tmp_path / "o"
    out.mkdir()
    taken = out / f"{NAME}.parts"
    taken.write_bytes(b"old")
    for check in (
        lambda: split.check_free(out / NAME),
        lambda: split_bundle(src, 200, _unsigned, out=out / NAME),
    ):
        with pytest.raises(OutputError) as e:
            check()
        assert str(e.value) == f"{taken} already exists; pass --force to replace it"
    (out / f"{NAME}.007").write_bytes(b"stale")  # a part of an earlier split
    result = split_bundle(src, 200, _unsigned, out=out / NAME, force=True)
    assert sorted(os.listdir(out)) == sorted(p.name for p in split.outputs(out / NAME, 3))
    assert result.index_path.read_bytes() == result.index.to_bytes()


def test_outputs_of_a_missing_directory(tmp_path: Path) -> None:
    bundle = tmp_path / "nowhere" / NAME
    assert split.outputs(bundle) == [
        bundle.with_name(f"{NAME}.parts"),
        bundle.with_name(f"{NAME}.parts.sig"),
    ]


def test_split_that_fails_leaves_nothing(tmp_path: Path) -> None:
    src = _src(tmp_path)
    out = tmp_path / "o"
    out.mkdir()

    def refuse(data: bytes) -> keys.Signature:
        raise InputError("no key")

    with pytest.raises(InputError, match="^no key$"):
        split_bundle(src, 200, refuse, out=out / NAME)
    assert os.listdir(out) == []
    with file_size_limit(100), pytest.raises(OutputError) as e:
        split_bundle(src, 200, _unsigned, out=out / NAME)
    assert str(e.value) == f"cannot write the parts of {NAME}: File too large"
    assert os.listdir(out) == []


def test_output_error_messages() -> None:
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert str(split._output_error(full, f"the parts of {NAME}")) == (
        f"no space left on the device writing the parts of {NAME}; free some space or "
        "write them elsewhere with -o"
    )
    assert str(split._output_error(OSError("odd"), NAME)) == f"cannot write {NAME}: odd"


# -- join -------------------------------------------------------------------------------------


def test_join_where_it_writes(tmp_path: Path) -> None:
    result = split_data(tmp_path, DATA, 200)
    sha = hashlib.sha256(DATA).hexdigest()
    beside = tmp_path / "parts" / NAME
    assert join_parts(result.part_paths[0]) == JoinResult(beside, len(DATA), sha, 3)
    assert beside.read_bytes() == DATA
    (tmp_path / "d").mkdir()
    for out, target in ((tmp_path / "d", tmp_path / "d" / NAME), (tmp_path / "j", tmp_path / "j")):
        assert join_parts(result.index_path, out).path == target
        assert target.read_bytes() == DATA


def test_join_refuses_to_replace_without_force(tmp_path: Path) -> None:
    result = split_data(tmp_path, DATA, 200)
    target = tmp_path / "j"
    for make in (lambda: target.write_bytes(b"old"), lambda: target.symlink_to("nowhere")):
        make()
        with pytest.raises(OutputError) as e:
            join_parts(result.index_path, target)
        assert str(e.value) == f"{target} already exists; pass --force to replace it, or -o"
        target.unlink()
    target.write_bytes(b"old")
    join_parts(result.index_path, target, force=True)
    assert target.read_bytes() == DATA


def test_join_of_a_plain_bundle(tmp_path: Path) -> None:
    src = _src(tmp_path)
    with pytest.raises(InputError) as e:
        join_parts(src)
    assert str(e.value) == (
        f"{src} is not a split bundle (no parts index); give the .parts file or the first "
        "part (.000)"
    )


def test_join_checks_the_whole_bundle_hash(tmp_path: Path) -> None:
    """Every part matches its own hash, but the (unsigned) index names another bundle."""
    result = split_data(tmp_path, DATA, 200)
    doc = json.loads(result.index_path.read_bytes())
    doc["bundle"]["sha256"] = "0" * 64
    result.index_path.write_text(json.dumps(doc))
    with pytest.raises(PartRejected) as e:
        join_parts(result.index_path, tmp_path / "j")
    assert str(e.value) == (
        f"the joined parts hash to {hashlib.sha256(DATA).hexdigest()}, the parts index says "
        f"{'0' * 64}; split the bundle again from the original"
    )
    assert sorted(os.listdir(tmp_path)) == ["parts", "src"]


def test_join_that_fails_leaves_nothing(tmp_path: Path) -> None:
    result = split_data(tmp_path, DATA, 200)
    (tmp_path / "j").mkdir()
    with file_size_limit(300), pytest.raises(OutputError) as e:
        join_parts(result.index_path, tmp_path / "j")
    assert str(e.value) == f"cannot write {tmp_path / 'j' / NAME}: File too large"
    assert os.listdir(tmp_path / "j") == []
