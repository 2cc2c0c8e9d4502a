"""OCI image-layout archives: write them deterministically, read the images they hold.

An archive is a tar of ``oci-layout``, ``index.json`` and ``blobs/sha256/<hex>``
(the OCI image-layout spec). An image index may list manifests the archive does not
carry (the platforms a bundle left out); the image is then ``partial``. Written bytes
depend only on the content: members sorted by name, directories 0755 and files 0644,
uid/gid 0 with no owner names, one fixed mtime, GNU tar headers (base-256 sizes beyond
8 GiB). Reading checks that every blob the carried images need is present, has its
descriptor's size and hashes to its name.
"""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import tarfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from mk8s.errors import ChecksumMismatch, ImageArchiveError, ImageReferenceError, OutputError
from mk8s.images.archive import ArchiveScan
from mk8s.images.model import (
    ANN_IMAGE_NAME,
    ANN_REF_NAME,
    INDEX_TYPES,
    MANIFEST_TYPES,
    MAX_INDEX_DEPTH,
    OCI_INDEX,
    ArchiveImage,
    BlobSource,
    Descriptor,
    Manifest,
    canonical_json,
    children,
    load_json,
)
from mk8s.images.reference import parse_reference

LAYOUT_FILE = b'{"imageLayoutVersion":"1.0.0"}'
_COPY = 1 << 20


def blob_member(digest: str) -> str:
    """The member name of a blob: ``blobs/sha256/<hex>``."""
    algo, hex_ = digest.split(":", 1)
    return f"blobs/{algo}/{hex_}"


def layout_index(entries: Iterable[Descriptor]) -> bytes:
    """The ``index.json`` bytes listing ``entries`` (canonical JSON)."""
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [d.to_json() for d in entries],
    }
    return canonical_json(doc)


# -- writing -------------------------------------------------------------------------------
def write_layout(
    dest: Path, index: bytes, blobs: Mapping[str, Path | bytes], *, mtime: int = 0
) -> str:
    """Write an OCI layout archive to ``dest`` atomically; return its sha256 (hex).

    ``blobs`` maps digests to files or bytes (already verified by the caller). The file
    appears only when complete; on failure nothing is left at ``dest``. Raises
    OutputError when it cannot be written.
    """
    dest = Path(dest)
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.part")
    try:
        with open(tmp, "xb") as raw:
            hashed = _HashingWriter(raw)
            with tarfile.open(fileobj=hashed, mode="w|", format=tarfile.GNU_FORMAT) as tf:  # type: ignore[call-overload]
                _write_members(tf, index, blobs, mtime)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, dest)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OutputError(
            f"cannot write {dest}: {e.strerror or e}", "check the path and disk space"
        ) from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return hashed.hasher.hexdigest()


def _write_members(
    tf: tarfile.TarFile, index: bytes, blobs: Mapping[str, Path | bytes], mtime: int
) -> None:
    entries: dict[str, Path | bytes | None] = {
        "blobs": None,
        "index.json": index,
        "oci-layout": LAYOUT_FILE,
    }
    for digest, blob in blobs.items():
        name = blob_member(digest)
        entries[os.path.dirname(name)] = None
        entries[name] = blob
    for name in sorted(entries):
        src = entries[name]
        info = tarfile.TarInfo(name)
        info.mtime = mtime
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        if src is None:
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tf.addfile(info)
        elif isinstance(src, bytes):
            info.mode, info.size = 0o644, len(src)
            tf.addfile(info, io.BytesIO(src))
        else:
            info.mode, info.size = 0o644, src.stat().st_size
            with open(src, "rb") as f:
                tf.addfile(info, f)


