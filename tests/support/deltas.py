"""Bundles of consecutive RKE2 patches from the example upstream, full and delta.

A patch upgrade as users make one: v1.28.14 then v1.28.15 (canal, amd64), each a full
bundle, and the delta of v1.28.15 against the v1.28.14 bundle. The image archives are
big enough (:data:`IMAGE_SIZE`) to carry real layer bytes (tests/support/standin/images.py),
so which blobs the delta carries is the model's, not padding's.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

from mk8s.bundle import create
from mk8s.bundle import lock as locking
from mk8s.bundle.format import keys
from mk8s.bundle.format.manifest import Lock
from mk8s.bundle.upstream.settings import UpstreamSettings
from tests.support.upstream import ExampleUpstream

OLDER = "v1.28.13+rke2r1"
OLD = "v1.28.14+rke2r1"
NEW = "v1.28.15+rke2r1"
IMAGES = "rke2-images.linux-amd64.tar.zst"
IMAGE_SIZE = 3 << 20


@dataclass
class World:
    dir: Path
    up: ExampleUpstream
    key: keys.PrivateKey
    pub: Path
    bundles: dict[str, Path] = field(default_factory=dict)
    locks: dict[str, Path] = field(default_factory=dict)
    files: tuple[Path, ...] = ()  # the operator's files every release carries

    @property
    def settings(self) -> UpstreamSettings:
        up = self.up
        return UpstreamSettings(
            api_url=up.api_url, release_url=up.release_url, raw_url=up.raw_url, backoff=0.05
        )

    def lock(self, tag: str) -> Lock:
        settings = locking.LockSettings(
            spec=tag, upstream=self.settings, cache_dir=self.dir / "cache", files=self.files
        )
        return locking.lock_release(settings)

    def bundle(
        self,
        name: str,
        lock: Lock,
        base: Path | None = None,
        cache: str = "cache",
        **kw: object,
    ) -> create.Created:
        """Create ``name`` (a delta against ``base`` when given) from ``lock``."""
        out = self.dir / name
        created = create.create_bundle(
            lock,
            create.CreateSettings(
                upstream=self.settings,
                signature=lambda b: keys.sign(self.key, b),
                out=out,
                lock_out=self.dir / f"{name}.lock",
                cache_dir=self.dir / cache,
                base=base,
                **kw,  # type: ignore[arg-type]
            ),
        )
        self.bundles[name] = created.bundle.path
        self.locks[name] = created.lock_path
        return created


@contextlib.contextmanager
def world(d: Path, *, image_size: int = IMAGE_SIZE, zstd_level: int = 16) -> Iterator[World]:
    """The example upstream and the full bundles of OLD and NEW, plus the delta of NEW
    against OLD (``old``, ``new``, ``delta``). ``zstd_level``: the upstream's image
    archives' (another level than RKE2's -16 models a release built by another zstd)."""
    d.mkdir(parents=True, exist_ok=True)
    files = keys.write_key_pair(keys.generate_private_key(), d / "mk8s", None)
    key = keys.load_private_key(files.private, lambda: None)
    site = d / "site-manifests.yaml"  # unchanged between the releases: from the base
    site.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: site}\n")
    # only the archive the bundles carry is big: the release's others stay small (its
    # checksum file lists them all, so each is generated)
    sizes = {IMAGES: image_size}
    with ExampleUpstream(sizes=sizes, image_zstd_level=zstd_level) as up:
        w = World(d, up, key, files.public, files=(site,))
        w.bundle("old.tar.zst", w.lock(OLD))
        new_lock = w.lock(NEW)
        w.bundle("new.tar.zst", new_lock)
        w.bundle("delta.tar.zst", new_lock, base=w.bundles["old.tar.zst"])
        yield w


def tar_blobs(archive: bytes) -> dict[str, int]:
    """sha256 -> size of every regular member of at least 512 bytes of a zstd tar:
    the blobs, read with Python's own tarfile (not mk8s's reader)."""
    data = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(archive)).read()
    out = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
        for ti in tf:
            f = tf.extractfile(ti)
            if f is not None and ti.size >= 512:
                out[hashlib.sha256(f.read()).hexdigest()] = ti.size
    return out


def tree(root: Path) -> dict[str, tuple[str, int]]:
    """path -> (sha256, mode) of every file under ``root``."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(root))] = (
                hashlib.sha256(p.read_bytes()).hexdigest(),
                p.stat().st_mode & 0o777,
            )
    return out
