"""Reading image archives as tar streams: plain, gzip or zstd, detected by magic bytes.

An archive is read front to back, never seeked, so a ``.tar.zst`` costs no temporary
copy. :func:`scan_archive` is the first pass: it hashes every regular member and keeps
the small JSON documents (manifests, configs, ``index.json``, ``manifest.json``) in
memory; :func:`iter_members` is the second pass, which yields the members a push still
needs as readable streams. Symbolic links (``docker save`` writes them for layers shared
between images) are resolved to the member they point at. Any unreadable archive
raises :class:`ImageArchiveError` naming the file.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import posixpath
import tarfile
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, BinaryIO, cast

import zstandard

from mk8s.errors import ImageArchiveError
from mk8s.files import BoundedReader
from mk8s.untrusted import shown

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
GZIP_MAGIC = b"\x1f\x8b"
MAX_DOCUMENT = 8 << 20
"""JSON members up to this size are kept in memory by the scan (configs included)."""
MAX_DOCUMENTS = 64 << 20
"""All the JSON members one scan keeps (an archive of 100 images keeps about 1 MiB)."""
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Member:
    """A regular file in an archive: its size, sha256 (hex) and first bytes."""

    name: str
    size: int
    sha256: str
    head: bytes

    @property
    def digest(self) -> str:
        return f"sha256:{self.sha256}"


@dataclass
class ArchiveScan:
    """What the first pass saw: members by name, links, and the JSON documents."""

    path: Path
    members: dict[str, Member] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)
    documents: dict[str, bytes] = field(default_factory=dict)

    def member(self, name: str) -> Member:
        """The regular file ``name`` names (following links); ImageArchiveError if absent."""
        target = self.resolve(name)
        found = self.members.get(target)
        if found is None:
            raise ImageArchiveError(
                f"{self.path} has no member {name!r}", "the archive is incomplete; recreate it"
            )
        return found

    def has(self, name: str) -> bool:
        """Whether the archive holds the regular file ``name`` (following links)."""
        return self.resolve(name) in self.members

    def document(self, name: str) -> bytes:
        """A JSON member's bytes; ImageArchiveError if absent or too big to be one."""
        target = self.resolve(name)
        if target not in self.documents:
            self.member(name)  # absent: that error is clearer
            raise ImageArchiveError(f"{self.path}: {name} is not a JSON document")
        return self.documents[target]

    def resolve(self, name: str) -> str:
        name = normalise(name)
        for _ in range(16):
            if name not in self.links:
                return name
            name = self.links[name]
        raise ImageArchiveError(f"{self.path}: {name} is a loop of links")


def normalise(name: str) -> str:
    """A member name without ``./`` or trailing ``/``."""
    out = posixpath.normpath(name.lstrip("/"))
    return "" if out == "." else out


@contextlib.contextmanager
def open_stream(path: Path, max_unpacked: int | None = None) -> Iterator[IO[bytes]]:
    """The decompressed bytes of ``path`` (zstd, gzip or none, by magic); with
    ``max_unpacked``, a :class:`~mk8s.files.BoundedReader` that refuses more."""
    with _open_stream(path) as stream:
        if max_unpacked is None:
            yield stream
            return

        def too_big() -> ImageArchiveError:
            return ImageArchiveError(
                f"{path} unpacks to more than {max_unpacked} bytes",
                "this is not an image archive that mk8s reads (a decompression bomb?)",
            )

        yield cast(IO[bytes], BoundedReader(cast(BinaryIO, stream), max_unpacked, too_big))


@contextlib.contextmanager
def _open_stream(path: Path) -> Iterator[IO[bytes]]:
    try:
        raw = open(path, "rb")  # noqa: SIM115 (closed below)
    except OSError as e:
        raise ImageArchiveError(f"cannot read {path}: {e.strerror}", "check the path") from e
    with raw:
        magic = raw.read(4)
        raw.seek(0)
        if magic == ZSTD_MAGIC:
            dctx = zstandard.ZstdDecompressor()
            with dctx.stream_reader(raw, read_size=_CHUNK, read_across_frames=True) as z:
                yield z
        elif magic[:2] == GZIP_MAGIC:
            with gzip.GzipFile(fileobj=raw) as g:
                yield cast(IO[bytes], g)
        else:
            yield raw


@contextlib.contextmanager
def _tar_stream(path: Path, max_unpacked: int | None = None) -> Iterator[tarfile.TarFile]:
    with open_stream(path, max_unpacked) as stream:
        try:
            with tarfile.open(fileobj=stream, mode="r|") as tf:
                yield tf
        except (tarfile.TarError, EOFError, zstandard.ZstdError, OSError) as e:
            raise ImageArchiveError(
                f"{path} is not a readable tar archive ({type(e).__name__}: {e})",
                "check that it is an OCI layout or docker-save archive (optionally .zst)",
            ) from e


def scan_archive(path: Path, *, max_unpacked: int | None = None) -> ArchiveScan:
    """First pass over ``path``: hash every member and keep the JSON documents (at
    most :data:`MAX_DOCUMENTS` bytes of them). With ``max_unpacked``, an archive that
    decompresses to more (or whose member header claims more) is ImageArchiveError."""
    scan = ArchiveScan(Path(path))
    kept = 0
    with _tar_stream(scan.path, max_unpacked) as tf:
        for info in tf:
            name = normalise(info.name)
            if max_unpacked is not None and info.size > max_unpacked:
                raise ImageArchiveError(
                    f"{path}: member {shown(info.name, limit=80)} claims {info.size} bytes,"
                    f" more than the {max_unpacked} this archive may unpack to"
                )
            if info.issym() or info.islnk():
                base = posixpath.dirname(name) if info.issym() else ""
                scan.links[name] = normalise(posixpath.join(base, info.linkname))
            elif info.isfile():
                f = tf.extractfile(info)
                if f is None:
                    continue
                member, doc = _hash_member(name, info.size, f)
                scan.members[name] = member
                if doc is not None:
                    kept += len(doc)
                    if kept > MAX_DOCUMENTS:
                        raise ImageArchiveError(
                            f"{path} holds more than {MAX_DOCUMENTS} bytes of JSON documents"
                        )
                    scan.documents[name] = doc
    return scan


def _hash_member(name: str, size: int, f: IO[bytes]) -> tuple[Member, bytes | None]:
    h = hashlib.sha256()
    head = f.read(min(size, 512))
    h.update(head)
    keep = size <= MAX_DOCUMENT and head.lstrip()[:1] in (b"{", b"[")
    buf = bytearray(head) if keep else None
    while chunk := f.read(_CHUNK):
        h.update(chunk)
        if buf is not None:
            buf += chunk
    return Member(name, size, h.hexdigest(), head[:8]), bytes(buf) if buf is not None else None


def iter_members(path: Path, wanted: Collection[str]) -> Iterator[tuple[str, BinaryIO]]:
    """Second pass: ``(name, stream)`` for each wanted regular member, in archive order.

    Each stream must be consumed before the next item is asked for (it is a window on
    the decompressed archive).
    """
    wanted = {normalise(w) for w in wanted}
    with _tar_stream(Path(path)) as tf:
        for info in tf:
            name = normalise(info.name)
            if info.isfile() and name in wanted:
                f = tf.extractfile(info)
                if f is not None:
                    yield name, f  # type: ignore[misc]  # ExFileObject is a BinaryIO
