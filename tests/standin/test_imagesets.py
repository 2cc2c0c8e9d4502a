"""The example upstream's image sets between consecutive patches model RKE2's
(tests/support/standin/imagesets.py, from rancher/rke2 scripts/build-images): most images
unchanged, about 6 of the 16 non-Kubernetes ones rebuilt per patch, the biggest most
often, layers shared; so a delta's size means something."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import statistics
import tarfile

import zstandard

from tests.support.standin import images, imagesets
from tests.support.upstream import ExampleUpstream

ARCH = "amd64"
NAME = "rke2-images.linux-amd64.tar.zst"
OLD, NEW = "v1.28.14+rke2r1", "v1.28.15+rke2r1"


def test_a_release_carries_rke2s_images() -> None:
    refs = images.release_images(NEW)
    assert len(refs["core"]) == 16 and len(refs["canal"]) == 2
    others = [r for r in refs["core"] + refs["canal"] if "rke2-runtime" not in r]
    others = [r for r in others if "hardened-kubernetes" not in r]
    assert len(others) == 16 and images.PAUSE in others
    assert images.images_in(NEW, NAME) == refs["core"] + refs["canal"]


def test_about_six_of_sixteen_rebuilt_per_patch_the_biggest_most_often() -> None:
    counts = []
    per_image: dict[str, int] = {r: 0 for r, _, _ in imagesets.OTHERS}
    for minor in range(24, 32):
        for patch in range(1, 17):
            rebuilt = [r for r, _, _ in imagesets.OTHERS if imagesets.rebuilt(r, minor, patch)]
            counts.append(len(rebuilt))
            for r in rebuilt:
                per_image[r] += 1
    assert 5.0 <= statistics.mean(counts) <= 7.5, statistics.mean(counts)
    biggest = max(imagesets.OTHERS, key=lambda o: o[1])[0]
    assert per_image[biggest] == max(per_image.values())
    assert per_image["docker.io/rancher/pause"] == 0
    # and so from one patch to the next, most image references stay as they were
    old, new = set(images.images_in(OLD, NAME)), set(images.images_in(NEW, NAME))
    kept = old & new
    assert 8 <= len(kept) <= 14 and all("rke2-runtime" not in r for r in kept)


def _layers(archive: bytes) -> dict[str, set[str]]:
    """image reference -> sha256 of each of its layer tars, read with tarfile."""
    data = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(archive)).read()
    files = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        for ti in tf:
            f = tf.extractfile(ti)
            if f is not None:
                files[ti.name] = f.read()
    out = {}
    for entry in json.loads(files["manifest.json"]):
        digests = {hashlib.sha256(files[p]).hexdigest() for p in entry["Layers"]}
        out[entry["RepoTags"][0]] = digests
    return out


def test_consecutive_releases_share_layers_even_of_rebuilt_images() -> None:
    size = 2 << 20  # real layer bytes
    old = _layers(images.image_archive(ARCH, OLD, NAME, size))
    new = _layers(images.image_archive(ARCH, NEW, NAME, size))
    old_layers = set().union(*old.values())
    for ref, layers in new.items():
        if ref in old:  # an image this patch did not rebuild: every layer as before
            assert layers == old[ref], ref
        else:  # a rebuilt one still shares the base layer with the release before
            assert layers & old_layers, ref
            assert layers - old_layers, ref


def test_the_rke2_tarball_knows_its_archives_and_their_contents() -> None:
    with ExampleUpstream() as up:
        tarball = up.asset_bytes(NEW, f"rke2.linux-{ARCH}.tar.gz")
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(tarball))) as tf:
            member = tf.extractfile("bin/rke2")
            assert member is not None
            program = member.read().decode()
        m = re.search(r'^IMAGES_JSON = """(.*)"""$', program, re.M)
        assert m
        data = json.loads(m.group(1))
        file_sha, content_sha = data[NAME].split(":")
        assert file_sha == up.asset_sha256(NEW, NAME)
        content = (
            zstandard.ZstdDecompressor()
            .stream_reader(io.BytesIO(up.asset_bytes(NEW, NAME)), read_across_frames=False)
            .read()
        )
        assert content_sha == hashlib.sha256(content).hexdigest()