class _HashingWriter:
    """A write-only file that hashes what passes through."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.hasher = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.hasher.update(data)
        return self.raw.write(data)

    def flush(self) -> None:
        self.raw.flush()


# -- reading -------------------------------------------------------------------------------
def is_layout(scan: ArchiveScan) -> bool:
    """True when the archive has ``oci-layout`` and ``index.json``."""
    return "oci-layout" in scan.members and "index.json" in scan.members


def read_layout(scan: ArchiveScan) -> list[ArchiveImage]:
    """The images ``index.json`` lists, with every manifest and blob checked.

    Raises ImageArchiveError for a malformed layout or a missing blob, and
    ChecksumMismatch when a blob's bytes or size differ from its descriptor.
    """
    where = f"{scan.path}: index.json"
    version = load_json(scan.document("oci-layout"), f"{scan.path}: oci-layout")
    if version.get("imageLayoutVersion") != "1.0.0":
        raise ImageArchiveError(f"{scan.path}: unsupported OCI layout version")
    top = children(scan.document("index.json"), OCI_INDEX, where)
    return [_image(scan, d) for d in top]


def _image(scan: ArchiveScan, desc: Descriptor) -> ArchiveImage:
    walker = _Walker(scan)
    root = walker.manifest(desc)
    platforms: list[str] = []
    if root.media_type in INDEX_TYPES:
        kids = children(root.data, root.media_type, walker.where(root.digest))
        carried = [k for k in kids if scan.has(blob_member(k.digest))]
        if not any(k.media_type in INDEX_TYPES | MANIFEST_TYPES for k in carried):
            raise ImageArchiveError(
                f"{scan.path}: the index {root.digest} carries none of the images it lists",
                "the archive is incomplete; recreate it",
            )
        platforms = [str(k.platform) for k in carried if k.platform is not None]
    return ArchiveImage(
        names=_names(desc),
        root=root,
        manifests=tuple(walker.manifests),
        blobs=tuple(walker.blobs.values()),
        platforms=tuple(platforms),
        partial=walker.partial,
    )


def _names(desc: Descriptor) -> tuple[str, ...]:
    """The full reference an entry carries: containerd's name, else a ref.name that is
    a full reference (skopeo and others write only a tag there)."""
    for key in (ANN_IMAGE_NAME, ANN_REF_NAME):
        value = desc.annotation(key)
        if value and ("/" in value or key == ANN_IMAGE_NAME):
            try:
                return (str(parse_reference(value)),)
            except ImageReferenceError:
                continue  # not a reference: the caller names the image
    return ()


#: Manifests one image may reach (a platform each: a few dozen at most).
MAX_MANIFESTS = 1000


class _Walker:
    """Collects an image's manifests (children before parents) and blobs, checked,
    within :data:`MAX_INDEX_DEPTH` and :data:`MAX_MANIFESTS` (a chain of 1,500 indexes
    or indexes that fan out to the same index are refused, not walked)."""

    def __init__(self, scan: ArchiveScan) -> None:
        self.scan = scan
        self.manifests: list[Manifest] = []
        self.blobs: dict[str, BlobSource] = {}
        self.partial = False  # an index lists a manifest the archive does not carry
        self.seen: set[str] = set()
        self.visited = 0

    def where(self, digest: str) -> str:
        return f"{self.scan.path}: {blob_member(digest)}"

    def manifest(self, desc: Descriptor, depth: int = 1) -> Manifest:
        self.visited += 1
        if depth > MAX_INDEX_DEPTH or self.visited > MAX_MANIFESTS:
            raise ImageArchiveError(
                f"{self.scan.path}: an image nests indexes deeper than {MAX_INDEX_DEPTH} levels"
                f" or reaches more than {MAX_MANIFESTS} manifests",
                "this is not an image archive mk8s carries; save the image again",
            )
        self.check(desc)
        data = self.scan.document(blob_member(desc.digest))
        media = desc.media_type or Manifest.from_bytes(data, self.where(desc.digest)).media_type
        m = Manifest.from_bytes(data, self.where(desc.digest), media)
        for kid in children(data, media, self.where(desc.digest)):
            if media in INDEX_TYPES:
                if not self.scan.has(blob_member(kid.digest)):
                    self.partial = True  # a platform (or attestation) not carried
                    continue
                if kid.media_type not in INDEX_TYPES | MANIFEST_TYPES or kid.digest in self.seen:
                    continue  # not an image (an attestation, a signature), or listed twice
                self.seen.add(kid.digest)
                self.manifests.append(self.manifest(kid, depth + 1))
            else:
                self.check(kid)
                self.blobs.setdefault(
                    kid.digest, BlobSource(kid.digest, kid.size, blob_member(kid.digest))
                )
        return m

    def check(self, desc: Descriptor) -> None:
        name = blob_member(desc.digest)
        member = self.scan.member(name)
        if member.digest != desc.digest:
            raise ChecksumMismatch(
                f"{self.scan.path}: {name} should be {desc.digest} but its bytes are "
                f"{member.digest}",
                "the archive is damaged or was tampered with; do not use it",
            )
        if member.size != desc.size:
            raise ChecksumMismatch(
                f"{self.scan.path}: {name} has {member.size} bytes, its descriptor says "
                f"{desc.size}",
                "the archive is damaged or was tampered with; do not use it",
            )
