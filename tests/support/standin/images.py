"""The images of a stand-in RKE2 release, and real docker archives holding them.

Both the example upstream (which serves ``rke2-images*.linux-ARCH.tar.zst``) and the
stand-in program (which must know the images of its own release, to ask a registry or
a peer for them) use :func:`release_images`, so the two always agree.

Groups follow RKE2: ``core`` (the runtime and pause images), one group per CNI and a
few extra groups; ``rke2-images.linux-ARCH.tar.zst`` holds core plus canal (the default
CNI), ``rke2-images-GROUP.linux-ARCH.tar.zst`` holds that group only.

:func:`image_archive` writes what ``docker save`` writes (``manifest.json`` with
``RepoTags``, ``<config hex>.json``, ``<id>/layer.tar``), zstd-compressed, padded to
an exact size with a zstd *skippable frame* of key-derived random bytes: every zstd
decoder skips it (``zstd -t`` passes; mk8s's reader reads across frames), the image
content stays small (a registry push moves kilobytes), and the file is as big as the
upstream says (benchmarks configure sizes of many MiB).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import random
import tarfile
from collections.abc import Callable
from typing import BinaryIO

import zstandard

DEFAULT_CNI = "canal"
GROUPS = ("core", "canal", "cilium", "calico", "multus", "flannel", "vsphere", "harvester")
PAUSE = "docker.io/rancher/pause:3.6"
_SKIPPABLE_MAGIC = (0x184D2A50).to_bytes(4, "little")
_MAX_SKIP = 1 << 30  # bytes of padding per skippable frame (the size field is 32 bits)
MIN_PAD = 8 + 16  # one skippable frame header and 16 key-derived bytes, always present


def image_tag(tag: str) -> str:
    """RKE2's image tag for a release tag: ``v1.28.15+rke2r1`` -> ``v1.28.15-rke2r1``."""
    return tag.replace("+", "-")


# upstream: rancher/rke2 scripts/build-images (images-core.txt, images-<cni>.txt), scripts/package-images [CONTRACT IM3]
def release_images(tag: str) -> dict[str, list[str]]:
    """Image references of release ``tag`` by group (the same for every arch)."""
    t = image_tag(tag)
    out = {"core": [f"docker.io/rancher/rke2-runtime:{t}", PAUSE]}
    for g in GROUPS[1:]:
        out[g] = [f"docker.io/rancher/hardened-{g}:{t}"]
    return out


def group_of(name: str) -> str | None:
    """``rke2-images.linux-amd64.tar.zst`` -> None (core + canal); ``-G.`` -> ``G``."""
    stem = name.split(".linux-")[0]
    g = stem.removeprefix("rke2-images").lstrip("-")
    return g or None


def images_in(tag: str, name: str) -> list[str]:
    """The image references an ``rke2-images*`` tarball of ``tag`` holds."""
    imgs = release_images(tag)
    g = group_of(name)
    if g is None:
        return imgs["core"] + imgs[DEFAULT_CNI]
    return list(imgs.get(g, [f"docker.io/rancher/hardened-{g}:{image_tag(tag)}"]))


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for n in sorted(files):
            info = tarfile.TarInfo(n)
            info.size, info.mode, info.mtime = len(files[n]), 0o644, 0
            tf.addfile(info, io.BytesIO(files[n]))
    return buf.getvalue()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@functools.lru_cache(maxsize=512)
def docker_archive_bytes(arch: str, tag: str, name: str, salt: str = "") -> bytes:
    """The zstd docker-save archive (no padding) of ``name`` for ``arch``/``tag``;
    ``salt`` (the upstream's drift generation) changes every image's digest."""
    base = _tar({"etc/os-release": b"ID=mk8s-test\n", "etc/arch": arch.encode()})
    members: dict[str, bytes] = {}
    manifest = []
    base_path = ""
    for ref in images_in(tag, name):
        own = _tar({"usr/share/image": f"{ref} {arch} {salt}\n".encode()})
        layers = [base, own]
        config = json.dumps(
            {
                "architecture": arch,
                "os": "linux",
                "config": {"Env": [f"IMAGE={ref}"], "Cmd": ["/pause"]},
                "rootfs": {"type": "layers", "diff_ids": ["sha256:" + _sha(x) for x in layers]},
                "history": [{"created_by": "mk8s test"}, {"created_by": ref}],
            },
            sort_keys=True,
        ).encode()
        paths = []
        for i, layer in enumerate(layers):
            layer_id = _sha(f"{_sha(config)}{i}".encode())
            path = f"{layer_id}/layer.tar"
            if i == 0 and base_path:
                path = base_path  # shared base layer stored once
            else:
                members[path] = layer
                members[f"{layer_id}/VERSION"] = b"1.0"
                members[f"{layer_id}/json"] = json.dumps({"id": layer_id}).encode()
                if i == 0:
                    base_path = path
            paths.append(path)
        members[_sha(config) + ".json"] = config
        manifest.append({"Config": _sha(config) + ".json", "RepoTags": [ref], "Layers": paths})
    members["manifest.json"] = json.dumps(manifest).encode()
    members["repositories"] = b"{}"
    return zstandard.ZstdCompressor(level=19).compress(_tar(members))


# One int per (arch, tag, name), never evicted: a release listing reports the size of
# about 1500 image tarballs, more than docker_archive_bytes keeps, and rebuilding them
# for every listing cost seconds per test.
@functools.cache
def natural_size(arch: str, tag: str, name: str) -> int:
    """The smallest size :func:`image_archive` can write for ``name``."""
    # Room for the few bytes a drift salt adds to the compressed archive.
    return len(docker_archive_bytes(arch, tag, name)) + MIN_PAD + 64


def image_archive_writer(
    arch: str, tag: str, name: str, size: int, key: str
) -> Callable[[BinaryIO], None]:
    """A writer of the archive padded to ``max(size, natural_size)`` bytes; the padding
    (at least 16 bytes) is derived from ``key``, so a new key (upstream drift) makes
    new bytes of the same size."""

    # The drift generation (the key's 4th field) salts the images: a re-published
    # tarball holds the same names and tags at new digests, as a real re-publication.
    fields = key.split("|")
    salt = f"g{fields[3]}" if len(fields) > 4 and fields[3] not in ("", "0") else ""

    def write(f: BinaryIO) -> None:
        data = docker_archive_bytes(arch, tag, name, salt)
        f.write(data)
        left = max(size, natural_size(arch, tag, name)) - len(data)
        rnd = random.Random(hashlib.sha256(key.encode()).digest())
        while left > 0:
            n = min(left - 8, _MAX_SKIP)
            if left - 8 - n and left - 8 - n < MIN_PAD:
                n -= MIN_PAD  # leave room for a whole last frame
            f.write(_SKIPPABLE_MAGIC + n.to_bytes(4, "little"))
            while n > 0:
                k = min(n, 1 << 22)
                f.write(rnd.randbytes(k))
                n -= k
                left -= k
            left -= 8

    return write


def image_archive(arch: str, tag: str, name: str, size: int = 0, key: str = "") -> bytes:
    """The bytes :func:`image_archive_writer` writes (small sizes only)."""
    buf = io.BytesIO()
    image_archive_writer(arch, tag, name, size, key or name)(buf)  # type: ignore[arg-type]
    return buf.getvalue()
