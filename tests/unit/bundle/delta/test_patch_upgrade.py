"""Delta bundles (issue #25): a patch upgrade carried as a delta of the bundle before.

The delta carries exactly the blobs the base lacks; verified and extracted with its
base it is the full bundle, byte for byte; a missing, wrong, damaged or delta base is
exit 3 naming the base needed; the same lock, base and key give the same bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from mk8s.bundle import check
from mk8s.bundle.delta import codec
from mk8s.bundle.format import keys, reader
from mk8s.bundle.format.manifest import Lock, bundle_id
from mk8s.errors import BundleRejected, InputError
from tests.support import bundles as craft
from tests.support.deltas import IMAGES, NEW, OLD, OLDER, World, tar_blobs, tree, world


@pytest.fixture(scope="module")
def w(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with world(tmp_path_factory.mktemp("delta")) as w:
        yield w


def trusted(w: World) -> list[keys.TrustedKey]:
    return keys.load_trusted_keys([w.pub])


def head(path: Path) -> Lock:
    got = reader.read_head(path).manifest
    assert got is not None
    return got


def test_delta_carries_only_the_blobs_the_base_lacks(w: World) -> None:
    old = tar_blobs(w.up.asset_bytes(OLD, IMAGES))
    new = tar_blobs(w.up.asset_bytes(NEW, IMAGES))
    d = head(w.bundles["delta.tar.zst"]).delta
    assert d is not None
    carried = {m.path.removeprefix("blobs/sha256/") for m in d.members if "blobs/" in m.path}
    assert carried == set(new) - set(old)
    # a patch: most images unchanged, layers of the rebuilt ones shared
    assert 0 < sum(new[b] for b in carried) < 0.8 * sum(new.values())
    (source,) = [s for s in d.sources if s.path == f"artifacts/{IMAGES}"]
    assert source.zstd is not None and source.zstd.level == 16 and source.zstd.long_distance
    # what did not change comes from the base; the new rke2 tarball travels whole
    by_kind = {s.path: s.kind for s in d.sources}
    assert by_kind["artifacts/files/site-manifests.yaml"] == "base"
    assert "artifacts/rke2.linux-amd64.tar.gz" in {m.path for m in d.members}
    full = w.bundles["new.tar.zst"].stat().st_size
    assert w.bundles["delta.tar.zst"].stat().st_size < 0.8 * full


def test_the_manifest_describes_the_whole_release_and_names_its_base(w: World) -> None:
    delta, full, old = (head(w.bundles[n]) for n in ("delta.tar.zst", "new.tar.zst", "old.tar.zst"))
    assert delta.artifacts == full.artifacts and delta.release == full.release
    assert delta.whole().to_bytes() == full.to_bytes()
    assert delta.delta is not None
    base = delta.delta.base
    old_bytes = reader.read_head(w.bundles["old.tar.zst"]).manifest_bytes
    assert base.manifest_sha256 == hashlib.sha256(old_bytes).hexdigest()
    assert base.bundle_id == bundle_id(old_bytes) and base.tag == OLD
    assert base.file == "old.tar.zst"
    pinned = {a.path: (a.size, a.sha256) for a in old.artifacts}
    assert all(pinned[p.path] == (p.size, p.sha256) for p in base.artifacts)


def test_verify_with_its_base_is_verify_of_the_full_bundle(w: World) -> None:
    v = check.verify(w.bundles["delta.tar.zst"], trusted(w), base=w.bundles["old.tar.zst"])
    full = check.verify(w.bundles["new.tar.zst"], trusted(w))
    assert v.manifest == full.manifest and v.manifest_bytes == full.manifest_bytes
    assert v.bundle_id == full.bundle_id and v.signer is not None
    assert v.delta is not None and v.delta.base_path == w.bundles["old.tar.zst"]


def test_extract_with_its_base_is_the_full_bundle_byte_for_byte(w: World, tmp_path: Path) -> None:
    ts = trusted(w)
    check.extract(w.bundles["delta.tar.zst"], ts, tmp_path / "d", base=w.bundles["old.tar.zst"])
    check.extract(w.bundles["new.tar.zst"], ts, tmp_path / "f")
    got, want = tree(tmp_path / "d" / "artifacts"), tree(tmp_path / "f" / "artifacts")
    assert got == want and "rke2-images.linux-amd64.tar.zst" in str(got)
    assert (tmp_path / "d" / "artifacts" / IMAGES).read_bytes() == w.up.asset_bytes(NEW, IMAGES)
    # the delta's own signed manifest is beside them: it verifies with the stock recipe
    data = (tmp_path / "d" / "mk8s-bundle.json").read_bytes()
    assert data == reader.read_head(w.bundles["delta.tar.zst"]).manifest_bytes
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == sorted(
        p.name for p in (tmp_path / "f").iterdir()
    )


def test_same_lock_same_base_same_key_same_bytes(w: World) -> None:
    lock = Lock.from_bytes(w.locks["delta.tar.zst"].read_bytes())
    again = w.bundle("delta-again.tar.zst", lock, base=w.bundles["old.tar.zst"])
    # a fresh cache: the base's archives are read out of the base bundle this time
    fresh = w.bundle("delta-fresh.tar.zst", lock, base=w.bundles["old.tar.zst"], cache="c2")
    want = w.bundles["delta.tar.zst"].read_bytes()
    assert again.bundle.path.read_bytes() == want
    assert fresh.bundle.path.read_bytes() == want


def test_a_lock_as_base_names_the_bundle_made_from_it(w: World) -> None:
    lock = Lock.from_bytes(w.locks["delta.tar.zst"].read_bytes())
    made = w.bundle("delta-from-lock.tar.zst", lock, base=w.locks["old.tar.zst"])
    assert made.delta is not None
    ref = made.delta.delta.base
    assert ref.bundle_id == head(w.bundles["delta.tar.zst"]).delta.base.bundle_id  # type: ignore[union-attr]
    assert ref.file == "mk8s-rke2-v1.28.14-rke2r1-linux-amd64.tar.zst"
    v = check.verify(made.bundle.path, trusted(w), base=w.bundles["old.tar.zst"])
    assert v.manifest.release.tag == NEW


def _rejected(w: World, base: Path | None, *, path: Path | None = None) -> str:
    with pytest.raises(BundleRejected) as e:
        check.verify(path or w.bundles["delta.tar.zst"], trusted(w), base=base)
    return str(e.value)


def _names_the_base(w: World, msg: str) -> None:
    ref = head(w.bundles["delta.tar.zst"]).delta.base  # type: ignore[union-attr]
    assert ref.bundle_id in msg and "old.tar.zst" in msg and OLD in msg, msg


def test_a_missing_base_is_exit_3_naming_it(w: World, tmp_path: Path) -> None:
    for base in (None, tmp_path / "nowhere.tar.zst"):
        msg = _rejected(w, base)
        _names_the_base(w, msg)
        assert "--base" in msg
    with pytest.raises(BundleRejected) as e:
        check.extract(w.bundles["delta.tar.zst"], trusted(w), tmp_path / "x")
    _names_the_base(w, str(e.value))
    assert not (tmp_path / "x").exists()


def test_a_wrong_base_is_exit_3_naming_it(w: World, tmp_path: Path) -> None:
    older = w.bundle("older.tar.zst", w.lock(OLDER)).bundle.path
    msg = _rejected(w, older)
    _names_the_base(w, msg)
    assert "is not the base this delta needs" in msg and f"artifacts/{IMAGES}" in msg
    msg = _rejected(w, w.bundles["new.tar.zst"])  # the full bundle of the same release
    _names_the_base(w, msg)
    with pytest.raises(BundleRejected):
        check.extract(w.bundles["delta.tar.zst"], trusted(w), tmp_path / "x", base=older)
    assert not (tmp_path / "x").exists()


def test_a_damaged_base_is_exit_3(w: World, tmp_path: Path) -> None:
    data = bytearray(w.bundles["old.tar.zst"].read_bytes())
    data[len(data) // 2] ^= 0x01
    bad = tmp_path / "old.tar.zst"
    bad.write_bytes(bytes(data))
    msg = _rejected(w, bad)
    assert f"the base {bad} was rejected" in msg or "is not the base" in msg, msg
    _names_the_base(w, msg)


def test_a_base_altered_consistently_is_exit_3(w: World, tmp_path: Path) -> None:
    """A base whose image archive and manifest were both changed (no signature needed
    on a base, so no re-signing): the delta's own pins refuse it before it streams."""
    members = craft.read_members(w.bundles["old.tar.zst"])
    manifest = json.loads(members[0].data)
    i = next(k for k, m in enumerate(members) if m.name == f"artifacts/{IMAGES}")
    members[i].data = members[i].data[:-1] + bytes([members[i].data[-1] ^ 1])
    for a in manifest["artifacts"]:
        if a["path"] == f"artifacts/{IMAGES}":
            a["sha256"] = hashlib.sha256(members[i].data).hexdigest()
    members[0].data = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    bad = craft.craft(tmp_path / "old.tar.zst", craft.sign_members(members, w.key))
    msg = _rejected(w, bad)
    assert "is not the base this delta needs" in msg and f"artifacts/{IMAGES}" in msg, msg
    _names_the_base(w, msg)


