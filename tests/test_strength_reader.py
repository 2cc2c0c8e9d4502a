"""The streaming verifier, pinned: damage INSIDE a complete zstd frame (the frame check
cannot catch it), the size caps, the trailer limit at its boundary, exact messages,
progress and sink order, and extract's free-space check, modes and rollback.

Bundles are the real writer's output; damaged ones are its decompressed tar with bytes
changed at offsets read back with ``tarfile``, compressed again with real zstd.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zstandard

from mk8s.bundle.format import extract, keys, reader, stream, tarfmt
from mk8s.bundle.format.manifest import Artifact, Lock
from mk8s.errors import BundleRejected, InputError, OutputError
from tests.support import bundles

INCOMPLETE = "copy the bundle again; the file is incomplete"
pytestmark = pytest.mark.timeout(120)  # a lost truncation check loops forever


@pytest.fixture(scope="module")
def signer() -> keys.PrivateKey:
    return keys.generate_private_key()


@pytest.fixture(scope="module")
def trusted(signer: keys.PrivateKey) -> list[keys.TrustedKey]:
    return [keys.TrustedKey(Path("mk8s.pub"), signer.public_key())]


@dataclass
class Good:
    path: Path
    raw: bytes  # the decompressed tar, exactly as written
    members: list[tarfile.TarInfo]
    manifest: Lock

    def member(self, name: str) -> tarfile.TarInfo:
        return next(m for m in self.members if m.name == name)

    @property
    def end(self) -> int:
        """Offset just past the last artifact's padding (where end-of-archive starts)."""
        last = self.members[-1]
        return last.offset_data + last.size + tarfmt.padding(last.size)


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory, signer: keys.PrivateKey) -> Good:
    written, lock = bundles.build(tmp_path_factory.mktemp("good"), signer)
    raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(written.path.read_bytes())).read()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        members = tf.getmembers()
    return Good(written.path, raw, members, lock)


def zst(tmp_path: Path, raw: bytes, name: str = "bad.tar.zst") -> Path:
    p = tmp_path / name
    p.write_bytes(zstandard.ZstdCompressor(level=1).compress(raw))
    return p


def patch(raw: bytes, at: int, data: bytes) -> bytes:
    return raw[:at] + data + raw[at + len(data) :]


def rejected(path: Path, trusted: list[keys.TrustedKey], **kw: Any) -> str:
    with pytest.raises(BundleRejected) as e:
        reader.verify_bundle(path, trusted, **kw)
    assert e.value.exit_code == 3
    return str(e.value)


def head_rejected(path: Path) -> str:
    with pytest.raises(BundleRejected) as e:
        reader.read_head(path)
    return str(e.value)


# -- truncation inside a complete zstd frame ------------------------------------------------


def test_cut_inside_an_artifact(tmp_path: Path, good: Good, trusted: list[keys.TrustedKey]) -> None:
    m = good.member("artifacts/install.sh")
    path = zst(tmp_path, good.raw[: m.offset_data + 488])
    assert rejected(path, trusted) == (
        f"member artifacts/install.sh is truncated: expected 1000 bytes, got 488; {INCOMPLETE}"
    )
    reader.read_head(path)  # the head is intact


def test_cut_inside_a_header_and_the_manifest(
    tmp_path: Path, good: Good, trusted: list[keys.TrustedKey]
) -> None:
    m = good.member("artifacts/install.sh")
    path = zst(tmp_path, good.raw[: m.offset + 100])
    assert rejected(path, trusted) == (
        f"the bundle is truncated: the data ends 100 bytes into a member; {INCOMPLETE}"
    )
    path = zst(tmp_path, good.raw[: good.members[0].offset_data + 10])
    assert rejected(path, trusted) == (
        f"the bundle is truncated: the data ends 10 bytes into a member; {INCOMPLETE}"
    )
    assert head_rejected(path) == "the bundle ends inside its first members (truncated)"
    path = zst(tmp_path, good.raw[: good.members[1].offset_data + 3])
    assert head_rejected(path) == "the bundle ends inside its first members (truncated)"


