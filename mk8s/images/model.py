"""The OCI / Docker manifest model: media types, descriptors, platforms, digests.

Parsing is strict where a wrong value would make us fetch or write the wrong bytes
(digests, sizes, media types) and lenient elsewhere (unknown fields are kept in the
original bytes, which is what gets stored and pushed: manifests are never re-encoded
unless mk8s writes a new one, e.g. a docker-archive's manifest).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from mk8s import untrusted
from mk8s.errors import ChecksumMismatch, ImageArchiveError
from mk8s.images.reference import is_digest

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
ACCEPT = ", ".join([OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST])
MAX_MANIFEST = 4 << 20
"""Registries refuse manifests over 4 MiB; so do we, before reading more."""
MAX_JSON = 8 << 20
"""The largest JSON document (a manifest, a config, ``index.json``) mk8s parses."""
MAX_INDEX_DEPTH = 8
"""Indexes nest (an index may list indexes); real images use one or two levels."""

# Annotations mk8s writes into an OCI layout's index.json.
ANN_REF_NAME = "org.opencontainers.image.ref.name"
ANN_IMAGE_NAME = "io.containerd.image.name"  # what containerd (and so RKE2) imports as
ANN_SOURCE_DIGEST = "io.mk8s.image.source-digest"


class ArchiveFormat(StrEnum):
    """What an image archive is: an OCI image layout, or what ``docker save`` writes."""

    OCI = "oci"
    DOCKER = "docker"


def sha256_digest(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def mismatch(image: str, what: str, want: str, got: str) -> ChecksumMismatch:
    """The error for a blob or manifest of ``image`` whose bytes are not its digest."""
    return ChecksumMismatch(
        f"{image}: {what} should be {want} but its bytes are {got}",
        "do not use it: the registry's copy is damaged or was tampered with; "
        "re-push the image or check the registry's storage",
    )


def canonical_json(doc: Any) -> bytes:
    """Compact, key-sorted UTF-8 JSON: the bytes mk8s writes for documents it makes."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Platform:
    """``os/architecture[/variant]``, as in ``linux/arm64/v8``."""

    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        """Parse ``linux/amd64`` or ``linux/arm/v7``; raise ImageArchiveError otherwise."""
        parts = text.strip().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ImageArchiveError(
                f"{text!r} is not a platform", "write it as os/arch, e.g. linux/amd64"
            )
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    @classmethod
    def from_json(cls, doc: Any) -> Platform | None:
        if not isinstance(doc, dict):
            return None
        os_, arch = doc.get("os"), doc.get("architecture")
        if not isinstance(os_, str) or not isinstance(arch, str):
            return None
        variant = doc.get("variant")
        return cls(os_, arch, variant if isinstance(variant, str) and variant else None)

    def matches(self, other: Platform) -> bool:
        """True when ``other`` (from an index) satisfies this wanted platform.

        A wanted platform without a variant takes any variant, except that arm64 wants
        ``v8`` or none (what containerd's default matcher does).
        """
        if (self.os, self.architecture) != (other.os, other.architecture):
            return False
        if self.variant is not None:
            return self.variant == other.variant
        return self.architecture != "arm64" or other.variant in (None, "v8")

    def __str__(self) -> str:
        base = f"{self.os}/{self.architecture}"
        return f"{base}/{self.variant}" if self.variant else base


@dataclass(frozen=True)
class Descriptor:
    """A pointer to content: media type, digest, size (+ platform, annotations)."""

    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_json(cls, doc: Any, where: str) -> Descriptor:
        """Parse a descriptor; raise ImageArchiveError naming ``where`` if invalid."""
        if not isinstance(doc, dict):
            raise ImageArchiveError(f"{where}: a descriptor is not an object")
        media, digest, size = doc.get("mediaType"), doc.get("digest"), doc.get("size")
        if not isinstance(digest, str) or not is_digest(digest):
            raise ImageArchiveError(f"{where}: descriptor digest {str(digest)[:80]!r} is invalid")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ImageArchiveError(f"{where}: descriptor size of {digest} is invalid")
        ann = doc.get("annotations") or {}
        pairs = (
            tuple(sorted((str(k), str(v)) for k, v in ann.items())) if isinstance(ann, dict) else ()
        )
        return cls(
            media_type=media if isinstance(media, str) else "",
            digest=digest,
            size=size,
            platform=Platform.from_json(doc.get("platform")),
            annotations=pairs,
        )

    def annotation(self, key: str) -> str | None:
        return dict(self.annotations).get(key)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.platform is not None:
            p: dict[str, str] = {"os": self.platform.os, "architecture": self.platform.architecture}
            if self.platform.variant:
                p["variant"] = self.platform.variant
            out["platform"] = p
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


