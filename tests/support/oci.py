"""Small real images, built in Python, and raw HTTP to put them into a registry.

* :func:`build_image`: gzip-tar layers of a few files, an image config, an OCI
  manifest; :func:`build_index`: one image per platform plus an OCI image index
  (linux/amd64 + linux/arm64 by default). Content depends on ``seed``, so tests can
  make distinct images. Every byte is deterministic.
* :func:`push_raw`: puts a built image or index into a registry with plain ``requests``
  calls (monolithic uploads, no mk8s code), so pull tests do not depend on mk8s's push.
* :func:`layout_archive`: an OCI image-layout tar (``oci-layout``, ``index.json``,
  ``blobs/sha256/<hex>``) of built images, named by annotations as mk8s writes them;
  blobs can be replaced or left out to make a damaged archive.
* :func:`docker_archive`: what ``docker save`` writes (``<id>/layer.tar``,
  ``<config-hex>.json``, ``manifest.json``, ``repositories``), optionally zstd, with a
  layer shared by two images stored once and linked, as Docker does.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import zstandard

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tar_of(files: dict[str, bytes]) -> bytes:
    """An uncompressed, deterministic tar of ``files``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(files[name]), 0o644, 0
            tf.addfile(info, io.BytesIO(files[name]))
    return buf.getvalue()


def gzip_of(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6, mtime=0)


@dataclass
class BuiltImage:
    """One image: its manifest bytes, config bytes and layers, by digest."""

    platform: str
    manifest: bytes
    config: bytes
    layers: list[bytes]
    diff_ids: list[str]
    layer_tars: list[bytes] = field(default_factory=list)

    @property
    def digest(self) -> str:
        return digest_of(self.manifest)

    @property
    def blobs(self) -> dict[str, bytes]:
        out = {digest_of(self.config): self.config}
        out.update({digest_of(b): b for b in self.layers})
        return out


@dataclass
class BuiltIndex:
    """An image index and the images it lists, by platform."""

    index: bytes
    images: dict[str, BuiltImage]

    @property
    def digest(self) -> str:
        return digest_of(self.index)


def _config(platform: str, diff_ids: list[str], seed: str) -> bytes:
    os_, arch, *variant = platform.split("/")
    doc: dict[str, Any] = {
        "architecture": arch,
        "os": os_,
        "config": {"Env": [f"SEED={seed}"], "Cmd": ["/bin/hello"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": f"layer {i}"} for i in range(len(diff_ids))],
    }
    if variant:
        doc["variant"] = variant[0]
    return json.dumps(doc, sort_keys=True).encode()


def build_image(
    platform: str = "linux/amd64", seed: str = "a", layers: int = 2, layer_size: int = 2000
) -> BuiltImage:
    """A small OCI image with ``layers`` gzip layers of a few files each (one of
    ``layer_size`` random, so incompressible, bytes)."""
    tars = []
    for i in range(layers):
        files = {
            f"etc/{seed}-{i}.txt": f"{seed} {platform} layer {i}\n".encode(),
            f"bin/blob-{i}": random.Random(f"{seed}{platform}{i}").randbytes(layer_size),
            "README": f"image {seed} for {platform}\n".encode(),
        }
        tars.append(tar_of(files))
    gz = [gzip_of(t) for t in tars]
    diff_ids = [digest_of(t) for t in tars]
    config = _config(platform, diff_ids, seed)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": digest_of(config), "size": len(config)},
        "layers": [
            {"mediaType": OCI_LAYER_GZIP, "digest": digest_of(b), "size": len(b)} for b in gz
        ],
    }
    # Indented, as many registries serve them: mk8s must keep these exact bytes.
    data = json.dumps(manifest, indent=3).encode()
    return BuiltImage(platform, data, config, gz, diff_ids, tars)


def build_index(
    platforms: Sequence[str] = ("linux/amd64", "linux/arm64"), seed: str = "a", **kw: Any
) -> BuiltIndex:
    """An OCI image index listing one :func:`build_image` per platform."""
    images = {p: build_image(p, seed, **kw) for p in platforms}
    entries = []
    for p, img in images.items():
        os_, arch, *variant = p.split("/")
        plat: dict[str, str] = {"os": os_, "architecture": arch}
        if variant:
            plat["variant"] = variant[0]
        entries.append(
            {
                "mediaType": OCI_MANIFEST,
                "digest": img.digest,
                "size": len(img.manifest),
                "platform": plat,
            }
        )
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}, indent=2)
    return BuiltIndex(index.encode(), images)


# -- raw pushes -------------------------------------------------------------------------------
def put_blob(session: requests.Session, base: str, repo: str, data: bytes) -> str:
    """Monolithic upload (POST, then PUT with the bytes); returns the digest."""
    digest = digest_of(data)
    r = session.post(f"{base}/v2/{repo}/blobs/uploads/", timeout=30)
    assert r.status_code == 202, (r.status_code, r.text)
    loc = r.headers["Location"]
    url = loc if loc.startswith("http") else base + loc
    sep = "&" if "?" in url else "?"
    r = session.put(
        f"{url}{sep}digest={digest}",
        data=data,
        headers={"Content-Type": "application/octet-stream"},
        timeout=30,
    )
    assert r.status_code == 201, (r.status_code, r.text)
    return digest