def test_cut_inside_padding(tmp_path: Path, good: Good, trusted: list[keys.TrustedKey]) -> None:
    m = good.member("artifacts/install.sh")
    path = zst(tmp_path, good.raw[: m.offset_data + m.size + 5])
    assert rejected(path, trusted) == (
        f"the bundle is truncated: the data ends 5 bytes into a member; {INCOMPLETE}"
    )


def test_missing_end_of_archive_marker(
    tmp_path: Path, good: Good, trusted: list[keys.TrustedKey]
) -> None:
    for cut in (good.end, good.end + 511):
        assert rejected(zst(tmp_path, good.raw[:cut]), trusted) == (
            f"the archive ends without its end-of-archive marker (truncated); {INCOMPLETE}"
        )


def test_missing_members_are_counted(
    tmp_path: Path, good: Good, trusted: list[keys.TrustedKey]
) -> None:
    last = good.members[-1]
    raw = good.raw[: last.offset] + b"\0" * 1024
    assert rejected(zst(tmp_path, raw), trusted) == (
        f"member {last.name} is missing: the archive ends after {len(good.members) - 1} members"
    )
    empty = zst(tmp_path, b"\0" * tarfmt.RECORD)
    msg = "member mk8s-bundle.json is missing: the archive ends after 0 members"
    assert rejected(empty, trusted) == msg
    assert head_rejected(empty) == msg
    one = zst(tmp_path, good.raw[: good.members[1].offset] + b"\0" * 1024)
    msg = "member mk8s-bundle.json.sig is missing: the archive ends after 1 members"
    assert rejected(one, trusted) == msg
    assert head_rejected(one) == msg


# -- what follows the last artifact ---------------------------------------------------------


def test_garbage_after_the_last_member(
    tmp_path: Path, good: Good, trusted: list[keys.TrustedKey]
) -> None:
    raw = patch(good.raw, good.end, b"garbage".ljust(512, b"x"))
    assert rejected(zst(tmp_path, raw), trusted) == "unexpected data after the last artifact"
    extra = tarfmt.file_header("artifacts/zzz", 1, 0) + b"z".ljust(512, b"\0")
    raw = good.raw[: good.end] + extra + b"\0" * 1024
    assert rejected(zst(tmp_path, raw), trusted) == (
        "unexpected member 'artifacts/zzz' after the last artifact "
        "(a member was added or duplicated)"
    )


APPENDED = "unexpected data after the end of the archive; do not use this bundle; bytes were appended to it"


def test_trailer_limit_at_its_boundary(
    tmp_path: Path, good: Good, trusted: list[keys.TrustedKey]
) -> None:
    first = good.end + tarfmt.BLOCK  # the first end-of-archive block is read as a header
    at_limit = good.raw[:first] + b"\0" * reader.MAX_TRAILER
    reader.verify_bundle(zst(tmp_path, at_limit, "ok.tar.zst"), trusted)
    over = at_limit + b"\0"
    assert rejected(zst(tmp_path, over), trusted) == APPENDED
    nonzero = good.raw[:first] + b"\0" * 100 + b"\x01" + b"\0" * 100
    assert rejected(zst(tmp_path, nonzero), trusted) == APPENDED
    only_one_block = good.raw[:first]
    reader.verify_bundle(zst(tmp_path, only_one_block, "one.tar.zst"), trusted)


