"""mk8s/bundle/format/reader.py: verify and inspect a signed bundle, and every tamper, then the
streaming verifier pinned: damage INSIDE a complete zstd frame (the frame check cannot
catch it), the size caps, the trailer limit at its boundary, exact messages, progress
and sink order. Damaged bundles are the real writer's output with bytes changed at
offsets read back with ``tarfile``, compressed again with real zstd."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
import zstandard

from mk8s.bundle.format import extract, keys, reader, stream, tarfmt
from mk8s.bundle.format.manifest import Artifact
from mk8s.errors import BundleRejected, InputError
from tests.support import bundles
from tests.support.bundles import Member, OpenedBundle
from tests.support.hostile import HOSTILE_VALUES, VALID_CLUSTER, field_paths, replaced_at

pytestmark = pytest.mark.timeout(120)  # a lost truncation check loops forever


def test_verify_ok(good: Path, trusted: list[keys.TrustedKey]) -> None:
    v = reader.verify_bundle(good, trusted)
    assert v.file_sha256 == hashlib.sha256(good.read_bytes()).hexdigest()
    assert v.signer is trusted[0]
    assert v.manifest.release.tag == bundles.TAG


def test_any_of_several_keys(good: Path, trusted: list[keys.TrustedKey]) -> None:
    other = keys.TrustedKey(Path("o.pub"), keys.generate_private_key().public_key())
    assert reader.verify_bundle(good, [other, *trusted]).signer is trusted[0]


# -- tampering -----------------------------------------------------------------------

Tamper = Callable[[list[Member], keys.PrivateKey], list[Member]]


def _flip(data: bytes, at: int) -> bytes:
    b = bytearray(data)
    b[at % len(b)] ^= 0x01
    return bytes(b)


def _flip_member(index: int) -> Tamper:
    def f(ms: list[Member], k: keys.PrivateKey) -> list[Member]:
        ms[index].data = _flip(ms[index].data, len(ms[index].data) // 2)
        return ms

    return f


def _edit_manifest(change: Callable[[dict], None], resign: bool) -> Tamper:  # type: ignore[type-arg]
    def f(ms: list[Member], k: keys.PrivateKey) -> list[Member]:
        obj = json.loads(ms[0].data)
        change(obj)
        ms[0].data = (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()
        return bundles.sign_members(ms, k) if resign else ms

    return f


def _raw_manifest(data: bytes) -> Tamper:
    def f(ms: list[Member], k: keys.PrivateKey) -> list[Member]:
        ms[0].data = data
        return bundles.sign_members(ms, k)

    return f


def _replace(index: int, member: Member) -> Tamper:
    def f(ms: list[Member], k: keys.PrivateKey) -> list[Member]:
        ms[index] = member
        return ms

    return f


def _set_size(obj: dict) -> None:  # type: ignore[type-arg]
    obj["artifacts"][2]["size"] = 10**12


TAMPERS: dict[str, tuple[Tamper, str]] = {
    "flip manifest": (_flip_member(0), "signature"),
    "flip signature": (_flip_member(1), "signature|not a trusted key"),
    "flip signature value": (
        lambda ms, k: [ms[0], Member(ms[1].name, _flip(ms[1].data, -8)), *ms[2:]],
        "signature|base64",
    ),
    **{f"flip artifact {i}": (_flip_member(i), "sha256") for i in range(3, 7)},
    "manifest edited after signing": (
        _edit_manifest(lambda o: o["rke2"].update(tag="v1.29.0+rke2r1"), False),
        "altered",
    ),
    "manifest not json": (_raw_manifest(b"{not json"), "not valid JSON"),
    "manifest fails schema": (
        _edit_manifest(lambda o: o["rke2"].update(arch=["sparc"]), True),
        "rke2.arch",
    ),
    "manifest is a lock": (
        _edit_manifest(lambda o: o.update(kind="mk8s.lock"), True),
        "not a bundle manifest",
    ),
    "manifest declares huge size": (_edit_manifest(_set_size, True), "size"),
    "signature missing": (lambda ms, k: [ms[0], *ms[2:]], "expected mk8s-bundle.json.sig"),
    "signature garbage": (_replace(1, Member("mk8s-bundle.json.sig", b"junk")), "not a mk8s"),
    "signed by another key": (
        lambda ms, k: bundles.sign_members(ms, keys.generate_private_key()),
        "not a trusted",
    ),
    "member added at end": (
        lambda ms, k: [*ms, Member("artifacts/extra", b"x")],
        "after the last artifact",
    ),
    "member added in middle": (
        lambda ms, k: [*ms[:3], Member("artifacts/aaa", b"x"), *ms[3:]],
        "found 'artifacts/aaa'",
    ),
    "member removed": (lambda ms, k: [*ms[:3], *ms[4:]], "expected artifacts/"),
    "last member removed": (lambda ms, k: ms[:-1], "is missing"),
    "member duplicated": (lambda ms, k: [*ms[:4], ms[3], *ms[4:]], "expected"),
    "member renamed": (
        lambda ms, k: [*ms[:3], Member("artifacts/renamed", ms[3].data), *ms[4:]],
        "found 'artifacts/renamed'",
    ),
    "members reordered": (lambda ms, k: [*ms[:3], ms[4], ms[3], *ms[5:]], "reordered"),
    "manifest not first": (lambda ms, k: [ms[1], ms[0], *ms[2:]], "expected mk8s-bundle.json"),
    "absolute path": (lambda ms, k: [*ms[:3], Member("/etc/passwd", b"x"), *ms[3:]], "unsafe path"),
    "dotdot path": (
        lambda ms, k: [*ms[:3], Member("artifacts/../../x", b"x"), *ms[3:]],
        "unsafe path",
    ),
}
for _kind, _flag in [
    ("symbolic link", tarfile.SYMTYPE),
    ("hard link", tarfile.LNKTYPE),
    ("character device", tarfile.CHRTYPE),
    ("FIFO", tarfile.FIFOTYPE),
    ("directory", tarfile.DIRTYPE),
]:
    TAMPERS[f"{_kind} member"] = (
        (
            lambda flag: (
                lambda ms, k: [*ms[:3], Member(ms[3].name, b"", flag, "/etc/passwd"), *ms[4:]]
            )
        )(_flag),
        f"is a {_kind}",
    )


@pytest.fixture(scope="module")
def good_members(good: Path) -> list[Member]:
    return bundles.read_members(good)


def _tampered(
    tmp_path: Path, good_members: list[Member], signer: keys.PrivateKey, tamper: Tamper
) -> Path:
    ms = [Member(m.name, m.data, m.type, m.linkname) for m in good_members]
    return bundles.craft(tmp_path / "bad.tar.zst", tamper(ms, signer))


def test_craft_roundtrip_is_accepted(
    tmp_path: Path,
    good_members: list[Member],
    signer: keys.PrivateKey,
    trusted: list[keys.TrustedKey],
) -> None:
    """The tamper harness itself produces valid bundles when nothing is changed."""
    path = _tampered(tmp_path, good_members, signer, lambda ms, k: ms)
    reader.verify_bundle(path, trusted)


@pytest.mark.parametrize("name", list(TAMPERS))
def test_tampered_member_is_rejected(
    tmp_path: Path,
    good_members: list[Member],
    signer: keys.PrivateKey,
    trusted: list[keys.TrustedKey],
    name: str,
) -> None:
    tamper, message = TAMPERS[name]
    path = _tampered(tmp_path, good_members, signer, tamper)
    with pytest.raises(BundleRejected, match=message) as e:
        reader.verify_bundle(path, trusted)
    assert e.value.exit_code == 3
    _assert_extract_leaves_nothing(path, trusted, tmp_path / "dest")


def _assert_extract_leaves_nothing(path: Path, trusted: list[keys.TrustedKey], dest: Path) -> None:
    dest.mkdir()
    (dest / "keep.txt").write_text("operator's file")
    with pytest.raises(BundleRejected):
        extract.extract_bundle(path, trusted, dest)
    assert sorted(p.name for p in dest.iterdir()) == ["keep.txt"]
    assert (dest / "keep.txt").read_text() == "operator's file"
    fresh = dest.parent / "fresh-dest"
    with pytest.raises(BundleRejected):
        extract.extract_bundle(path, trusted, fresh)
    assert not fresh.exists()


def test_flipped_bits_in_compressed_file(
    tmp_path: Path, good: Path, trusted: list[keys.TrustedKey]
) -> None:
    data = good.read_bytes()
    # (byte 5, the window descriptor's low bit, only changes a memory bound)
    for at in (4, 7, len(data) // 3, len(data) // 2, len(data) - 10, len(data) - 1):
        bad = tmp_path / f"flip{at}.tar.zst"
        bad.write_bytes(_flip(data, at))
        with pytest.raises(BundleRejected):
            reader.verify_bundle(bad, trusted)


@pytest.mark.parametrize("keep", [0.0, 0.01, 0.3, 0.5, 0.9, 0.999, -1, -4])
def test_truncated_file(
    tmp_path: Path, good: Path, trusted: list[keys.TrustedKey], keep: float
) -> None:
    data = good.read_bytes()
    n = len(data) + int(keep) if keep < 0 else int(len(data) * keep)
    bad = tmp_path / "cut.tar.zst"
    bad.write_bytes(data[:n])
    with pytest.raises(BundleRejected, match="truncated|incomplete|empty"):
        reader.verify_bundle(bad, trusted)
    _assert_extract_leaves_nothing(bad, trusted, tmp_path / "dest")


@pytest.mark.parametrize(
    "trailer",
    [
        b"appended",
        b"\0" * 100,
        zstandard.ZstdCompressor().compress(b"\0" * 1024),
        (0x184D2A50).to_bytes(4, "little") + (4).to_bytes(4, "little") + b"abcd",
    ],
    ids=["garbage", "zeros", "zstd-frame", "skippable-frame"],
)
def test_bytes_appended(
    tmp_path: Path, good: Path, trusted: list[keys.TrustedKey], trailer: bytes
) -> None:
    bad = tmp_path / "appended.tar.zst"
    bad.write_bytes(good.read_bytes() + trailer)
    with pytest.raises(BundleRejected, match="follow the end|after"):
        reader.verify_bundle(bad, trusted)


def test_data_after_tar_end_inside_stream(
    tmp_path: Path, good_members: list[Member], trusted: list[keys.TrustedKey]
) -> None:
    import io

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for m in good_members:
            ti = tarfile.TarInfo(m.name)
            ti.size = len(m.data)
            tf.addfile(ti, io.BytesIO(m.data))
    raw = buf.getvalue() + b"hidden payload" + b"\0" * 500
    bad = tmp_path / "hidden.tar.zst"
    bad.write_bytes(zstandard.ZstdCompressor().compress(raw))
    with pytest.raises(BundleRejected, match="after"):
        reader.verify_bundle(bad, trusted)


def test_decompression_bomb_is_bounded(
    tmp_path: Path, good_members: list[Member], trusted: list[keys.TrustedKey]
) -> None:
    """1 GiB of zeros after the archive compresses to a few KiB; verify stops early."""
    import io

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for m in good_members:
            ti = tarfile.TarInfo(m.name)
            ti.size = len(m.data)
            tf.addfile(ti, io.BytesIO(m.data))
    bad = tmp_path / "bomb.tar.zst"
    cctx = zstandard.ZstdCompressor(level=1)
    with open(bad, "wb") as f, cctx.stream_writer(f) as z:
        z.write(buf.getvalue())
        zeros = b"\0" * (1 << 20)
        for _ in range(1024):
            z.write(zeros)
    assert bad.stat().st_size < 1 << 20
    with pytest.raises(BundleRejected, match="after the end of the archive"):
        reader.verify_bundle(bad, trusted)


@pytest.mark.parametrize(
    "content",
    [b"", b"this is not zstd at all", b"\x28\xb5\x2f\xfd"],
    ids=["empty", "text", "magic-only"],
)
def test_not_a_bundle(tmp_path: Path, trusted: list[keys.TrustedKey], content: bytes) -> None:
    bad = tmp_path / "x.tar.zst"
    bad.write_bytes(content)
    with pytest.raises(BundleRejected, match="empty|not a zstd|truncated|corrupt"):
        reader.verify_bundle(bad, trusted)
    with pytest.raises(BundleRejected):
        reader.read_head(bad)


def test_plain_tar_is_not_a_bundle(
    tmp_path: Path, good: Path, trusted: list[keys.TrustedKey]
) -> None:
    bad = tmp_path / "plain.tar"
    bad.write_bytes(zstandard.ZstdDecompressor().stream_reader(good.open("rb")).read())
    with pytest.raises(BundleRejected, match="not a zstd"):
        reader.verify_bundle(bad, trusted)


def test_unsigned_bundle(tmp_path: Path, trusted: list[keys.TrustedKey]) -> None:
    w, _ = bundles.build(tmp_path, None)
    with pytest.raises(BundleRejected, match="unsigned"):
        reader.verify_bundle(w.path, trusted)
    assert reader.verify_bundle(w.path, [], allow_unsigned=True).signer is None


def test_inspect_reads_only_the_head(
    tmp_path: Path, good_members: list[Member], signer: keys.PrivateKey
) -> None:
    """A bundle whose artifacts are garbage still inspects: only the head is read."""
    path = bundles.craft(tmp_path / "h.tar.zst", good_members[:2], trailer=os.urandom(4096))
    head = reader.read_head(path)
    assert head.manifest is not None and head.manifest.release.tag == bundles.TAG
    assert head.signature is not None and head.signature.key_id == keys.key_id(signer.public_key())


# -- pinned: damage inside a complete zstd frame, size caps, the trailer, exact messages -
INCOMPLETE = "copy the bundle again; the file is incomplete"


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


def test_cut_inside_an_artifact(
    tmp_path: Path, good_tar: OpenedBundle, trusted: list[keys.TrustedKey]
) -> None:
    m = good_tar.member("artifacts/install.sh")
    path = zst(tmp_path, good_tar.raw[: m.offset_data + 488])
    assert rejected(path, trusted) == (
        f"member artifacts/install.sh is truncated: expected 1000 bytes, got 488; {INCOMPLETE}"
    )
    reader.read_head(path)  # the head is intact


def test_cut_inside_a_header_and_the_manifest(
    tmp_path: Path, good_tar: OpenedBundle, trusted: list[keys.TrustedKey]
) -> None:
    m = good_tar.member("artifacts/install.sh")
    path = zst(tmp_path, good_tar.raw[: m.offset + 100])
    assert rejected(path, trusted) == (
        f"the bundle is truncated: the data ends 100 bytes into a member; {INCOMPLETE}"
    )
    path = zst(tmp_path, good_tar.raw[: good_tar.members[0].offset_data + 10])
    assert rejected(path, trusted) == (
        f"the bundle is truncated: the data ends 10 bytes into a member; {INCOMPLETE}"
    )
    assert head_rejected(path) == "the bundle ends inside its first members (truncated)"
    path = zst(tmp_path, good_tar.raw[: good_tar.members[1].offset_data + 3])
    assert head_rejected(path) == "the bundle ends inside its first members (truncated)"


def test_cut_inside_padding(
    tmp_path: Path, good_tar: OpenedBundle, trusted: list[keys.TrustedKey]
) -> None:
    m = good_tar.member("artifacts/install.sh")
    path = zst(tmp_path, good_tar.raw[: m.offset_data + m.size + 5])
    assert rejected(path, trusted) == (
        f"the bundle is truncated: the data ends 5 bytes into a member; {INCOMPLETE}"
    )


def test_missing_end_of_archive_marker(
    tmp_path: Path, good_tar: OpenedBundle, trusted: list[keys.TrustedKey]
) -> None:
    for cut in (good_tar.end, good_tar.end + 511):
        assert rejected(zst(tmp_path, good_tar.raw[:cut]), trusted) == (
            f"the archive ends without its end-of-archive marker (truncated); {INCOMPLETE}"
        )


def test_missing_members_are_counted(
    tmp_path: Path, good_tar: OpenedBundle, trusted: list[keys.TrustedKey]
) -> None:
    last = good_tar.members[-1]
    raw = good_tar.raw[: last.offset] + b"\0" * 1024
    assert rejected(zst(tmp_path, raw), trusted) == (
        f"member {last.name} is missing: the archive ends after {len(good_tar.members) - 1} members"
    )
    empty = zst(tmp_path, b"\0" * tarfmt.RECORD)
    msg = "member mk8s-bundle.json is missing: the archive ends after 0 members"
    assert rejected(empty, trusted) == msg
    assert head_rejected(empty) == msg
    one = zst(tmp_path, good_tar.raw[: good_tar.members[1].offset] + b"\0" * 1024)
    msg = "member mk8s-bundle.json.sig is missing: the archive ends after 1 members"
    assert rejected(one, trusted) == msg
    assert head_rejected(one) == msg


def test_garbage_after_the_last_member(
    tmp_path: Path, good_tar: OpenedBundle, trusted: list[keys.TrustedKey]
) -> None:
    raw = patch(good_tar.raw, good_tar.end, b"garbage".ljust(512, b"x"))
    assert rejected(zst(tmp_path, raw), trusted) == "unexpected data after the last artifact"
    extra = tarfmt.file_header("artifacts/zzz", 1, 0) + b"z".ljust(512, b"\0")
    raw = good_tar.raw[: good_tar.end] + extra + b"\0" * 1024
    assert rejected(zst(tmp_path, raw), trusted) == (
        "unexpected member 'artifacts/zzz' after the last artifact "
        "(a member was added or duplicated)"
    )


APPENDED = "unexpected data after the end of the archive; do not use this bundle; bytes were appended to it"


def test_trailer_limit_at_its_boundary(
    tmp_path: Path, good_tar: OpenedBundle, trusted: list[keys.TrustedKey]
) -> None:
    first = good_tar.end + tarfmt.BLOCK  # the first end-of-archive block is read as a header
    at_limit = good_tar.raw[:first] + b"\0" * reader.MAX_TRAILER
    reader.verify_bundle(zst(tmp_path, at_limit, "ok.tar.zst"), trusted)
    over = at_limit + b"\0"
    assert rejected(zst(tmp_path, over), trusted) == APPENDED
    nonzero = good_tar.raw[:first] + b"\0" * 100 + b"\x01" + b"\0" * 100
    assert rejected(zst(tmp_path, nonzero), trusted) == APPENDED
    only_one_block = good_tar.raw[:first]
    reader.verify_bundle(zst(tmp_path, only_one_block, "one.tar.zst"), trusted)


@pytest.mark.parametrize("offset", [-1, 0, 1, 512])
def test_trailer_over_the_limit_whatever_the_chunking(
    tmp_path: Path, good_tar: OpenedBundle, trusted: list[keys.TrustedKey], offset: int
) -> None:
    """Decompressed data arrives in 1 MiB chunks: zeros running past a chunk boundary,
    well beyond the limit, are refused wherever the boundary falls."""
    first = good_tar.end + tarfmt.BLOCK
    limit_at = first + reader.MAX_TRAILER
    total = stream.CHUNK * (limit_at // stream.CHUNK + 1) + offset + 4096
    raw = good_tar.raw[:first] + b"\0" * (total - first)
    assert rejected(zst(tmp_path, raw), trusted) == APPENDED


@pytest.mark.parametrize(
    "name", ["mk8s-bundle.json", "mk8s-bundle.json.sig", "artifacts/install.sh"]
)
def test_nonzero_bytes_in_padding(
    tmp_path: Path, good_tar: OpenedBundle, trusted: list[keys.TrustedKey], name: str
) -> None:
    m = good_tar.member(name)
    assert tarfmt.padding(m.size) > 5
    raw = patch(good_tar.raw, m.offset_data + m.size + 3, b"\x01")
    path = zst(tmp_path, raw)
    msg = f"member {name}: non-zero bytes hidden in the tar padding"
    assert rejected(path, trusted) == msg
    if name.startswith("mk8s-"):
        assert head_rejected(path) == msg


def test_bad_header_checksum_names_the_member(
    tmp_path: Path, good_tar: OpenedBundle, trusted: list[keys.TrustedKey]
) -> None:
    for index, m in ((1, good_tar.members[0]), (2, good_tar.members[1]), (3, good_tar.members[2])):
        raw = patch(good_tar.raw, m.offset + 5, bytes([good_tar.raw[m.offset + 5] ^ 1]))
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
    tmp_path: Path, good_tar: OpenedBundle, trusted: list[keys.TrustedKey], index: int
) -> None:
    m = good_tar.members[index - 1]
    path = zst(tmp_path, _rename(good_tar.raw, m, b"other"))
    msg = (
        f"member {index}: expected {m.name}, found 'other' "
        "(a member was added, removed, renamed or reordered)"
    )
    assert rejected(path, trusted) == msg
    if index < 3:
        assert head_rejected(path) == msg
    for bad in (b"/abs", b"artifacts/../x", b"artifacts\\x"):
        path = zst(tmp_path, _rename(good_tar.raw, m, bad))
        msg = f"member {index} has an unsafe path {bad.decode()!r} (absolute or with '..')"
        assert rejected(path, trusted) == msg


def test_size_and_hash_mismatch_messages(
    tmp_path: Path, good_tar: OpenedBundle, signer: keys.PrivateKey, trusted: list[keys.TrustedKey]
) -> None:
    ms = bundles.read_members(good_tar.path)
    i = next(n for n, m in enumerate(ms) if m.name == "artifacts/install.sh")
    art = next(a for a in good_tar.manifest.artifacts if a.path == "artifacts/install.sh")
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


def _with_manifest(
    good_tar: OpenedBundle, signer: keys.PrivateKey, manifest: bytes
) -> list[bundles.Member]:
    ms = bundles.read_members(good_tar.path)
    ms[0] = bundles.Member(ms[0].name, manifest)
    return bundles.sign_members(ms, signer)


def test_manifest_cap_at_and_over_its_limit(
    tmp_path: Path, good_tar: OpenedBundle, signer: keys.PrivateKey, trusted: list[keys.TrustedKey]
) -> None:
    base = good_tar.manifest.to_bytes()
    at_limit = base + b" " * (reader.MAX_MANIFEST - len(base))
    path = bundles.craft(tmp_path / "big.tar.zst", _with_manifest(good_tar, signer, at_limit))
    v = reader.verify_bundle(path, trusted)
    assert len(v.manifest_bytes) == reader.MAX_MANIFEST
    assert reader.read_head(path).problem is None
    over = tarfmt.file_header("mk8s-bundle.json", reader.MAX_MANIFEST + 1, 0) + b"{" * 512
    path = zst(tmp_path, over)
    msg = "member mk8s-bundle.json is 16777217 bytes, over 16777216"
    assert rejected(path, trusted) == msg
    assert head_rejected(path) == msg


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
    good_tar: OpenedBundle, trusted: list[keys.TrustedKey]
) -> None:
    events: list[tuple[str, Any]] = []
    sink = RecordingSink(events)
    progress: list[tuple[int, int]] = []
    v = reader.verify_bundle(
        good_tar.path,
        trusted,
        sink=sink,
        before_artifacts=lambda m: events.append(("before", m.total_size)),
        progress=lambda done, total: progress.append((done, total)),
    )
    data = good_tar.path.read_bytes()
    assert v.path == good_tar.path
    assert v.file_size == len(data) and v.file_sha256 == hashlib.sha256(data).hexdigest()
    assert v.manifest == good_tar.manifest and v.manifest_bytes == good_tar.manifest.to_bytes()
    assert (
        v.signature_bytes
        == good_tar.raw[good_tar.members[1].offset_data :][: good_tar.members[1].size]
    )
    assert v.bundle_id == hashlib.sha256(v.manifest_bytes).hexdigest()[:16]
    total = good_tar.manifest.total_size
    assert events[0] == ("before", total)
    paths = [a.path for a in good_tar.manifest.artifacts]
    assert events[1:] == [e for p in paths for e in (("begin", p), ("end", p))]
    for a in good_tar.manifest.artifacts:
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


def test_stream_errors(
    tmp_path: Path, good_tar: OpenedBundle, trusted: list[keys.TrustedKey]
) -> None:
    data = bytearray(good_tar.path.read_bytes())
    data[0] ^= 0xFF
    bad = tmp_path / "magic.tar.zst"
    bad.write_bytes(bytes(data))
    fix = "get the bundle again; the file was damaged or altered"
    # the file is named: the operator may be checking several
    assert rejected(bad, trusted) == f"{bad}: not a zstd file (bad magic number); {fix}"
    # inspect does not walk the frame; zstd itself refuses the header
    assert head_rejected(bad).startswith(f"{bad}: the zstd stream is corrupt in the bundle head (")
    # Damage inside a compressed block: zstd itself reports it.
    comp = zstandard.ZstdCompressor(level=3, write_checksum=True).compress(good_tar.raw)
    broken = bytearray(comp)
    for at in range(40, 60):
        broken[at] ^= 0x55
    bad.write_bytes(bytes(broken))
    msg = rejected(bad, trusted)
    assert msg.startswith(f"{bad}: the zstd stream is corrupt (") and msg.endswith(f"); {fix}")
    head = head_rejected(bad)
    assert head.startswith(f"{bad}: the zstd stream is corrupt in the bundle head (")
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


def test_head_problems_are_collected(
    tmp_path: Path, good_tar: OpenedBundle, signer: keys.PrivateKey
) -> None:
    assert reader.read_head(good_tar.path).problem is None
    ms = bundles.read_members(good_tar.path)
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


def test_verify_and_extract_need_the_signature(
    tmp_path: Path, good_tar: OpenedBundle, trusted: list[keys.TrustedKey]
) -> None:
    unsigned_raw = good_tar.raw
    written, _ = bundles.build(tmp_path, None)
    with pytest.raises(BundleRejected, match="unsigned"):
        extract.extract_bundle(written.path, trusted, tmp_path / "u")
    assert not (tmp_path / "u").exists()
    v = extract.extract_bundle(written.path, [], tmp_path / "ok", allow_unsigned=True)
    assert v.signer is None and unsigned_raw
    assert os.path.isdir(tmp_path / "ok" / "artifacts")


def test_manifest_of_a_lock_is_refused_with_the_fix(
    tmp_path: Path, good_tar: OpenedBundle, signer: keys.PrivateKey, trusted: list[keys.TrustedKey]
) -> None:
    path = bundles.craft(
        tmp_path / "lock.tar.zst",
        _with_manifest(good_tar, signer, good_tar.manifest.as_lock().to_bytes()),
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
    tmp_path: Path, good_tar: OpenedBundle, trusted: list[keys.TrustedKey]
) -> None:
    m = good_tar.member("artifacts/install.sh")
    path = zst(tmp_path, _rename(good_tar.raw, m, b"artifacts/install.shX"))
    index = good_tar.members.index(m) + 1
    assert rejected(path, trusted) == (
        f"member {index}: expected artifacts/install.sh, found 'artifacts/install.shX' "
        "(a member was added, removed, renamed or reordered)"
    )


def test_a_regular_member_named_like_a_directory_is_refused(
    tmp_path: Path, good_tar: OpenedBundle, trusted: list[keys.TrustedKey]
) -> None:
    """GNU tar extracts a regular member named ``x/`` as a directory: refuse it."""
    m = good_tar.member("artifacts/install.sh")
    path = zst(tmp_path, _rename(good_tar.raw, m, b"artifacts/install.sh/"))
    assert rejected(path, trusted) == (
        "member artifacts/install.sh is named 'artifacts/install.sh/', like a directory"
    )


def test_verify_checks_a_signed_manifest_against_the_schema(
    tmp_path: Path, good_tar: OpenedBundle, signer: keys.PrivateKey, trusted: list[keys.TrustedKey]
) -> None:
    """The invariants accept an unknown field; the schema (run by verify, not by
    read_head) refuses it, even when the manifest is signed."""
    obj = json.loads(good_tar.manifest.to_bytes())
    obj["extra"] = 1
    edited = (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()
    path = bundles.craft(tmp_path / "x.tar.zst", _with_manifest(good_tar, signer, edited))
    assert rejected(path, trusted) == (
        "mk8s-bundle.json: (top level): Additional properties are not allowed ('extra' was"
        " unexpected); the bundle was not written by mk8s or was altered"
    )
    assert reader.read_head(path).problem is None


# -- a generated hostile corpus: every field of a signed manifest, replaced --------------


@pytest.mark.slow
def test_every_hostile_signed_manifest_is_verified_or_rejected(
    tmp_path: Path, run_cli, ed_key
) -> None:  # type: ignore[no-untyped-def]
    """Signed by the trusted key, so only the manifest's own checks stand between a
    hostile manifest and the operator: verify, inspect and deploy --dry-run exit 0, 2
    or 3, never with an internal error, and print no raw control character."""
    from mk8s.bundle.format import keys

    written, _ = bundles.build(tmp_path, ed_key)
    pub = keys.write_key_pair(ed_key, tmp_path / "k", None).public
    members = bundles.read_members(written.path)
    good = json.loads(members[0].data)
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(yaml.safe_dump(VALID_CLUSTER))
    values = [HOSTILE_VALUES[i] for i in (0, 2, 5, 6, 11, 12, 15, 17, 18, 21)]
    seen = set()
    for path in field_paths(good):
        for value in values:
            variant = replaced_at(good, path, value)
            data = json.dumps(variant).encode()
            edited = [bundles.Member(members[0].name, data), *members[1:]]
            bad = bundles.craft(tmp_path / "v.tar.zst", bundles.sign_members(edited, ed_key))
            for args in (
                ("bundle", "verify", str(bad), "--key", str(pub)),
                ("bundle", "inspect", str(bad)),
                (
                    "deploy",
                    "-f",
                    str(cluster),
                    "--bundle",
                    str(bad),
                    "--key",
                    str(pub),
                    "--dry-run",
                ),
            ):
                r = run_cli(*args)
                seen.add(r.code)
                label = f"{'.'.join(map(str, path))}={value!r}: {args[:2]}"
                assert r.code in (0, 2, 3), f"{label}: {r.err}"
                assert "internal error" not in r.err, label
                assert "\x1b" not in r.out + r.err, label
    assert {0, 3} <= seen