def put_manifest(
    session: requests.Session, base: str, repo: str, ref: str, data: bytes, media: str
) -> str:
    r = session.put(
        f"{base}/v2/{repo}/manifests/{ref}",
        data=data,
        headers={"Content-Type": media},
        timeout=30,
    )
    assert r.status_code == 201, (r.status_code, r.text)
    assert r.headers["Docker-Content-Digest"] == digest_of(data)
    return digest_of(data)


def push_raw(
    session: requests.Session, base: str, repo: str, tag: str, built: BuiltImage | BuiltIndex
) -> str:
    """Put ``built`` at ``repo:tag`` with raw API calls; returns the tagged digest."""
    images = list(built.images.values()) if isinstance(built, BuiltIndex) else [built]
    for img in images:
        for blob in img.blobs.values():
            put_blob(session, base, repo, blob)
        ref = img.digest if isinstance(built, BuiltIndex) else tag
        put_manifest(session, base, repo, ref, img.manifest, OCI_MANIFEST)
    if isinstance(built, BuiltIndex):
        return put_manifest(session, base, repo, tag, built.index, OCI_INDEX)
    return built.digest


# -- docker archives --------------------------------------------------------------------------
@dataclass
class SavedImage:
    """An image as ``docker save`` writes it: tags, config and uncompressed layers."""

    repo_tags: list[str]
    config: bytes
    layers: list[bytes]

    @property
    def config_digest(self) -> str:
        return digest_of(self.config)


def saved_image(repo_tags: list[str], seed: str, shared: bytes | None = None) -> SavedImage:
    """An image of two layers (the first ``shared`` when given), linux/amd64."""
    own = tar_of({f"opt/{seed}/data": f"{seed}\n".encode() * 300, "etc/hostname": seed.encode()})
    base = shared if shared is not None else tar_of({"etc/os-release": b"ID=test\n"})
    layers = [base, own]
    config = _config("linux/amd64", [digest_of(t) for t in layers], seed)
    return SavedImage(repo_tags, config, layers)


def docker_archive(path: Path, images: list[SavedImage], *, zstd: bool = True) -> Path:
    """Write a docker-save archive of ``images``; layers shared by content are stored
    once and the second image's copy is a symlink, as Docker does."""
    members: dict[str, bytes] = {}
    links: dict[str, str] = {}
    manifest = []
    by_digest: dict[str, str] = {}
    for img in images:
        layer_paths = []
        for i, layer in enumerate(img.layers):
            d = digest_of(layer)
            layer_id = hashlib.sha256(f"{img.config_digest}{i}".encode()).hexdigest()
            name = f"{layer_id}/layer.tar"
            if d in by_digest:
                links[name] = f"../{by_digest[d]}"
            else:
                members[name] = layer
                by_digest[d] = name
            members[f"{layer_id}/VERSION"] = b"1.0"
            members[f"{layer_id}/json"] = json.dumps({"id": layer_id}).encode()
            layer_paths.append(name)
        config_name = img.config_digest.split(":")[1] + ".json"
        members[config_name] = img.config
        manifest.append({"Config": config_name, "RepoTags": img.repo_tags, "Layers": layer_paths})
    members["manifest.json"] = json.dumps(manifest).encode()
    members["repositories"] = b"{}"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for name in sorted(set(members) | set(links)):
            info = tarfile.TarInfo(name)
            info.mtime = 0
            if name in links:
                info.type, info.linkname = tarfile.SYMTYPE, links[name]
                tf.addfile(info)
            else:
                info.size = len(members[name])
                tf.addfile(info, io.BytesIO(members[name]))
    data = buf.getvalue()
    path.write_bytes(zstandard.ZstdCompressor(level=3).compress(data) if zstd else data)
    return path


# -- OCI image-layout archives ----------------------------------------------------------------
def layout_archive(
    path: Path,
    images: dict[str, BuiltImage | BuiltIndex],
    *,
    replace: dict[str, bytes] | None = None,
    omit: Sequence[str] = (),
) -> Path:
    """Write an OCI layout tar holding ``images`` (reference -> image or index, named by
    ``io.containerd.image.name`` and ``org.opencontainers.image.ref.name``). ``replace``
    stores other bytes under a blob's digest name; ``omit`` leaves blobs out."""
    blobs: dict[str, bytes] = {}
    entries = []
    for ref, built in images.items():
        if isinstance(built, BuiltIndex):
            blobs[built.digest] = built.index
            media, data = OCI_INDEX, built.index
            parts = list(built.images.values())
        else:
            media, data, parts = OCI_MANIFEST, built.manifest, [built]
        for img in parts:
            blobs[img.digest] = img.manifest
            blobs.update(img.blobs)
        entries.append(
            {
                "mediaType": media,
                "digest": digest_of(data),
                "size": len(data),
                "annotations": {
                    "io.containerd.image.name": ref,
                    "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[-1],
                },
            }
        )
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
    files = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": index.encode()}
    for d, b in blobs.items():
        if d not in omit:
            files["blobs/sha256/" + d.split(":", 1)[1]] = (replace or {}).get(d, b)
    path.write_bytes(tar_of(files))
    return path
