"""A release whose image archives this zstd cannot compress back into upstream's bytes
(another zstd version built it): the delta still carries only the blobs the base lacks,
and places the archive's exact tar in a frame of raw zstd blocks, pinned at create."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from mk8s.bundle import check
from mk8s.bundle.delta import codec
from mk8s.bundle.format import keys, reader
from tests.support.deltas import IMAGES, NEW, OLD, World, tar_blobs, tree, world


@pytest.fixture(scope="module")
def w(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with world(tmp_path_factory.mktemp("fallback"), zstd_level=12) as w:
        yield w


def content(data: bytes) -> bytes:
    return (
        zstandard.ZstdDecompressor()
        .stream_reader(io.BytesIO(data), read_across_frames=False)
        .read()
    )


def test_the_delta_still_carries_only_new_blobs(w: World) -> None:
    m = reader.read_head(w.bundles["delta.tar.zst"]).manifest
    assert m is not None and m.delta is not None
    (source,) = [s for s in m.delta.sources if s.path == f"artifacts/{IMAGES}"]
    assert source.zstd is None and source.placed is not None
    assert source.placed[0] == codec.stored_size(source.content[0])  # type: ignore[index]
    new, old = tar_blobs(w.up.asset_bytes(NEW, IMAGES)), tar_blobs(w.up.asset_bytes(OLD, IMAGES))
    carried = {p.path.removeprefix("blobs/sha256/") for p in m.delta.members if "blobs/" in p.path}
    assert carried == set(new) - set(old)
    # the manifest still pins upstream's file; the whole release as placed pins the frame
    (art,) = [a for a in m.artifacts if a.path == f"artifacts/{IMAGES}"]
    assert art.sha256 == w.up.asset_sha256(NEW, IMAGES)
    (placed,) = [a for a in m.whole().artifacts if a.path == art.path]
    assert (placed.size, placed.sha256) == source.placed


def test_extract_places_the_exact_tar_in_raw_blocks(w: World, tmp_path: Path) -> None:
    ts = keys.load_trusted_keys([w.pub])
    v = check.extract(w.bundles["delta.tar.zst"], ts, tmp_path / "d", base=w.bundles["old.tar.zst"])
    check.extract(w.bundles["new.tar.zst"], ts, tmp_path / "f")
    got, want = tree(tmp_path / "d" / "artifacts"), tree(tmp_path / "f" / "artifacts")
    assert {k: v for k, v in got.items() if k != IMAGES} == {
        k: v for k, v in want.items() if k != IMAGES
    }
    placed = (tmp_path / "d" / "artifacts" / IMAGES).read_bytes()
    assert content(placed) == content(w.up.asset_bytes(NEW, IMAGES))  # the same images
    assert placed != w.up.asset_bytes(NEW, IMAGES)
    assert v.manifest_bytes != reader.read_head(w.bundles["new.tar.zst"]).manifest_bytes


def test_sbom_lists_the_same_images(run_cli, w: World) -> None:  # type: ignore[no-untyped-def]
    pub, base = str(w.pub), str(w.bundles["old.tar.zst"])
    full = run_cli("bundle", "sbom", str(w.bundles["new.tar.zst"]), "--key", pub)
    delta = run_cli("bundle", "sbom", str(w.bundles["delta.tar.zst"]), "--key", pub, "--base", base)
    assert full.code == 0 and delta.code == 0, delta.err
    for ref in ("hardened-kubernetes", "hardened-calico"):
        assert ref in delta.out
    digests = [line for line in full.out.splitlines() if '"purl": "pkg:oci' in line]
    assert digests and all(d in delta.out for d in digests)