@pytest.mark.parametrize("offset", [-1, 0, 1, 512])
def test_trailer_over_the_limit_whatever_the_chunking(
    tmp_path: Path, good: Good, trusted: list[keys.TrustedKey], offset: int
) -> None:
    """Decompressed data arrives in 1 MiB chunks: zeros running past a chunk boundary,
    well beyond the limit, are refused wherever the boundary falls."""
    first = good.end + tarfmt.BLOCK
    limit_at = first + reader.MAX_TRAILER
    total = stream.CHUNK * (limit_at // stream.CHUNK + 1) + offset + 4096
    raw = good.raw[:first] + b"\0" * (total - first)
    assert rejected(zst(tmp_path, raw), trusted) == APPENDED


# -- padding and header damage ---------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["mk8s-bundle.json", "mk8s-bundle.json.sig", "artifacts/install.sh"]
)
def test_nonzero_bytes_in_padding(
    tmp_path: Path, good: Good, trusted: list[keys.TrustedKey], name: str
) -> None:
    m = good.member(name)
    assert tarfmt.padding(m.size) > 5
    raw = patch(good.raw, m.offset_data + m.size + 3, b"\x01")
    path = zst(tmp_path, raw)
    msg = f"member {name}: non-zero bytes hidden in the tar padding"
    assert rejected(path, trusted) == msg
    if name.startswith("mk8s-"):
        assert head_rejected(path) == msg


def test_bad_header_checksum_names_the_member(
    tmp_path: Path, good: Good, trusted: list[keys.TrustedKey]
) -> None:
    for index, m in ((1, good.members[0]), (2, good.members[1]), (3, good.members[2])):
        raw = patch(good.raw, m.offset + 5, bytes([good.raw[m.offset + 5] ^ 1]))
        path = zst(tmp_path, raw)
        msg = (
            f"member {index} (expected {m.name}): header checksum does not match (not a tar header)"
        )
        assert rejected(path, trusted) == msg
        if index < 3:
            assert head_rejected(path) == msg


def _rename(raw: bytes, m: tarfile.TarInfo, name: bytes) -> bytes:
    block = bytearray(raw[m.offset : m.offset + 512])
    block[0:100] = name.ljust(100, b"\0")
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return patch(raw, m.offset, bytes(block))


@pytest.mark.parametrize("index", [1, 2, 3])
def test_wrong_and_unsafe_names_name_the_index(
    tmp_path: Path, good: Good, trusted: list[keys.TrustedKey], index: int
) -> None:
    m = good.members[index - 1]
    path = zst(tmp_path, _rename(good.raw, m, b"other"))
    msg = (
        f"member {index}: expected {m.name}, found 'other' "
        "(a member was added, removed, renamed or reordered)"
    )
    assert rejected(path, trusted) == msg
    if index < 3:
        assert head_rejected(path) == msg
    for bad in (b"/abs", b"artifacts/../x", b"artifacts\\x"):
        path = zst(tmp_path, _rename(good.raw, m, bad))
        msg = f"member {index} has an unsafe path {bad.decode()!r} (absolute or with '..')"
        assert rejected(path, trusted) == msg


def test_size_and_hash_mismatch_messages(
    tmp_path: Path, good: Good, signer: keys.PrivateKey, trusted: list[keys.TrustedKey]
) -> None:
    ms = bundles.read_members(good.path)
    i = next(n for n, m in enumerate(ms) if m.name == "artifacts/install.sh")
    art = next(a for a in good.manifest.artifacts if a.path == "artifacts/install.sh")
    short = [*ms[:i], bundles.Member(ms[i].name, ms[i].data[:-1]), *ms[i + 1 :]]
    assert rejected(bundles.craft(tmp_path / "s.tar.zst", short), trusted) == (
        "member artifacts/install.sh: size 999 differs from the manifest's 1000"
    )
    flipped = bytes([ms[i].data[0] ^ 1]) + ms[i].data[1:]
    other = [*ms[:i], bundles.Member(ms[i].name, flipped), *ms[i + 1 :]]
    got = hashlib.sha256(flipped).hexdigest()
    assert rejected(bundles.craft(tmp_path / "h.tar.zst", other), trusted) == (
        f"member artifacts/install.sh: sha256 {got} differs from the manifest's {art.sha256}; "
        "do not use this bundle; it was damaged or altered"
    )