def test_a_delta_of_a_delta_is_refused(w: World, tmp_path: Path) -> None:
    msg = _rejected(w, w.bundles["delta.tar.zst"], path=w.bundles["delta.tar.zst"])
    assert "itself a delta" in msg and "not supported" in msg, msg
    _names_the_base(w, msg)
    lock = Lock.from_bytes(w.locks["delta.tar.zst"].read_bytes())
    with pytest.raises(InputError) as e:
        w.bundle("dd.tar.zst", lock, base=w.bundles["delta.tar.zst"])
    assert "itself a delta" in str(e.value) and e.value.exit_code == 2
    assert not (w.dir / "dd.tar.zst").exists()


def test_a_full_bundle_given_a_base_is_a_usage_error(w: World) -> None:
    with pytest.raises(InputError) as e:
        check.verify(w.bundles["new.tar.zst"], trusted(w), base=w.bundles["old.tar.zst"])
    assert "not a delta" in str(e.value) and e.value.exit_code == 2


def test_another_zstd_refuses_before_reading(w: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codec, "library", lambda: "0.0.1")
    msg = _rejected(w, w.bundles["old.tar.zst"])
    assert "needs zstd" in msg and "this mk8s has zstd 0.0.1" in msg, msg


def test_a_rebuild_that_differs_from_upstream_is_exit_3_and_leaves_nothing(
    w: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last line of defence: the rebuilt archive against upstream's own sha256."""
    real = codec.compressor
    monkeypatch.setattr(codec, "compressor", lambda z: real(dataclasses.replace(z, level=3)))
    dest = tmp_path / "x"
    with pytest.raises(BundleRejected) as e:
        check.extract(w.bundles["delta.tar.zst"], trusted(w), dest, base=w.bundles["old.tar.zst"])
    assert f"rebuilt artifacts/{IMAGES}" in str(e.value) and "not the pinned" in str(e.value)
    assert not dest.exists()


def test_the_base_file_create_read_verifies_by_its_hash(
    w: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The delta pins the base file as create read it: that very file needs one sha256,
    not a member-by-member pass; any other file gets the member-by-member pass."""
    from mk8s.bundle.delta import verify as delta_verify

    read: list[Path] = []
    real = delta_verify.read_bundle

    def counting(path: Path, *args: object, **kw: object) -> object:
        read.append(path)
        return real(path, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(delta_verify, "read_bundle", counting)
    check.verify(w.bundles["delta.tar.zst"], trusted(w), base=w.bundles["old.tar.zst"])
    assert read == [w.bundles["delta.tar.zst"]]
    # the same release's bundle made again with an SBOM: another file, the same pinned
    # artifacts: accepted, after every member was checked
    old = w.bundle("old-sbom.tar.zst", w.lock(OLD), sbom="cyclonedx").bundle.path
    read.clear()
    v = check.verify(w.bundles["delta.tar.zst"], trusted(w), base=old)
    assert sorted(read) == sorted([w.bundles["delta.tar.zst"], old])
    assert (
        v.delta is not None
        and v.delta.base_bundle_id != head(w.bundles["delta.tar.zst"]).delta.base.bundle_id
    )  # type: ignore[union-attr]
