"""Real containerd (tests/support/containerd.py) imports image archives as RKE2 does, and
says which references a pod could use. These tests pin down the facts mk8s's image
archives are built on: names come from ``io.containerd.image.name`` / RepoTags, the
digest a pod pins is the digest of what was imported, an index whose other platforms
are absent imports on RKE2 with WithSkipMissing and fails on older RKE2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import oci
from tests.support.containerd import Containerd, repository
from tests.support.standin import images as release

pytestmark = pytest.mark.hosts  # needs root (a private containerd)

TAG = "v1.28.15+rke2r1"
NAME = "rke2-images.linux-amd64.tar.zst"


def test_repository_of_a_tagged_name() -> None:
    assert repository("docker.io/rancher/pause:3.6") == "docker.io/rancher/pause"
    assert repository("10.0.0.1:5000/acme/web:1.0") == "10.0.0.1:5000/acme/web"
    assert repository("10.0.0.1:5000/acme/web") is None
    assert repository(f"r.test/a@sha256:{'0' * 64}") is None


def test_the_release_docker_archive_resolves_by_its_tags(
    containerd: Containerd, tmp_path: Path
) -> None:
    """The stand-in release's real image tarball: zstd, padded with skippable frames."""
    path = tmp_path / NAME
    path.write_bytes(release.image_archive("amd64", TAG, NAME, size=64 * 1024))
    got = containerd.judge([path])
    assert got.errors == {}
    for ref in release.images_in(TAG, NAME):
        digest = got.resolves(ref)
        assert digest is not None, (ref, got.refs)
        assert got.resolves(f"{repository(ref)}@{digest}") == digest  # k3s's retag


def test_a_full_index_resolves_by_tag_and_by_its_own_digest(
    containerd: Containerd, tmp_path: Path
) -> None:
    idx = oci.build_index(("linux/amd64", "linux/arm64"), seed="full")
    path = oci.layout_archive(tmp_path / "full.oci.tar", {"reg.test/acme/multi:3.0": idx})
    got = containerd.judge([path])
    assert got.resolves("reg.test/acme/multi:3.0") == idx.digest
    assert got.resolves(f"reg.test/acme/multi@{idx.digest}") == idx.digest


def test_an_index_without_its_other_platforms_keeps_its_digest(
    containerd: Containerd, tmp_path: Path
) -> None:
    """The original index, only linux/amd64's manifest and blobs: RKE2 with
    WithSkipMissing imports it under the index's own digest; older RKE2 does not."""
    idx = oci.build_index(("linux/amd64", "linux/arm64"), seed="partial")
    arm = idx.images["linux/arm64"]
    path = oci.layout_archive(
        tmp_path / "partial.oci.tar",
        {"reg.test/acme/part:1": idx},
        omit=[arm.digest, *arm.blobs],
    )
    got = containerd.judge([path])
    assert got.errors == {}
    assert got.resolves(f"reg.test/acme/part@{idx.digest}") == idx.digest
    old = containerd.judge([path], all_platforms=True)
    assert "not found" in old.errors[path.name] and old.refs == {}


def test_a_rewritten_index_loses_the_pinned_digest(containerd: Containerd, tmp_path: Path) -> None:
    """What mk8s used to carry: an index cut down to amd64 (other bytes, other digest).
    The tag resolves, the digest the lock pins does not."""
    idx = oci.build_index(("linux/amd64", "linux/arm64"), seed="cut")
    doc = json.loads(idx.index)
    doc["manifests"] = [m for m in doc["manifests"] if m["platform"]["architecture"] == "amd64"]
    cut = oci.BuiltIndex(json.dumps(doc).encode(), {"linux/amd64": idx.images["linux/amd64"]})
    path = oci.layout_archive(tmp_path / "cut.oci.tar", {"reg.test/acme/cut:1": cut})
    got = containerd.judge([path])
    assert got.resolves("reg.test/acme/cut:1") == cut.digest != idx.digest
    assert got.resolves(f"reg.test/acme/cut@{idx.digest}") is None


def test_a_damaged_layer_fails_the_import(containerd: Containerd, tmp_path: Path) -> None:
    img = oci.build_image(seed="bad")
    layer = oci.digest_of(img.layers[0])
    path = oci.layout_archive(
        tmp_path / "bad.oci.tar",
        {"reg.test/acme/bad:1": img},
        replace={layer: img.layers[0][:-3] + b"xyz"},
    )
    got = containerd.judge([path])
    assert path.name in got.errors and got.resolves("reg.test/acme/bad:1") is None
