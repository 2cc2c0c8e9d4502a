"""The example upstream's image tarballs as real ``docker save`` archives (zstd).

RKE2's ``rke2-images*.linux-ARCH.tar.zst`` are zstd-compressed docker archives; the
example upstream serves small real ones, so that ``mk8s.images.list_images`` (and the
SBOM and diff built on it) read names, tags and digests from them. The images are the
ones the release's ``.txt`` list names (``docker.io/rancher/<group>-image-<k>:<version>
-build2024``), for the tarball's architecture, with content seeded by tag, name and
drift generation, so every release, arch and re-publication has its own digests.

Sizes stay what the upstream reports: after the archive's zstd frame comes a zstd
*skippable* frame of seeded random bytes up to the exact size (zstd, tar via zstd and
python-zstandard all skip it), so big benchmark tarballs remain incompressible. A size
too small to hold the archive gets plain random bytes, as before.
"""

from __future__ import annotations

import hashlib
import json
import random
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from tests.support.oci import SavedImage, digest_of, docker_archive, tar_of

SKIPPABLE_MAGIC = 0x184D2A50
MAX_SKIPPABLE = 1 << 30  # payload per skippable frame (the size field is 32 bits)


def image_refs(tag: str, name: str) -> list[str]:
    """The references the release's image list names for the tarball ``name``."""
    version = tag.split("+")[0]
    group = name.split(".linux-")[0].removeprefix("rke2-images").lstrip("-") or "all"
    return [f"docker.io/rancher/{group}-image-{k}:{version}-build2024" for k in range(3)]


def _saved(ref: str, seed: str, arch: str, base: bytes) -> SavedImage:
    own = tar_of({"opt/data": f"{seed}\n".encode() * 4, "etc/hostname": seed.encode()})
    layers = [base, own]
    config = {
        "architecture": arch,
        "os": "linux",
        "config": {"Env": [f"SEED={seed}"], "Cmd": ["/bin/hello"]},
        "rootfs": {"type": "layers", "diff_ids": [digest_of(t) for t in layers]},
    }
    return SavedImage([ref], json.dumps(config, sort_keys=True).encode(), layers)


def archive_bytes(tag: str, name: str, arch: str, generation: int) -> bytes:
    """A zstd docker archive of the images ``image_refs`` names (deterministic)."""
    base = tar_of({"etc/os-release": f"ID=example\nVERSION={tag}\n".encode()})
    seed = hashlib.sha256(f"{tag}|{name}|{generation}".encode()).hexdigest()[:12]
    images = [_saved(ref, f"{seed}-{k}", arch, base) for k, ref in enumerate(image_refs(tag, name))]
    with tempfile.TemporaryDirectory(prefix="mk8s-imagetar-") as d:
        return docker_archive(Path(d) / "images.tar.zst", images).read_bytes()


def writer(
    key: str, tag: str, name: str, arch: str, generation: int, size: int
) -> Callable[[BinaryIO], None]:
    """Writes the tarball of exactly ``size`` bytes (see the module docstring)."""

    def write(f: BinaryIO) -> None:
        rnd = random.Random(hashlib.sha256(key.encode()).digest())
        archive = archive_bytes(tag, name, arch, generation)
        left = size - len(archive)
        if left < 8:
            _random(f, rnd, size)
            return
        f.write(archive)
        while left > 0:
            payload = min(left - 8, MAX_SKIPPABLE)
            if left - 8 - payload in range(1, 8):  # never leave a gap too small for a frame
                payload -= 8
            f.write(struct.pack("<II", SKIPPABLE_MAGIC, payload))
            _random(f, rnd, payload)
            left -= 8 + payload

    return write


def _random(f: BinaryIO, rnd: random.Random, n: int) -> None:
    while n > 0:
        chunk = min(n, 1 << 22)
        f.write(rnd.randbytes(chunk))
        n -= chunk
