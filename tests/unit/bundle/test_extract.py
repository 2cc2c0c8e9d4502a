"""mk8s/bundle/format/extract.py: extract verifies while it writes, checks free space first, sets
modes, and leaves nothing behind when the bundle turns out bad."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from mk8s.bundle.format import extract, keys
from mk8s.errors import BundleRejected, OutputError
from tests.support import bundles
from tests.support.bundles import OpenedBundle


def test_extract(tmp_path: Path, good: Path, trusted: list[keys.TrustedKey]) -> None:
    dest = tmp_path / "out"
    v = extract.extract_bundle(good, trusted, dest)
    assert sorted(p.name for p in dest.iterdir()) == [
        "artifacts",
        "mk8s-bundle.json",
        "mk8s-bundle.json.sig",
    ]
    for a in v.manifest.artifacts:
        assert hashlib.sha256((dest / a.path).read_bytes()).hexdigest() == a.sha256
    with pytest.raises(OutputError, match="already exists"):
        extract.extract_bundle(good, trusted, dest)


# -- pinned: free space, modes, refusals, rollback ---------------------------------------
pytestmark = pytest.mark.timeout(120)  # a lost truncation check loops forever


class _Statvfs:
    def __init__(self, free: int) -> None:
        self.f_bavail = free
        self.f_frsize = 1


def _limit_free_space(monkeypatch: pytest.MonkeyPatch, free: int) -> None:
    """Report ``free`` bytes for the extract destination. (A small filesystem needs root
    to mount; this is the one place the test stands in for the OS.)"""
    monkeypatch.setattr(extract.os, "statvfs", lambda path: _Statvfs(free))


def test_extract_free_space_at_and_below_the_need(
    tmp_path: Path,
    good_tar: OpenedBundle,
    trusted: list[keys.TrustedKey],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    need = good_tar.manifest.total_size
    _limit_free_space(monkeypatch, need)
    extract.extract_bundle(good_tar.path, trusted, tmp_path / "exact")
    assert (tmp_path / "exact" / "artifacts" / "install.sh").is_file()

    _limit_free_space(monkeypatch, need - 1)
    dest = tmp_path / "small"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    seen: list[list[str]] = []

    def watch(done: int, total: int) -> None:
        seen.append(sorted(p.name for p in dest.rglob("*") if p.is_file()))

    with pytest.raises(OutputError) as e:
        extract.extract_bundle(good_tar.path, trusted, dest, progress=watch)
    assert str(e.value) == (
        f"{dest} has {need - 1} bytes free; the bundle needs {need}; "
        "free some space or extract elsewhere"
    )
    assert seen and all(files == ["keep.txt"] for files in seen)  # nothing was written
    assert sorted(p.name for p in dest.iterdir()) == ["keep.txt"]


def test_extract_with_too_little_space_still_rejects_a_lying_bundle(
    tmp_path: Path,
    good_tar: OpenedBundle,
    signer: keys.PrivateKey,
    trusted: list[keys.TrustedKey],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ms = bundles.read_members(good_tar.path)
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


def test_extract_refusals(
    tmp_path: Path, good_tar: OpenedBundle, trusted: list[keys.TrustedKey]
) -> None:
    dest = tmp_path / "d"
    dest.mkdir()
    (dest / "artifacts").mkdir()
    with pytest.raises(OutputError) as e:
        extract.extract_bundle(good_tar.path, trusted, dest)
    assert str(e.value) == f"{dest / 'artifacts'} already exists; extract into an empty directory"
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(OutputError) as e:
        extract.extract_bundle(good_tar.path, trusted, afile / "sub")
    assert str(e.value).startswith(f"cannot create {afile / 'sub'}: Not a directory")


@pytest.mark.parametrize("fresh", [False, True], ids=["existing-dest", "fresh-dest"])
def test_extract_rolls_back_moved_files(
    tmp_path: Path, good_tar: OpenedBundle, trusted: list[keys.TrustedKey], fresh: bool
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
        extract.extract_bundle(good_tar.path, trusted, dest, progress=occupy)
    assert str(e.value) == f"cannot extract into {dest}: Directory not empty"
    if fresh:
        assert not dest.exists()
    else:
        assert sorted(p.name for p in dest.iterdir()) == ["artifacts", "keep.txt"]
        assert [p.name for p in (dest / "artifacts").iterdir()] == ["theirs"]


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


# -- a failed extract through the CLI ----------------------------------------------------
def test_failed_extract_leaves_no_directory_it_created(tmp_path: Path, run_cli, ed_key) -> None:  # type: ignore[no-untyped-def]
    written, _ = bundles.build(tmp_path, ed_key)
    data = bytearray(written.path.read_bytes())
    data[-100] ^= 1
    bad = tmp_path / "bad.tar.zst"
    bad.write_bytes(bytes(data))
    pub = keys.write_key_pair(ed_key, tmp_path / "k", None).public
    dest = tmp_path / "new" / "deeper" / "dir"
    r = run_cli("bundle", "extract", str(bad), "--key", str(pub), "-d", str(dest))
    assert r.code == 3, r.err
    assert not (tmp_path / "new").exists()
