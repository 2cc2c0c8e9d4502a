"""List the images inside an archive: OCI image layout or docker archive (optionally
zstd or gzip), from their index / manifests. Reads the archive once; checks every blob
the images reference (so a listing of a damaged archive fails instead of lying)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mk8s.errors import ImageArchiveError
from mk8s.images.archive import ArchiveScan, scan_archive
from mk8s.images.dockerarchive import is_docker_archive, read_docker_archive
from mk8s.images.layout import is_layout, read_layout
from mk8s.images.model import ArchiveFormat, ArchiveImage
from mk8s.images.reference import parse_reference


@dataclass(frozen=True)
class ImageInfo:
    """One named image: ``name`` (``registry/repository``, or None when the archive
    gives none), ``tag``, the ``digest`` of its manifest or index, its media type,
    platforms and total size in bytes."""

    name: str | None
    tag: str | None
    digest: str
    media_type: str
    platforms: tuple[str, ...]
    size: int

    def __str__(self) -> str:
        name = self.name or "<unnamed>"
        tag = f":{self.tag}" if self.tag else ""
        return f"{name}{tag}@{self.digest}"


def read_archive(
    path: Path, *, max_unpacked: int | None = None
) -> tuple[ArchiveFormat, list[ArchiveImage]]:
    """(the archive's format, its images); ImageArchiveError for anything else
    (and for an archive that unpacks to more than ``max_unpacked`` bytes)."""
    scan = scan_archive(Path(path), max_unpacked=max_unpacked)
    return images_of(scan)


def images_of(scan: ArchiveScan) -> tuple[ArchiveFormat, list[ArchiveImage]]:
    """The format of a scanned archive and its images (an OCI layout wins when the
    archive is both, as Docker 25+ writes them)."""
    if is_layout(scan):
        return ArchiveFormat.OCI, read_layout(scan)
    if is_docker_archive(scan):
        return ArchiveFormat.DOCKER, read_docker_archive(scan)
    raise ImageArchiveError(
        f"{scan.path} is neither an OCI image layout nor a docker archive",
        "it needs oci-layout and index.json, or manifest.json (docker save)",
    )


def list_images(path: Path, *, max_unpacked: int | None = None) -> list[ImageInfo]:
    """One :class:`ImageInfo` per name (an image with two tags is listed twice; an
    unnamed image once, with name None)."""
    _, images = read_archive(path, max_unpacked=max_unpacked)
    out: list[ImageInfo] = []
    for image in images:
        names: list[str | None] = list(image.names) or [None]
        for name in names:
            ref = parse_reference(name) if name else None
            out.append(
                ImageInfo(
                    name=ref.name if ref else None,
                    tag=ref.tag if ref else None,
                    digest=image.root.digest,
                    media_type=image.root.media_type,
                    platforms=image.platforms,
                    size=image.size,
                )
            )
    return out
