"""The images of a stand-in RKE2 release, and real docker archives holding them.

Both the example upstream (which serves ``rke2-images*.linux-ARCH.tar.zst``) and the
stand-in program (which must know the images of its own release, to ask a registry or
a peer for them) use :func:`release_images`, so the two always agree. Which images a
release has, and which of them a patch rebuilds, is :mod:`.imagesets` (modeled on
rancher/rke2 scripts/build-images).

Groups follow RKE2: ``core`` (the runtime, Kubernetes and 14 other images), one group
per CNI and a few extra groups; ``rke2-images.linux-ARCH.tar.zst`` holds core plus
canal (the default CNI), ``rke2-images-GROUP.linux-ARCH.tar.zst`` holds that group only.

:func:`image_archive_writer` writes what ``docker save`` writes (``manifest.json`` with
``RepoTags``, ``<config hex>.json``, ``<id>/layer.tar``), with ``manifest.json`` and
``repositories`` first as rancher/rke2 scripts/package-images reorders them, compressed
as that script does (``zstd -T0 -16 --long=25``). An archive configured at least
:data:`REAL_FROM` bytes big carries that many bytes of layers (random, so
incompressible: the compressed size is known before compressing), each layer a
function of its image's generation only, so consecutive releases share every layer an
image kept. Any size left over is a zstd *skippable frame* of key-derived bytes after
the archive: every zstd decoder skips it, and the file is exactly as big as the
upstream says (tests use small sizes; their layers hold a few bytes each).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import random
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

import zstandard

from tests.support.standin import imagesets
from tests.support.standin.imagesets import PAUSE, image_tag

DEFAULT_CNI = "canal"
GROUPS = ("core", "canal", "cilium", "calico", "multus", "flannel", "vsphere", "harvester")
_SKIPPABLE_MAGIC = (0x184D2A50).to_bytes(4, "little")
_MAX_SKIP = 1 << 30  # bytes of padding per skippable frame (the size field is 32 bits)
MIN_PAD = 8 + 16  # one skippable frame header and 16 key-derived bytes, always present
REAL_FROM = 1 << 20  # archives at least this big carry real layer bytes
BLOCK = 512
RECORD = 20 * BLOCK
CHUNK = 1 << 20


# upstream: rancher/rke2 scripts/build-images (images-core.txt, images-<cni>.txt), scripts/package-images [CONTRACT IM3]
def release_images(tag: str) -> dict[str, list[str]]:
    """Image references of release ``tag`` by group (the same for every arch)."""
    return {g: [i.ref for i in imgs] for g, imgs in _release(tag).items()}


@functools.lru_cache(maxsize=4096)
def _release(tag: str) -> dict[str, list[imagesets.Image]]:
    out = imagesets.images(tag)
    minor = (imagesets.parse(tag) or (0, 0, 0))[0]
    for g in GROUPS[2:]:
        ref = f"docker.io/rancher/hardened-{g}:{image_tag(tag)}"
        out[g] = [imagesets.Image(ref, 1, f"{minor}", tag, tag)]
    return out


def group_of(name: str) -> str | None:
    """``rke2-images.linux-amd64.tar.zst`` -> None (core + canal); ``-G.`` -> ``G``."""
    stem = name.split(".linux-")[0]
    g = stem.removeprefix("rke2-images").lstrip("-")
    return g or None


def _images_of(tag: str, name: str) -> list[imagesets.Image]:
    imgs = dict(_release(tag))
    g = group_of(name)
    if g is None:
        return imgs["core"] + imgs[DEFAULT_CNI]
    if g in imgs:
        return list(imgs[g])
    return [imagesets.Image(f"docker.io/rancher/hardened-{g}:{image_tag(tag)}", 1, "0", tag, tag)]


def images_in(tag: str, name: str) -> list[str]:
    """The image references an ``rke2-images*`` tarball of ``tag`` holds."""
    return [i.ref for i in _images_of(tag, name)]


# -- the archive's layout ------------------------------------------------------------------
@dataclass(frozen=True)
class _Layer:
    key: str  # what the layer's bytes are a function of
    size: int  # random bytes after its fixed-length header line

    @property
    def payload(self) -> int:
        return 65 + self.size

    @property
    def tar_length(self) -> int:
        return _tar_length([self.payload], record=BLOCK)  # as Go's archive/tar: no records


def _tar_length(sizes: list[int], record: int = RECORD) -> int:
    n = sum(BLOCK + -(-s // BLOCK) * BLOCK for s in sizes) + 2 * BLOCK
    return -(-n // record) * record


def _layer_chunks(layer: _Layer) -> Iterator[bytes]:
    """A layer.tar: one file holding a header line and ``size`` seeded random bytes."""
    info = tarfile.TarInfo("usr/share/mk8s/layer")
    info.size, info.mode, info.mtime = layer.payload, 0o644, 0
    yield info.tobuf(format=tarfile.GNU_FORMAT)
    yield hashlib.sha256(layer.key.encode()).hexdigest().encode() + b"\n"
    rnd = random.Random(layer.key)
    left = layer.size
    while left > 0:
        n = min(left, CHUNK)
        yield rnd.randbytes(n)
        left -= n
    yield b"\0" * (-layer.payload % BLOCK)
    written = BLOCK + -(-layer.payload // BLOCK) * BLOCK
    yield b"\0" * (layer.tar_length - written)


@functools.lru_cache(maxsize=4096)
def _diff_id(layer: _Layer) -> str:
    h = hashlib.sha256()
    for chunk in _layer_chunks(layer):
        h.update(chunk)
    return h.hexdigest()


def _budget(size: int) -> int:
    """Layer bytes of an archive of ``size``: all but a margin that covers zstd's block
    headers on incompressible data, the compressed metadata and MIN_PAD."""
    return max(0, size - size // 20000 - 65536) if size >= REAL_FROM else 0


def _layers(arch: str, image: imagesets.Image, share: int, base: int, salt: str) -> list[_Layer]:
    deps = share * 40 // 100
    repo = image.repository
    return [
        _Layer(f"{arch}|base|{image.base}|{base}|{salt}", base),
        _Layer(f"{arch}|{repo}|deps|{image.deps}|{deps}|{salt}", deps),
        _Layer(f"{arch}|{repo}|top|{image.top}|{share - deps}|{salt}", share - deps),
    ]


Member = tuple[str, int, Callable[[], Iterator[bytes]]]


def _members(arch: str, tag: str, name: str, size: int, salt: str) -> list[Member]:
    """The archive's members in order: (name, length, producer)."""
    imgs = _images_of(tag, name)
    budget = _budget(size)
    base = budget * 4 // 100
    weights = sum(i.weight for i in imgs)
    files: dict[str, Member] = {}
    manifest = []
    for img in imgs:
        layers = _layers(arch, img, (budget - base) * img.weight // weights, base, salt)
        ids = [_diff_id(x) for x in layers]
        config = _config(arch, img.ref, ids)
        chain = ""
        paths = []
        for layer, diff in zip(layers, ids, strict=True):
            chain = hashlib.sha256(f"{chain}{diff}".encode()).hexdigest()
            paths.append(f"{chain}/layer.tar")
            files[f"{chain}/layer.tar"] = (f"{chain}/layer.tar", layer.tar_length, _gen(layer))
            files[f"{chain}/VERSION"] = _small(f"{chain}/VERSION", b"1.0")
            files[f"{chain}/json"] = _small(f"{chain}/json", json.dumps({"id": chain}).encode())
        cfg = hashlib.sha256(config).hexdigest()
        files[f"{cfg}.json"] = _small(f"{cfg}.json", config)
        manifest.append({"Config": f"{cfg}.json", "RepoTags": [img.ref], "Layers": paths})
    head = [
        _small("manifest.json", json.dumps(manifest).encode()),
        _small("repositories", b"{}"),
    ]
    return head + [files[n] for n in sorted(files)]


# The lengths of members whose content is a fixed-length digest, for sizes computed
# without hashing anything (every digest is 64 hex digits).
_LAYER_JSON = len(json.dumps({"id": "0" * 64}))
_MANIFEST_ENTRY = len(json.dumps({"Config": "0" * 64 + ".json", "RepoTags": [""], "Layers": []}))
_LAYER_PATH = len(json.dumps("0" * 64 + "/layer.tar"))


def _member_sizes(arch: str, tag: str, name: str, size: int) -> list[int]:
    """The lengths of :func:`_members` without hashing any layer: layers shared between
    images (same key) are stored once, as in the real archive."""
    imgs = _images_of(tag, name)
    budget = _budget(size)
    base = budget * 4 // 100
    weights = sum(i.weight for i in imgs)
    seen: set[_Layer] = set()
    out: list[int] = []
    manifest = 2 + 2 * (len(imgs) - 1)  # "[" "]" and ", " between entries
    for img in imgs:
        layers = _layers(arch, img, (budget - base) * img.weight // weights, base, "")
        manifest += _MANIFEST_ENTRY + len(json.dumps(img.ref)) - 2
        manifest += len(layers) * _LAYER_PATH + 2 * (len(layers) - 1)
        for layer in layers:
            if layer not in seen:
                seen.add(layer)
                out += [layer.tar_length, 3, _LAYER_JSON]
        out.append(len(_config(arch, img.ref, ["0" * 64] * len(layers))))
    return [manifest, 2, *out]


def _config(arch: str, ref: str, diff_ids: list[str]) -> bytes:
    return json.dumps(
        {
            "architecture": arch,
            "os": "linux",
            "config": {"Env": [f"IMAGE={ref}"], "Cmd": ["/pause"]},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{d}" for d in diff_ids]},
            "history": [{"created_by": "mk8s test"}] * len(diff_ids),
        },
        sort_keys=True,
    ).encode()


def _small(name: str, data: bytes) -> Member:
    return (name, len(data), lambda: iter((data,)))


def _gen(layer: _Layer) -> Callable[[], Iterator[bytes]]:
    return lambda: _layer_chunks(layer)


# -- sizes ----------------------------------------------------------------------------------
@functools.lru_cache(maxsize=65536)
def archive_size(arch: str, tag: str, name: str, configured: int) -> int:
    """The size of the served file: ``configured`` when that is big enough to hold the
    archive (always from REAL_FROM on), else the bound zstd's output cannot exceed."""
    if configured >= REAL_FROM:
        return configured
    length = _tar_length(_member_sizes(arch, tag, name, configured))
    return max(configured, length + length // 256 + 1024 + MIN_PAD)


# One int per (arch, tag, name), never evicted: a release listing reports the size of
# about 1500 image tarballs, more than docker_archive_bytes keeps, and rebuilding them
# for every listing cost seconds per test.
@functools.cache
def natural_size(arch: str, tag: str, name: str) -> int:
    """The smallest size :func:`image_archive` writes for ``name``."""
    return archive_size(arch, tag, name, 0)


# -- writing ------------------------------------------------------------------------------
def _compressor(level: int = 16) -> zstandard.ZstdCompressor:
    # upstream: rancher/rke2 scripts/package-images: zstd -T0 -16 -f --long=25
    params = zstandard.ZstdCompressionParameters(
        compression_level=level,
        window_log=25,
        enable_ldm=1,
        threads=max(1, os.cpu_count() or 1),
        write_checksum=1,
        write_content_size=1,
    )
    return zstandard.ZstdCompressor(compression_params=params)


class _Counter:
    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.n = 0

    def write(self, data: bytes) -> int:
        self.n += len(data)
        return self.f.write(data)

    def flush(self) -> None:
        pass


def _write_archive(
    f: BinaryIO, arch: str, tag: str, name: str, size: int, salt: str, level: int
) -> int:
    members = _members(arch, tag, name, size, salt)
    length = _tar_length([m[1] for m in members])
    out = _Counter(f)
    with _compressor(level).stream_writer(out, size=length, closefd=False) as z:  # type: ignore[arg-type]
        written = 0
        for mname, n, produce in members:
            info = tarfile.TarInfo(mname)
            info.size, info.mode, info.mtime = n, 0o644, 0
            z.write(info.tobuf(format=tarfile.GNU_FORMAT))
            for chunk in produce():
                z.write(chunk)
            z.write(b"\0" * (-n % BLOCK))
            written += BLOCK + -(-n // BLOCK) * BLOCK
        z.write(b"\0" * (length - written))
    return out.n


def image_archive_writer(
    arch: str, tag: str, name: str, size: int, key: str, *, level: int = 16
) -> Callable[[BinaryIO], None]:
    """A writer of the archive padded to ``max(size, natural_size)`` bytes; the padding
    (at least 16 bytes) is derived from ``key``, so a new key (upstream drift) makes
    new bytes of the same size. ``level``: zstd's, RKE2's -16 unless a test models a
    release that another zstd built."""

    # The drift generation (the key's 4th field) salts the images: a re-published
    # tarball holds the same names and tags at new digests, as a real re-publication.
    fields = key.split("|")
    salt = f"g{fields[3]}" if len(fields) > 4 and fields[3] not in ("", "0") else ""

    def write(f: BinaryIO) -> None:
        total = archive_size(arch, tag, name, size)
        data_len = _write_archive(f, arch, tag, name, total, salt, level)
        left = total - data_len
        if left < MIN_PAD:
            raise AssertionError(f"{name}: archive of {data_len} bytes does not fit {total}")
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


__all__ = [
    "DEFAULT_CNI",
    "GROUPS",
    "MIN_PAD",
    "PAUSE",
    "REAL_FROM",
    "archive_size",
    "group_of",
    "image_archive",
    "image_archive_writer",
    "image_tag",
    "images_in",
    "natural_size",
    "release_images",
]