# -- the size caps of the head ----------------------------------------------------------------


def _with_manifest(good: Good, signer: keys.PrivateKey, manifest: bytes) -> list[bundles.Member]:
    ms = bundles.read_members(good.path)
    ms[0] = bundles.Member(ms[0].name, manifest)
    return bundles.sign_members(ms, signer)


def test_manifest_cap_at_and_over_its_limit(
    tmp_path: Path, good: Good, signer: keys.PrivateKey, trusted: list[keys.TrustedKey]
) -> None:
    base = good.manifest.to_bytes()
    at_limit = base + b" " * (reader.MAX_MANIFEST - len(base))
    path = bundles.craft(tmp_path / "big.tar.zst", _with_manifest(good, signer, at_limit))
    v = reader.verify_bundle(path, trusted)
    assert len(v.manifest_bytes) == reader.MAX_MANIFEST
    assert reader.read_head(path).problem is None
    over = tarfmt.file_header("mk8s-bundle.json", reader.MAX_MANIFEST + 1, 0) + b"{" * 512
    path = zst(tmp_path, over)
    msg = "member mk8s-bundle.json is 16777217 bytes, over 16777216"
    assert rejected(path, trusted) == msg
    assert head_rejected(path) == msg


# -- what a good bundle gives back ------------------------------------------------------------


class RecordingSink:
    def __init__(self, events: list[tuple[str, Any]]) -> None:
        self.events = events
        self.data: dict[str, bytearray] = {}

    def begin(self, artifact: Artifact) -> None:
        self.events.append(("begin", artifact.path))
        self.data[artifact.path] = bytearray()

    def write(self, data: memoryview) -> None:
        self.data[list(self.data)[-1]] += data

    def end(self, artifact: Artifact) -> None:
        self.events.append(("end", artifact.path))


def test_verified_bundle_progress_and_sink_order(
    good: Good, trusted: list[keys.TrustedKey]
) -> None:
    events: list[tuple[str, Any]] = []
    sink = RecordingSink(events)
    progress: list[tuple[int, int]] = []
    v = reader.verify_bundle(
        good.path,
        trusted,
        sink=sink,
        before_artifacts=lambda m: events.append(("before", m.total_size)),
        progress=lambda done, total: progress.append((done, total)),
    )
    data = good.path.read_bytes()
    assert v.path == good.path
    assert v.file_size == len(data) and v.file_sha256 == hashlib.sha256(data).hexdigest()
    assert v.manifest == good.manifest and v.manifest_bytes == good.manifest.to_bytes()
    assert v.signature_bytes == good.raw[good.members[1].offset_data :][: good.members[1].size]
    assert v.bundle_id == hashlib.sha256(v.manifest_bytes).hexdigest()[:16]
    total = good.manifest.total_size
    assert events[0] == ("before", total)
    paths = [a.path for a in good.manifest.artifacts]
    assert events[1:] == [e for p in paths for e in (("begin", p), ("end", p))]
    for a in good.manifest.artifacts:
        assert hashlib.sha256(sink.data[a.path]).hexdigest() == a.sha256
    assert progress[-1] == (total, total)
    assert all(t == total for _, t in progress)
    dones = [d for d, _ in progress]
    assert dones == sorted(dones) and dones[0] > 0


