"""The example upstream serves several minors of the stand-in release (patches and
respins), each tarball knowing its own release's image hashes, and bundles of both
minors can be created from it (no root needed)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mk8s.bundle import create
from mk8s.bundle import lock as locking
from mk8s.bundle.format import keys
from mk8s.bundle.upstream import releases as upstream
from tests.support import standin
from tests.support.standin_nodes import ARCH, IMAGES
from tests.support.upstream import NEW, OLD, R2, R3, SKIP, ExampleUpstream


@pytest.fixture(scope="module")
def up() -> Iterator[ExampleUpstream]:
    with ExampleUpstream() as u:
        yield u


def embedded_images(tarball: bytes) -> dict[str, str]:
    """The image hashes ``bin/rke2`` in an rke2.linux-ARCH.tar.gz knows as genuine."""
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(tarball))) as tf:
        member = tf.extractfile("bin/rke2")
        assert member is not None
        program = member.read().decode()
    m = re.search(r'^IMAGES_JSON = """(.*)"""$', program, re.M)
    assert m, "no IMAGES_JSON in bin/rke2"
    data = json.loads(m.group(1))
    assert isinstance(data, dict)
    return data


def test_upstream_serves_two_minors_with_patches_and_respins(up: ExampleUpstream) -> None:
    final = {r.tag for r in up.releases if not r.draft and not r.prerelease}
    for minor in (28, 29):
        patches = {t for t in final if t.startswith(f"v1.{minor}.")}
        assert len(patches) >= 10, minor
        assert any(t.endswith("+rke2r2") for t in patches), minor
    assert {OLD, NEW, SKIP, R2, R3} <= final


def test_tarball_embeds_the_releases_own_image_hashes(up: ExampleUpstream) -> None:
    for tag in (OLD, NEW):
        tarball = up.asset_bytes(tag, f"rke2.linux-{ARCH}.tar.gz")
        got = embedded_images(tarball)
        want = {
            n: up.asset_sha256(tag, n)
            for n in up.release(tag).assets
            if n.startswith("rke2-images") and n.endswith(f".linux-{ARCH}.tar.zst")
        }
        assert got == want and IMAGES in got and f"rke2-images-core.linux-{ARCH}.tar.zst" in got
        # the listed size (computed without generating images) is the served size
        assert up.size_of(tag, f"rke2.linux-{ARCH}.tar.gz") == len(tarball)
        # the sha256sum file covers the tarball as served
        sums = up.asset_bytes(tag, f"sha256sum-{ARCH}.txt").decode()
        assert f"{hashlib.sha256(tarball).hexdigest()}  rke2.linux-{ARCH}.tar.gz" in sums
    assert (
        embedded_images(up.asset_bytes(OLD, f"rke2.linux-{ARCH}.tar.gz"))[IMAGES]
        != (embedded_images(up.asset_bytes(NEW, f"rke2.linux-{ARCH}.tar.gz"))[IMAGES])
    )


def test_upstream_image_drift_changes_the_tarball(tmp_path: Path) -> None:
    with ExampleUpstream(dir=tmp_path) as u:
        before = u.asset_sha256(OLD, f"rke2.linux-{ARCH}.tar.gz")
        u.drift(OLD, IMAGES)
        tarball = u.asset_bytes(OLD, f"rke2.linux-{ARCH}.tar.gz")
        assert hashlib.sha256(tarball).hexdigest() != before
        assert embedded_images(tarball)[IMAGES] == u.asset_sha256(OLD, IMAGES)
        assert u.size_of(OLD, f"rke2.linux-{ARCH}.tar.gz") == len(tarball)


def test_tarball_size_does_not_depend_on_the_hashes() -> None:
    names = [standin.image_name(ARCH, g) for g in ("", "core", "canal")]
    sizes = {len(standin.rke2_tarball(ARCH, OLD, dict.fromkeys(names, c * 64))) for c in "0f7a"}
    assert sizes == {standin.rke2_tarball_size(ARCH, OLD, names)}
    # deterministic, and a valid tar.gz (three gzip members read as one stream)
    assert standin.rke2_tarball(ARCH, OLD) == standin.rke2_tarball(ARCH, OLD)
    assert set(embedded_images(standin.rke2_tarball(ARCH, OLD))) == {
        standin.image_name(ARCH, g) for g in standin.IMAGE_GROUPS
    }


def test_bundles_for_both_minors_can_be_created(up: ExampleUpstream, tmp_path: Path) -> None:
    settings = upstream.UpstreamSettings(
        api_url=up.api_url, release_url=up.release_url, raw_url=up.raw_url, backoff=0.05
    )
    key = keys.generate_private_key()
    for spec, tag in (("v1.28.x", OLD), ("v1.29.x", NEW)):
        lock = locking.lock_release(
            locking.LockSettings(
                spec=spec, upstream=settings, arches=(ARCH,), cache_dir=tmp_path / "cache"
            )
        )
        out = tmp_path / f"{tag}.tar.zst"
        created = create.create_bundle(
            lock,
            create.CreateSettings(
                upstream=settings,
                signature=lambda b: keys.sign(key, b),
                out=out,
                lock_out=tmp_path / f"{tag}.lock",
                cache_dir=tmp_path / "cache",
            ),
        )
        assert created.bundle.path.exists()
        assert tag in (tmp_path / f"{tag}.lock").read_text()
