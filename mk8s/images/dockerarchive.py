"""``docker save`` archives (what RKE2's ``rke2-images*.tar.zst`` are, zstd-compressed).

``manifest.json`` lists the images: ``Config`` (the image config JSON), ``RepoTags``
and ``Layers`` (uncompressed layer tars; older Docker writes ``<id>/layer.tar``,
Docker 25+ writes ``blobs/sha256/<hex>``). There is no registry manifest inside, so
mk8s makes one: an OCI image manifest with the config as ``...config.v1+json`` and each
layer pushed as it is (``...layer.v1.tar``, or ``+gzip`` / ``+zstd`` when the member is
compressed), in canonical JSON so that the same archive always gives the same digest.

Checks: the config's bytes must hash to the name it is stored under, and each
uncompressed layer must hash to the config's ``rootfs.diff_ids`` entry for it
(ChecksumMismatch otherwise); ``RepoTags`` must be valid references.
"""

from __future__ import annotations

import posixpath
import re
from typing import Any

from mk8s import untrusted
from mk8s.errors import ChecksumMismatch, ImageArchiveError
from mk8s.images.archive import GZIP_MAGIC, MAX_DOCUMENT, ZSTD_MAGIC, ArchiveScan, Member
from mk8s.images.model import (
    OCI_CONFIG,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    ArchiveImage,
    BlobSource,
    Descriptor,
    Manifest,
    canonical_json,
    load_json,
    sha256_digest,
)
from mk8s.images.reference import parse_reference

OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
_HEX_NAME = re.compile(r"(?:^|/)([0-9a-f]{64})(?:\.json)?$")


def is_docker_archive(scan: ArchiveScan) -> bool:
    """True when the archive has a ``manifest.json``."""
    return "manifest.json" in scan.members


def read_docker_archive(scan: ArchiveScan) -> list[ArchiveImage]:
    """One :class:`ArchiveImage` per ``manifest.json`` entry, checked as described above."""
    where = f"{scan.path}: manifest.json"
    entries = untrusted.load_json(
        scan.document("manifest.json"), what=where, error=ImageArchiveError, max_bytes=MAX_DOCUMENT
    )
    if not isinstance(entries, list):
        raise ImageArchiveError(f"{where} is not a list of images")
    return [_image(scan, e, f"{where} entry {n}") for n, e in enumerate(entries, 1)]


def _image(scan: ArchiveScan, entry: Any, where: str) -> ArchiveImage:
    if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str):
        raise ImageArchiveError(f"{where} has no Config")
    layers = entry.get("Layers")
    if not isinstance(layers, list) or not all(isinstance(x, str) for x in layers):
        raise ImageArchiveError(f"{where} has no Layers list")
    config_name = entry["Config"]
    config = scan.document(config_name)
    config_digest = sha256_digest(config)
    _check_config_name(scan, config_name, config_digest)
    diff_ids = _diff_ids(load_json(config, f"{scan.path}: {config_name}"))
    layer_descs: list[Descriptor] = []
    blobs: dict[str, BlobSource] = {}
    for i, layer_name in enumerate(layers):
        member = scan.member(layer_name)
        media = _layer_media_type(member)
        if media == OCI_LAYER and i < len(diff_ids) and diff_ids[i] != member.digest:
            raise ChecksumMismatch(
                f"{scan.path}: layer {layer_name} is {member.digest} but the image config "
                f"says {diff_ids[i]}",
                "the archive is damaged or was tampered with; do not use it",
            )
        layer_descs.append(Descriptor(media, member.digest, member.size))
        blobs.setdefault(member.digest, BlobSource(member.digest, member.size, member.name))
    blobs[config_digest] = BlobSource(config_digest, len(config), scan.resolve(config_name))
    manifest = _manifest(Descriptor(OCI_CONFIG, config_digest, len(config)), layer_descs)
    return ArchiveImage(
        names=_repo_tags(entry, where),
        root=manifest,
        manifests=(),
        blobs=(blobs.pop(config_digest), *blobs.values()),
        platforms=_platform(config),
    )


def _manifest(config: Descriptor, layers: list[Descriptor]) -> Manifest:
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.to_json(),
        "layers": [d.to_json() for d in layers],
    }
    data = canonical_json(doc)
    return Manifest(data, OCI_MANIFEST, sha256_digest(data))


def _check_config_name(scan: ArchiveScan, name: str, digest: str) -> None:
    m = _HEX_NAME.search(posixpath.basename(name)) or _HEX_NAME.search(name)
    if m is not None and f"sha256:{m[1]}" != digest:
        raise ChecksumMismatch(
            f"{scan.path}: config {name} hashes to {digest}, not to its name",
            "the archive is damaged or was tampered with; do not use it",
        )


def _diff_ids(config: dict[str, Any]) -> list[str]:
    rootfs = config.get("rootfs")
    ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    return [x for x in ids if isinstance(x, str)] if isinstance(ids, list) else []


def _layer_media_type(member: Member) -> str:
    if member.head.startswith(GZIP_MAGIC):
        return OCI_LAYER_GZIP
    if member.head.startswith(ZSTD_MAGIC):
        return OCI_LAYER_ZSTD
    return OCI_LAYER


def _repo_tags(entry: dict[str, Any], where: str) -> tuple[str, ...]:
    tags = entry.get("RepoTags") or []
    if not isinstance(tags, list):
        raise ImageArchiveError(f"{where}: RepoTags is not a list")
    return tuple(str(parse_reference(str(t))) for t in tags)


def _platform(config: bytes) -> tuple[str, ...]:
    doc = load_json(config, "image config")
    os_, arch, variant = doc.get("os"), doc.get("architecture"), doc.get("variant")
    if not isinstance(os_, str) or not isinstance(arch, str):
        return ()
    return (f"{os_}/{arch}/{variant}" if isinstance(variant, str) and variant else f"{os_}/{arch}",)