def test_zero_runs_make_rle_blocks_and_verify(
    tmp_path: Path, signer: keys.PrivateKey, trusted: list[keys.TrustedKey]
) -> None:
    """Long zero runs become RLE blocks (the other test data is incompressible); the
    bundle is bigger than the reader's queue, so producer and consumer really overlap."""
    files = bundles.make_files(tmp_path / "f", {"rke2.linux-amd64.tar.gz": 1000})
    zeros = tmp_path / "f" / "rke2-images.linux-amd64.tar.zst"
    zeros.write_bytes(b"\0" * (24 << 20))
    files[zeros.name] = zeros
    text = tmp_path / "f" / "sha256sum-amd64.txt"
    text.write_bytes(b"0123456789abcdef  some-file.tar.gz\n" * 50_000)
    files[text.name] = text
    written, _ = bundles.build(tmp_path, signer, files=files)
    assert written.path.stat().st_size < 1 << 20
    v = reader.verify_bundle(written.path, trusted)
    assert v.manifest.total_size == (24 << 20) + 1000 + text.stat().st_size
    dest = tmp_path / "out"
    extract.extract_bundle(written.path, trusted, dest)
    assert (dest / "artifacts" / zeros.name).read_bytes() == zeros.read_bytes()


def test_stream_errors(tmp_path: Path, good: Good, trusted: list[keys.TrustedKey]) -> None:
    data = bytearray(good.path.read_bytes())
    data[0] ^= 0xFF
    bad = tmp_path / "magic.tar.zst"
    bad.write_bytes(bytes(data))
    fix = "get the bundle again; the file was damaged or altered"
    assert rejected(bad, trusted) == f"not a zstd file (bad magic number); {fix}"
    # inspect does not walk the frame; zstd itself refuses the header
    assert head_rejected(bad).startswith("the zstd stream is corrupt in the bundle head (")
    # Damage inside a compressed block: zstd itself reports it.
    comp = zstandard.ZstdCompressor(level=3, write_checksum=True).compress(good.raw)
    broken = bytearray(comp)
    for at in range(40, 60):
        broken[at] ^= 0x55
    bad.write_bytes(bytes(broken))
    msg = rejected(bad, trusted)
    assert msg.startswith("the zstd stream is corrupt  (") and msg.endswith(f"); {fix}")
    head = head_rejected(bad)
    assert head.startswith("the zstd stream is corrupt in the bundle head (")
    assert head.endswith(f"); {fix}")


def test_open_errors(tmp_path: Path, trusted: list[keys.TrustedKey]) -> None:
    with pytest.raises(InputError) as e:
        reader.verify_bundle(tmp_path / "none.tar.zst", trusted)
    assert str(e.value) == (
        f"bundle {tmp_path / 'none.tar.zst'} does not exist; give the bundle file"
    )
    with pytest.raises(InputError) as e:
        reader.read_head(tmp_path)
    assert str(e.value) == (
        f"bundle {tmp_path} is a directory, not a regular file; give the bundle file"
    )


def test_head_problems_are_collected(tmp_path: Path, good: Good, signer: keys.PrivateKey) -> None:
    assert reader.read_head(good.path).problem is None
    ms = bundles.read_members(good.path)
    obj = json.loads(ms[0].data)
    obj["rke2"]["requested"] = "x" * 30  # fails nothing: inspect does not validate
    ms[0] = bundles.Member(ms[0].name, json.dumps(obj).encode())
    head = reader.read_head(bundles.craft(tmp_path / "s.tar.zst", ms))
    assert head.manifest is not None and head.manifest.release.requested == "x" * 30
    assert head.problem is None
    obj["rke2"]["arch"] = ["sparc"]  # the model's own invariants still hold without it
    ms[0] = bundles.Member(ms[0].name, json.dumps(obj).encode())
    head = reader.read_head(bundles.craft(tmp_path / "a.tar.zst", ms))
    assert head.manifest is None and head.problem is not None
    assert "rke2.arch must list amd64 and/or arm64" in head.problem
    ms[0] = bundles.Member(ms[0].name, b"{not json")
    ms[1] = bundles.Member(ms[1].name, b"junk")
    head = reader.read_head(bundles.craft(tmp_path / "j.tar.zst", ms))
    assert head.manifest is None and head.signature is None
    assert head.problem is not None
    first, second = head.problem.split("; the bundle was not written by mk8s or was altered; ")
    assert first.startswith("mk8s-bundle.json is not valid JSON (")
    assert second == "signature member is not a mk8s signature (bad header)"