def load_json(data: bytes, where: str) -> dict[str, Any]:
    """Parse a JSON object within :mod:`mk8s.untrusted`'s bounds; raise
    ImageArchiveError naming ``where`` otherwise."""
    doc = untrusted.load_json(data, what=where, error=ImageArchiveError, max_bytes=MAX_JSON)
    if not isinstance(doc, dict):
        raise ImageArchiveError(f"{where} is not a JSON object")
    return doc


def media_type_of(data: bytes, where: str, header: str | None = None) -> str:
    """A manifest's media type: its ``mediaType`` field, else ``header``, else guessed."""
    doc = load_json(data, where)
    media = doc.get("mediaType")
    if isinstance(media, str) and media:
        return media
    if header and header.split(";")[0].strip() in INDEX_TYPES | MANIFEST_TYPES:
        return header.split(";")[0].strip()
    return OCI_INDEX if "manifests" in doc else OCI_MANIFEST


def children(data: bytes, media_type: str, where: str) -> list[Descriptor]:
    """The descriptors an index lists (``manifests``), or a manifest's config + layers."""
    doc = load_json(data, where)
    if media_type in INDEX_TYPES:
        items = doc.get("manifests")
        if not isinstance(items, list):
            raise ImageArchiveError(f"{where}: an index without a manifests list")
        return [Descriptor.from_json(d, where) for d in items]
    if media_type in MANIFEST_TYPES:
        config, layers = doc.get("config"), doc.get("layers")
        if not isinstance(layers, list):
            raise ImageArchiveError(f"{where}: a manifest without a layers list")
        return [Descriptor.from_json(config, where)] + [
            Descriptor.from_json(d, where) for d in layers
        ]
    raise ImageArchiveError(
        f"{where}: media type {media_type!r} is not an image manifest or index",
        "only OCI and Docker schema 2 images are supported (schema 1 is obsolete)",
    )


@dataclass(frozen=True)
class Manifest:
    """A manifest or index: its exact bytes, media type and the digest of the bytes."""

    data: bytes
    media_type: str
    digest: str

    @classmethod
    def from_bytes(cls, data: bytes, where: str, media_type: str | None = None) -> Manifest:
        """Wrap ``data``, taking the media type from it unless given."""
        media = media_type or media_type_of(data, where)
        return cls(data, media, sha256_digest(data))

    def descriptor(self, **extra: Any) -> Descriptor:
        """A descriptor pointing at this manifest."""
        return Descriptor(self.media_type, self.digest, len(self.data), **extra)


@dataclass(frozen=True)
class BlobSource:
    """A blob (config or layer) an archive holds, and the member that holds it."""

    digest: str
    size: int
    member: str


@dataclass(frozen=True)
class ArchiveImage:
    """One image in an archive, ready to push or list.

    ``names`` are the full references the archive gives it (``registry/repo:tag``;
    empty when it names none). ``root`` is what the tags point at (a manifest or an
    index); ``manifests`` are the platform manifests an index lists (pushed by digest
    first); ``blobs`` are every config and layer, each once.
    """

    names: tuple[str, ...]
    root: Manifest
    manifests: tuple[Manifest, ...]
    blobs: tuple[BlobSource, ...]
    platforms: tuple[str, ...] = ()
    # The index lists manifests the archive does not carry (platforms left out).
    partial: bool = False

    @property
    def size(self) -> int:
        """Bytes of all blobs and manifests."""
        docs = len(self.root.data) + sum(len(m.data) for m in self.manifests)
        return docs + sum(b.size for b in self.blobs)
