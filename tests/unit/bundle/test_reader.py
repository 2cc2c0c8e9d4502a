"""The signed bundle: writer determinism, verify, inspect, extract, and every tamper."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from mk8s.bundle import keys, reader
from mk8s.bundle.manifest import Lock
from mk8s.bundle.writer import WriteSettings, write_bundle
from mk8s.errors import BundleRejected, ChecksumMismatch, OutputError
from tests.support import bundles
from tests.support.bundles import Member


@pytest.fixture(scope="module")
def signer() -> keys.PrivateKey:
    return keys.generate_private_key()


@pytest.fixture(scope="module")
def trusted(signer: keys.PrivateKey) -> list[keys.TrustedKey]:
    return [keys.TrustedKey(Path("mk8s.pub"), signer.public_key())]


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory, signer: keys.PrivateKey) -> Path:
    written, _ = bundles.build(tmp_path_factory.mktemp("good"), signer)
    return written.path


def test_layout_order_and_owner(good: Path) -> None:
    data = zstandard.ZstdDecompressor().stream_reader(good.open("rb")).read()
    import io

    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        infos = tf.getmembers()
    names = [i.name for i in infos]
    assert names[:2] == ["mk8s-bundle.json", "mk8s-bundle.json.sig"]
    assert names[2:] == sorted(names[2:])
    manifest = json.loads(tf.extractfile if False else data[512 : 512 + infos[0].size])
    assert [a["path"] for a in manifest["artifacts"]] == names[2:]
    assert {(i.uid, i.gid, i.uname, i.gname, i.mode, i.mtime) for i in infos} == {
        (0, 0, "", "", 0o644, Lock.from_bytes(data[512 : 512 + infos[0].size]).mtime)
    }


def test_verify_ok(good: Path, trusted: list[keys.TrustedKey]) -> None:
    v = reader.verify_bundle(good, trusted)
    assert v.file_sha256 == hashlib.sha256(good.read_bytes()).hexdigest()
    assert v.signer is trusted[0]
    assert v.manifest.release.tag == bundles.TAG


def test_any_of_several_keys(good: Path, trusted: list[keys.TrustedKey]) -> None:
    other = keys.TrustedKey(Path("o.pub"), keys.generate_private_key().public_key())
    assert reader.verify_bundle(good, [other, *trusted]).signer is trusted[0]


@pytest.mark.parametrize("algorithm", keys.ALGORITHMS)
def test_deterministic_across_threads_and_runs(tmp_path: Path, algorithm: str) -> None:
    key = keys.generate_private_key(algorithm)
    # Big enough that multi-threaded zstd really splits the input into several jobs.
    files = bundles.make_files(tmp_path / "f", {"a.bin": 9_000_000, "b.txt": 0})
    text = tmp_path / "f" / "c.txt"
    text.write_bytes(b"compressible line\n" * 600_000)
    files["c.txt"] = text
    outs = []
    for i, threads in enumerate((1, 2, 4)):
        w, _ = bundles.build(
            tmp_path, key, files=files, out=tmp_path / f"{i}.tar.zst", threads=threads
        )
        outs.append(w.path.read_bytes())
    assert outs[0] == outs[1] == outs[2]


def test_writer_refuses_changed_input_and_leaves_nothing(
    tmp_path: Path, signer: keys.PrivateKey
) -> None:
    files = bundles.default_files(tmp_path / "f")
    lock = bundles.lock_for(files, bundles.KINDS).as_manifest()
    files["install.sh"].write_bytes(b"changed after locking")
    by_path = {a.path: files[a.name] for a in lock.artifacts}
    out = tmp_path / "out.tar.zst"
    with pytest.raises(ChecksumMismatch, match="install.sh"):
        write_bundle(lock, by_path, out, lambda b: keys.sign(signer, b))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_writer_full_disk_leaves_nothing(tmp_path: Path, signer: keys.PrivateKey) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    import subprocess

    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], check=True)
    try:
        files = bundles.default_files(tmp_path / "f")
        lock = bundles.lock_for(files, bundles.KINDS).as_manifest()
        by_path = {a.path: files[a.name] for a in lock.artifacts}
        with pytest.raises(OutputError, match="no space left"):
            write_bundle(
                lock,
                by_path,
                mnt / "b.tar.zst",
                lambda b: keys.sign(signer, b),
                settings=WriteSettings(threads=1),
            )
        assert list(mnt.iterdir()) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


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
        reader.extract_bundle(path, trusted, dest)
    assert sorted(p.name for p in dest.iterdir()) == ["keep.txt"]
    assert (dest / "keep.txt").read_text() == "operator's file"
    fresh = dest.parent / "fresh-dest"
    with pytest.raises(BundleRejected):
        reader.extract_bundle(path, trusted, fresh)
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


def test_extract(tmp_path: Path, good: Path, trusted: list[keys.TrustedKey]) -> None:
    dest = tmp_path / "out"
    v = reader.extract_bundle(good, trusted, dest)
    assert sorted(p.name for p in dest.iterdir()) == [
        "artifacts",
        "mk8s-bundle.json",
        "mk8s-bundle.json.sig",
    ]
    for a in v.manifest.artifacts:
        assert hashlib.sha256((dest / a.path).read_bytes()).hexdigest() == a.sha256
    with pytest.raises(OutputError, match="already exists"):
        reader.extract_bundle(good, trusted, dest)


def test_inspect_reads_only_the_head(
    tmp_path: Path, good_members: list[Member], signer: keys.PrivateKey
) -> None:
    """A bundle whose artifacts are garbage still inspects: only the head is read."""
    path = bundles.craft(tmp_path / "h.tar.zst", good_members[:2], trailer=os.urandom(4096))
    head = reader.read_head(path)
    assert head.manifest is not None and head.manifest.release.tag == bundles.TAG
    assert head.signature is not None and head.signature.key_id == keys.key_id(signer.public_key())