# -- extract ----------------------------------------------------------------------------------


class _Statvfs:
    def __init__(self, free: int) -> None:
        self.f_bavail = free
        self.f_frsize = 1


def _limit_free_space(monkeypatch: pytest.MonkeyPatch, free: int) -> None:
    """Report ``free`` bytes for the extract destination. (A small filesystem needs root
    to mount; this is the one place the test stands in for the OS.)"""
    monkeypatch.setattr(extract.os, "statvfs", lambda path: _Statvfs(free))


def test_extract_free_space_at_and_below_the_need(
    tmp_path: Path, good: Good, trusted: list[keys.TrustedKey], monkeypatch: pytest.MonkeyPatch
) -> None:
    need = good.manifest.total_size
    _limit_free_space(monkeypatch, need)
    extract.extract_bundle(good.path, trusted, tmp_path / "exact")
    assert (tmp_path / "exact" / "artifacts" / "install.sh").is_file()

    _limit_free_space(monkeypatch, need - 1)
    dest = tmp_path / "small"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    seen: list[list[str]] = []

    def watch(done: int, total: int) -> None:
        seen.append(sorted(p.name for p in dest.rglob("*") if p.is_file()))

    with pytest.raises(OutputError) as e:
        extract.extract_bundle(good.path, trusted, dest, progress=watch)
    assert str(e.value) == (
        f"{dest} has {need - 1} bytes free; the bundle needs {need}; "
        "free some space or extract elsewhere"
    )
    assert seen and all(files == ["keep.txt"] for files in seen)  # nothing was written
    assert sorted(p.name for p in dest.iterdir()) == ["keep.txt"]


