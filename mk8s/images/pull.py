"""Pull an image from its registry into an OCI image-layout archive.

The reference is resolved once: a tag becomes the digest of what the registry served
(:attr:`PulledImage.reference` carries it, for the caller to pin in the lock). The root
is always stored byte for byte, so the digest a node imports is the one pinned (k3s
tags an imported image ``REPO@<digest of what was imported>``: k3s-io/k3s
pkg/agent/containerd/containerd.go ``retagImages``). For a multi-platform index only
the wanted platforms' manifests and blobs are carried; the index still lists the others
(:attr:`PulledImage.partial`), which a recent RKE2 imports (WithSkipMissing; the
releases are in :mod:`mk8s.rke2gates`) but a registry refuses to store (it needs every
manifest an index lists). Every manifest and blob is checked
against its digest while it streams (ChecksumMismatch names the image and both
digests). Blobs land in a content cache (``CACHE/sha256/<hex>``, the layout the bundle
downloads use), so a second pull downloads nothing, and the archive is written with
deterministic bytes (see :mod:`mk8s.images.layout`).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mk8s.callbacks import TransferProgress
from mk8s.errors import (
    ChecksumMismatch,
    ImageArchiveError,
    ImageNotFound,
    OutputError,
    RegistryError,
)
from mk8s.images.archive import scan_archive
from mk8s.images.auth import Credentials
from mk8s.images.client import RegistryClient, RegistryClientSettings
from mk8s.images.layout import layout_index, read_layout, write_layout
from mk8s.images.model import (
    ANN_IMAGE_NAME,
    ANN_REF_NAME,
    ANN_SOURCE_DIGEST,
    INDEX_TYPES,
    MANIFEST_TYPES,
    MAX_INDEX_DEPTH,
    MAX_JSON,
    Descriptor,
    Manifest,
    Platform,
    children,
    load_json,
)
from mk8s.images.reference import Reference, parse_reference
from mk8s.untrusted import shown, shown_list

DEFAULT_PLATFORMS = ("linux/amd64",)
MAX_MANIFESTS = 1000
"""Manifests one image may hold (a multi-platform index with attestations has < 50)."""


@dataclass(frozen=True)
class PulledImage:
    """A pulled image: ``reference`` pinned to ``source_digest`` (what the registry
    serves for it, and the root stored in the archive: ``digest``), the carried
    ``platforms``, whether the index lists manifests the archive does not carry
    (``partial``), and the archive with its sha256 and size."""

    reference: Reference
    source_digest: str
    digest: str
    platforms: tuple[str, ...]
    archive: Path
    archive_sha256: str
    size: int
    partial: bool = False


def pull_image(
    reference: str | Reference,
    dest: Path,
    *,
    cache_dir: Path,
    platforms: Sequence[str] | None = DEFAULT_PLATFORMS,
    settings: RegistryClientSettings | None = None,
    credentials: Credentials | None = None,
    client: RegistryClient | None = None,
    mtime: int = 0,
    progress: TransferProgress | None = None,
) -> PulledImage:
    """Pull ``reference`` into the OCI layout archive ``dest``.

    ``platforms`` None keeps every platform of an index. A wanted platform the index
    lacks raises ImageNotFound listing those it has. ``client`` reuses a connection
    (its registry must be the reference's). Raises ChecksumMismatch for any byte that
    differs from its digest, the client's errors for registry trouble, OutputError when
    the cache or ``dest`` cannot be written; ``dest`` is only written when complete.
    """
    ref = parse_reference(reference) if isinstance(reference, str) else reference
    for text in platforms or ():
        Platform.parse(text)  # the caller's input: a bad one is exit 2, not the registry's
    own = client is None
    cl = client or RegistryClient(ref.registry, settings, credentials=credentials)
    try:
        return _Puller(cl, ref, Path(cache_dir), progress).pull(Path(dest), platforms, mtime)
    except ImageArchiveError as e:
        # Every document here came from the registry: what is a broken input file on the
        # disconnected side is a registry answering nonsense here (exit 1).
        # ``from None``: the cause quotes the registry's text unmasked (the debug log).
        raise RegistryError(
            f"{ref.registry} served {ref} as something mk8s cannot use:"
            f" {shown(e.problem, limit=400, secrets=cl.secrets)}",
            "check the image in the registry (mk8s carries OCI and Docker schema 2 images)",
        ) from None
    finally:
        if own:
            cl.close()


class _Puller:
    def __init__(
        self, client: RegistryClient, ref: Reference, cache: Path, progress: TransferProgress | None
    ) -> None:
        self.client = client
        self.ref = ref
        self.cache = cache
        self.progress = progress
        self.image = str(ref)
        self.docs: dict[str, bytes] = {}
        self.blobs: dict[str, Path] = {}
        self.sizes: dict[str, int] = {}

    def pull(self, dest: Path, platforms: Sequence[str] | None, mtime: int) -> PulledImage:
        source = self.client.get_manifest(self.ref.repository, self.ref.ref, image=self.image)
        pinned = self.ref.with_digest(source.digest)
        self.image = str(pinned)
        carried, kept = self._select(source, platforms)
        self._walk(source, only=carried)
        partial = False
        if source.media_type not in INDEX_TYPES:
            kept = self._check_single(source, platforms)
        else:  # an entry not walked (a platform left out, a non-image) is not carried
            listed = children(source.data, source.media_type, f"the index of {self.image}")
            partial = any(d.digest not in self.docs for d in listed)
        index = layout_index([source.descriptor(annotations=self._annotations(pinned))])
        blobs: dict[str, Path | bytes] = {**self.docs, **self.blobs}
        sha = write_layout(dest, index, blobs, mtime=mtime)
        try:  # the very checks the disconnected side makes, so no bundle signs what it refuses
            read_layout(scan_archive(dest))
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        return PulledImage(
            reference=pinned,
            source_digest=source.digest,
            digest=source.digest,
            platforms=kept,
            archive=dest,
            archive_sha256=sha,
            size=dest.stat().st_size,
            partial=partial,
        )

    def _annotations(self, pinned: Reference) -> tuple[tuple[str, str], ...]:
        name = f"{pinned.name}:{pinned.tag}" if pinned.tag else f"{pinned.name}@{pinned.digest}"
        ann = {ANN_IMAGE_NAME: name, ANN_SOURCE_DIGEST: pinned.digest or ""}
        if pinned.tag:
            ann[ANN_REF_NAME] = pinned.tag
        return tuple(sorted(ann.items()))

    def _select(
        self, source: Manifest, platforms: Sequence[str] | None
    ) -> tuple[list[Descriptor] | None, tuple[str, ...]]:
        """The index entries to carry (None: all of them) and the carried platforms."""
        if source.media_type not in INDEX_TYPES:
            return None, ()  # its config says which platform: see _check_single
        listed = children(source.data, source.media_type, f"the index of {self.image}")
        if platforms is None:
            return None, tuple(str(d.platform) for d in listed if d.platform)
        keep: list[Descriptor] = []
        for text in platforms:
            want = Platform.parse(text)
            match = next((d for d in listed if d.platform and want.matches(d.platform)), None)
            if match is None:
                have = shown_list(sorted({str(d.platform) for d in listed if d.platform}))
                raise ImageNotFound(
                    f"{self.image} has no {want} image (it has: {have or 'none'})",
                    "pick one of the platforms it has",
                )
            if match not in keep:
                keep.append(match)
        kept = tuple(str(d.platform) for d in keep)
        return (None if keep == listed else keep), kept

    def _check_single(self, root: Manifest, platforms: Sequence[str] | None) -> tuple[str, ...]:
        """A single-platform image must be one of the wanted platforms (its config's
        ``os``/``architecture``/``variant`` say which): never carry the wrong arch."""
        config = children(root.data, root.media_type, f"the manifest of {self.image}")[0]
        if config.size > MAX_JSON:
            raise ImageArchiveError(f"its config is {config.size} bytes, over {MAX_JSON}")
        doc = load_json(self.blobs[config.digest].read_bytes(), f"the config of {self.image}")
        have = Platform.from_json(doc)
        if have is None:
            return ()
        if platforms is not None and not any(Platform.parse(p).matches(have) for p in platforms):
            raise ImageNotFound(
                f"{self.image} is a {shown(have, limit=80)} image, not {', '.join(platforms)}",
                "pull an image (or an index) built for the wanted platform",
            )
        return (str(have),)

    def _walk(self, m: Manifest, depth: int = 1, only: list[Descriptor] | None = None) -> None:
        """Store ``m``, then fetch what it points at (manifests, then blobs): each
        distinct digest once, indexes at most MAX_INDEX_DEPTH deep, every size and
        media type as its descriptor says (what the disconnected side checks); of an
        index, only the entries in ``only`` when given (the platforms carried)."""
        self.docs[m.digest] = m.data
        kids = children(m.data, m.media_type, f"the manifest {m.digest} of {self.image}")
        if m.media_type not in INDEX_TYPES:
            for d in kids:
                self._keep_blob(d)
            return
        if depth > MAX_INDEX_DEPTH:
            raise ImageArchiveError(f"its indexes are nested deeper than {MAX_INDEX_DEPTH} levels")
        for d in kids:
            if only is not None and d not in only:
                continue  # a platform the bundle does not carry
            if d.media_type not in INDEX_TYPES | MANIFEST_TYPES or d.digest in self.docs:
                continue  # not an image (an attestation): not carried; or already walked
            if len(self.docs) >= MAX_MANIFESTS:
                raise ImageArchiveError(f"it lists more than {MAX_MANIFESTS} manifests")
            got = self.client.get_manifest(self.ref.repository, d.digest, image=self.image)
            if len(got.data) != d.size:
                raise _size_lie(self.image, "manifest", d, len(got.data))
            self._walk(Manifest(got.data, d.media_type, got.digest), depth + 1)

    def _keep_blob(self, d: Descriptor) -> None:
        if d.digest not in self.blobs:
            self.sizes[d.digest] = d.size
            self.blobs[d.digest] = self._blob(d)
        elif self.sizes[d.digest] != d.size:
            raise _size_lie(self.image, "blob", d, self.sizes[d.digest])

    def _blob(self, d: Descriptor) -> Path:
        final = self.cache / "sha256" / d.digest.split(":", 1)[1]
        try:
            if final.stat().st_size == d.size:
                return final
        except FileNotFoundError:
            pass
        tmp_dir = self.cache / "tmp"
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"cannot create the cache {self.cache}: {e.strerror}") from e
        part = tmp_dir / f"{secrets.token_hex(8)}.part"
        try:
            with open(part, "xb") as f:
                self.client.download_blob(
                    self.ref.repository,
                    d.digest,
                    f,
                    size=d.size,
                    image=self.image,
                    progress=self.progress,
                )
            os.replace(part, final)
        finally:
            part.unlink(missing_ok=True)
        return final


def _size_lie(image: str, what: str, d: Descriptor, got: int) -> ChecksumMismatch:
    return ChecksumMismatch(
        f"{image}: {what} {d.digest} has {got} bytes, its descriptor says {d.size}",
        "do not use it: the registry's copy is damaged or was tampered with",
    )
