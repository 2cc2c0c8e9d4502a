"""What a bundle or a lock holds: the release, every artifact, and what is inside them.

The common input of the SBOM writer and of ``bundle diff``. A lock gives the release
and the artifacts only; a bundle (or the files of one being created) also gives the
container images inside every image archive (RKE2's ``rke2-images*.tar.zst`` docker
archives, OCI image-layout archives: name, tag and digest from their manifests, via
:func:`mk8s.images.list_images`) and the Helm charts among the operator's files
(name and version from ``Chart.yaml``).

From a bundle, the contents are read during a full verification pass: each candidate
artifact is written to a private temporary file and read there only after the reader
has checked its sha256 against the signed manifest, then deleted; the disk this needs
is the size of the largest image archive.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from mk8s.bundle.format import parts, reader
from mk8s.bundle.format.keys import TrustedKey
from mk8s.bundle.format.manifest import Artifact, ArtifactKind, Lock
from mk8s.bundle.provenance import chartarchive
from mk8s.errors import Mk8sError

SBOM_KIND = ArtifactKind.SBOM
_IMAGE_SUFFIXES = (".tar", ".tar.zst", ".tar.gz", ".tgz", ".oci")
_CHART_SUFFIXES = (".tgz", ".tar.gz")
#: An image archive listed for an SBOM or a diff unpacks to at most this many times
#: its size (and at least IMAGES_MIN_BUDGET bytes): a bomb costs seconds, not hours.
IMAGES_RATIO = 16
IMAGES_MIN_BUDGET = 256 << 20


@dataclass(frozen=True, order=True)
class Image:
    """A container image inside an archive: ``name`` is ``registry/repository``."""

    name: str | None
    tag: str | None
    digest: str
    platforms: tuple[str, ...]

    @property
    def ref(self) -> str:
        tag = f":{self.tag}" if self.tag else ""
        return f"{self.name or '<unnamed>'}{tag}@{self.digest}"


@dataclass(frozen=True, order=True)
class Chart:
    name: str
    version: str
    app_version: str | None = None


@dataclass(frozen=True)
class Contents:
    """What one artifact holds; ``problem`` says why it could not be read, if so."""

    images: tuple[Image, ...] = ()
    charts: tuple[Chart, ...] = ()
    problem: str | None = None


@dataclass(frozen=True)
class Inventory:
    """A lock or bundle manifest and, for a bundle, the contents of its artifacts
    (by bundle path; ``contents`` is None when they were not read, as for a lock)."""

    lock: Lock
    contents: Mapping[str, Contents] | None

    @property
    def artifacts(self) -> tuple[Artifact, ...]:
        """Every artifact but an embedded SBOM (which cannot describe itself)."""
        return tuple(a for a in self.lock.artifacts if a.kind != SBOM_KIND)

    def contents_of(self, art: Artifact) -> Contents:
        return (self.contents or {}).get(art.path, Contents())


def may_hold_images(art: Artifact) -> bool:
    return art.kind == "images" or (art.kind == "file" and art.name.endswith(_IMAGE_SUFFIXES))


def may_be_chart(art: Artifact) -> bool:
    return art.kind in ("file", "chart") and art.name.endswith(_CHART_SUFFIXES)


def read_contents(art: Artifact, path: Path) -> Contents | None:
    """The images and charts in ``art``, stored at ``path``; None if it cannot hold any.

    Never raises for bad content: an image tarball or chart that cannot be read within
    the bounds is reported in ``problem`` (an SBOM must still list the artifact and its
    hash); a ``file`` that is neither is just a file. A chart is read first and up to
    its ``Chart.yaml`` only (:mod:`mk8s.bundle.provenance.chartarchive`); an archive
    that is a chart is not scanned for images.
    """
    if not (may_hold_images(art) or may_be_chart(art)):
        return None
    found: tuple[Chart, ...] = ()
    problem = None
    if may_be_chart(art):
        try:
            with open(path, "rb") as f:
                meta = chartarchive.read_chart(f)
            found = (Chart(meta.name, meta.version, meta.app_version),)
        except chartarchive.ChartProblem as e:
            if art.kind == "chart":
                problem = f"not a readable chart: {e.problem}"
    images: tuple[Image, ...] = ()
    if may_hold_images(art) and not found:
        try:
            images = _images(path)
        except Mk8sError as e:
            if art.kind == "images":
                problem = f"not a readable image archive: {e.problem}"
    if not images and not found and problem is None:
        return None
    return Contents(images, found, problem)


def image_budget(path: Path) -> int:
    """Bytes an image archive may unpack to when only listed: :data:`IMAGES_RATIO`
    times its size, at least :data:`IMAGES_MIN_BUDGET` (RKE2's zstd image tarballs
    unpack to about 3 times their size; their layers inside are not compressed)."""
    return max(IMAGES_MIN_BUDGET, IMAGES_RATIO * path.stat().st_size)


def _images(path: Path) -> tuple[Image, ...]:
    from mk8s.images import list_images  # requests & co.: only when images are read

    listed = list_images(path, max_unpacked=image_budget(path))
    found = {Image(i.name, i.tag, i.digest, tuple(sorted(i.platforms))) for i in listed}
    return tuple(sorted(found, key=lambda i: (i.name or "", i.tag or "", i.digest)))


def from_lock(lock: Lock) -> Inventory:
    """A lock or manifest alone: its artifacts, no contents."""
    return Inventory(lock, None)


def from_files(manifest: Lock, files: Mapping[str, Path]) -> Inventory:
    """The artifacts of a bundle being created, read from their local files
    (``files`` maps bundle path to file, as the writer takes them)."""
    contents: dict[str, Contents] = {}
    for art in manifest.artifacts:
        found = read_contents(art, files[art.path])
        if found is not None:
            contents[art.path] = found
    return Inventory(manifest, contents)


class _ContentsSink:
    """An ArtifactSink: keeps one candidate artifact at a time in a temporary file and
    reads it once the reader has checked it (``end`` runs only after its sha256 and
    size matched the signed manifest)."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.contents: dict[str, Contents] = {}
        self._file: BinaryIO | None = None

    def begin(self, artifact: Artifact) -> None:
        if may_hold_images(artifact) or may_be_chart(artifact):
            self._file = open(self.work / "artifact", "wb")  # noqa: SIM115 (closed in end)

    def write(self, data: memoryview) -> None:
        if self._file is not None:
            self._file.write(data)

    def end(self, artifact: Artifact) -> None:
        if self._file is None:
            return
        self._file.close()
        self._file = None
        path = self.work / "artifact"
        found = read_contents(artifact, path)
        if found is not None:
            self.contents[artifact.path] = found
        path.unlink()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def from_bundle(
    path: Path,
    trusted: Sequence[TrustedKey],
    *,
    allow_unsigned: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Inventory, reader.VerifiedBundle]:
    """Verify the bundle (as ``bundle verify``, split or not) while reading what its
    artifacts hold. BundleRejected (exit 3) as for verify; nothing unverified is read.
    """
    split = parts.check_index(path, trusted, allow_unsigned=allow_unsigned)
    work = Path(tempfile.mkdtemp(prefix="mk8s-inventory-"))  # 0700
    sink = _ContentsSink(work)
    try:
        verified = reader.verify_bundle(
            path, trusted, allow_unsigned=allow_unsigned, sink=sink, progress=progress
        )
    finally:
        sink.close()
        shutil.rmtree(work, ignore_errors=True)
    if split is not None:
        split.check_whole(verified.file_sha256)
    return Inventory(verified.manifest, sink.contents), verified