def test_extract_with_too_little_space_still_rejects_a_lying_bundle(
    tmp_path: Path,
    good: Good,
    signer: keys.PrivateKey,
    trusted: list[keys.TrustedKey],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ms = bundles.read_members(good.path)
    obj = json.loads(ms[0].data)
    obj["artifacts"][2]["size"] = 10**12
    ms[0] = bundles.Member(ms[0].name, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())
    path = bundles.craft(tmp_path / "lie.tar.zst", bundles.sign_members(ms, signer))
    _limit_free_space(monkeypatch, 1 << 30)
    with pytest.raises(BundleRejected, match="differs from the manifest's 1000000000000"):
        extract.extract_bundle(path, trusted, tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_extract_modes(
    tmp_path: Path, signer: keys.PrivateKey, trusted: list[keys.TrustedKey]
) -> None:
    files = bundles.make_files(
        tmp_path / "f", {"install.sh": 10, "mk8s-linux-amd64": 20, "notes.txt": 5}
    )
    lock = bundles.lock_for(
        files, {"install.sh": "install-script", "mk8s-linux-amd64": "mk8s", "notes.txt": "file"}
    ).as_manifest()
    from mk8s.bundle.format.writer import write_bundle

    out = tmp_path / "b.tar.zst"
    by_path = {a.path: files[a.name] for a in lock.artifacts}
    write_bundle(lock, by_path, out, lambda b: keys.sign(signer, b))
    dest = tmp_path / "x" / "y" / "z"  # parents are created
    extract.extract_bundle(out, trusted, dest)
    modes = {p.name: p.stat().st_mode & 0o777 for p in dest.rglob("*") if p.is_file()}
    assert modes["install.sh"] == 0o755 and modes["mk8s-linux-amd64"] == 0o755
    assert not modes["notes.txt"] & 0o111
    assert not modes["mk8s-bundle.json"] & 0o111
    assert not [p for p in dest.iterdir() if p.name.startswith(".mk8s-extract")]


def test_extract_refusals(tmp_path: Path, good: Good, trusted: list[keys.TrustedKey]) -> None:
    dest = tmp_path / "d"
    dest.mkdir()
    (dest / "artifacts").mkdir()
    with pytest.raises(OutputError) as e:
        extract.extract_bundle(good.path, trusted, dest)
    assert str(e.value) == f"{dest / 'artifacts'} already exists; extract into an empty directory"
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(OutputError) as e:
        extract.extract_bundle(good.path, trusted, afile / "sub")
    assert str(e.value).startswith(f"cannot create {afile / 'sub'}: Not a directory")


@pytest.mark.parametrize("fresh", [False, True], ids=["existing-dest", "fresh-dest"])
def test_extract_rolls_back_moved_files(
    tmp_path: Path, good: Good, trusted: list[keys.TrustedKey], fresh: bool
) -> None:
    """The manifest and signature are moved into place before ``artifacts``; when that
    last move fails, the first two are taken away again."""
    dest = tmp_path / "d"
    if not fresh:
        dest.mkdir()
        (dest / "keep.txt").write_text("mine")

    def occupy(done: int, total: int) -> None:
        # Someone else creates dest/artifacts while the bundle is being verified.
        (dest / "artifacts").mkdir(exist_ok=True)
        (dest / "artifacts" / "theirs").write_text("x")

    with pytest.raises(OutputError) as e:
        extract.extract_bundle(good.path, trusted, dest, progress=occupy)
    assert str(e.value) == f"cannot extract into {dest}: Directory not empty"
    if fresh:
        assert not dest.exists()
    else:
        assert sorted(p.name for p in dest.iterdir()) == ["artifacts", "keep.txt"]
        assert [p.name for p in (dest / "artifacts").iterdir()] == ["theirs"]


def test_verify_and_extract_need_the_signature(
    tmp_path: Path, good: Good, trusted: list[keys.TrustedKey]
) -> None:
    unsigned_raw = good.raw
    written, _ = bundles.build(tmp_path, None)
    with pytest.raises(BundleRejected, match="unsigned"):
        extract.extract_bundle(written.path, trusted, tmp_path / "u")
    assert not (tmp_path / "u").exists()
    v = extract.extract_bundle(written.path, [], tmp_path / "ok", allow_unsigned=True)
    assert v.signer is None and unsigned_raw
    assert os.path.isdir(tmp_path / "ok" / "artifacts")


def test_manifest_of_a_lock_is_refused_with_the_fix(
    tmp_path: Path, good: Good, signer: keys.PrivateKey, trusted: list[keys.TrustedKey]
) -> None:
    path = bundles.craft(
        tmp_path / "lock.tar.zst", _with_manifest(good, signer, good.manifest.as_lock().to_bytes())
    )
    assert rejected(path, trusted) == (
        "mk8s-bundle.json is a mk8s.lock, not a bundle manifest; "
        "the bundle was not written by mk8s or was altered"
    )


def test_a_slow_consumer_does_not_stall_the_stream(
    tmp_path: Path, signer: keys.PrivateKey, trusted: list[keys.TrustedKey]
) -> None:
    """The decompressing thread waits for queue space while the consumer is busy (here
    a sink that stalls once); it must neither give up nor drop data."""
    import time as _time

    files = bundles.make_files(tmp_path / "f", {"install.sh": 100})
    big = tmp_path / "f" / "rke2-images.linux-amd64.tar.zst"
    big.write_bytes(b"\0" * (16 << 20))
    files[big.name] = big
    written, _ = bundles.build(tmp_path, signer, files=files)

    class Slow(RecordingSink):
        stalled = False

        def write(self, data: memoryview) -> None:
            if not self.stalled:
                self.stalled = True
                _time.sleep(0.5)
            super().write(data)

    sink = Slow([])
    reader.verify_bundle(written.path, trusted, sink=sink)
    assert bytes(sink.data["artifacts/" + big.name]) == big.read_bytes()


def test_trailer_limit_across_a_chunk_boundary(
    tmp_path: Path, signer: keys.PrivateKey, trusted: list[keys.TrustedKey]
) -> None:
    """Decompressed data arrives in CHUNK pieces. Place a chunk boundary exactly
    MAX_TRAILER bytes after the first end-of-archive block: zeros running past it are
    still counted, whichever piece they arrive in."""

    def first_after_archive(filler: int) -> tuple[bytes, int]:
        d = tmp_path / f"b{filler}"
        files = bundles.make_files(d / "f", {"install.sh": 100, "filler.bin": filler})
        w, _ = bundles.build(d, signer, files=files)
        raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(w.path.read_bytes())).read()
        with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
            last = tf.getmembers()[-1]
        return raw, last.offset_data + last.size + tarfmt.padding(last.size) + tarfmt.BLOCK

    _, first0 = first_after_archive(0)
    shift = (stream.CHUNK - reader.MAX_TRAILER - first0) % stream.CHUNK
    raw, first = first_after_archive(shift)
    assert (first + reader.MAX_TRAILER) % stream.CHUNK == 0
    ok = raw[:first] + b"\0" * reader.MAX_TRAILER
    reader.verify_bundle(zst(tmp_path, ok, "ok.tar.zst"), trusted)
    over = ok + b"\0" * tarfmt.BLOCK
    assert rejected(zst(tmp_path, over), trusted) == APPENDED


def test_unreadable_bundle_path(tmp_path: Path, trusted: list[keys.TrustedKey]) -> None:
    long = tmp_path / ("x" * 300)
    with pytest.raises(InputError) as e:
        reader.verify_bundle(long, trusted)
    assert str(e.value) == f"cannot read bundle {long}: File name too long; give the bundle file"


def test_name_with_a_suffix_is_another_name(
    tmp_path: Path, good: Good, trusted: list[keys.TrustedKey]
) -> None:
    m = good.member("artifacts/install.sh")
    path = zst(tmp_path, _rename(good.raw, m, b"artifacts/install.shX"))
    index = good.members.index(m) + 1
    assert rejected(path, trusted) == (
        f"member {index}: expected artifacts/install.sh, found 'artifacts/install.shX' "
        "(a member was added, removed, renamed or reordered)"
    )


def test_a_regular_member_named_like_a_directory_is_refused(
    tmp_path: Path, good: Good, trusted: list[keys.TrustedKey]
) -> None:
    """GNU tar extracts a regular member named ``x/`` as a directory: refuse it."""
    m = good.member("artifacts/install.sh")
    path = zst(tmp_path, _rename(good.raw, m, b"artifacts/install.sh/"))
    assert rejected(path, trusted) == (
        "member artifacts/install.sh is named 'artifacts/install.sh/', like a directory"
    )


# -- defaults that must stay strict ------------------------------------------------------------


def test_verify_checks_a_signed_manifest_against_the_schema(
    tmp_path: Path, good: Good, signer: keys.PrivateKey, trusted: list[keys.TrustedKey]
) -> None:
    """The invariants accept an unknown field; the schema (run by verify, not by
    read_head) refuses it, even when the manifest is signed."""
    obj = json.loads(good.manifest.to_bytes())
    obj["extra"] = 1
    edited = (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()
    path = bundles.craft(tmp_path / "x.tar.zst", _with_manifest(good, signer, edited))
    assert rejected(path, trusted) == (
        "mk8s-bundle.json: (top level): Additional properties are not allowed ('extra' was"
        " unexpected); the bundle was not written by mk8s or was altered"
    )
    assert reader.read_head(path).problem is None


def test_extract_refuses_an_unsigned_bundle_by_default(
    tmp_path: Path, trusted: list[keys.TrustedKey]
) -> None:
    written, _ = bundles.build(tmp_path, None)
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(BundleRejected) as e:
        extract.extract_bundle(written.path, trusted, dest)
    assert "unsigned" in str(e.value)
    assert list(dest.iterdir()) == []
    v = extract.extract_bundle(written.path, trusted, dest, allow_unsigned=True)
    assert v.signer is None and (dest / "mk8s-bundle.json").is_file()
