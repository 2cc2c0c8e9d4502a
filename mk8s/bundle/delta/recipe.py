"""Recipes: how a delta puts an image archive's tar back together (docs/format.md).

An image archive (``docker save`` output, an OCI image layout) is a tar whose big
members are content-addressed blobs: layers, configs, manifests. :func:`scan` walks
such a tar as a stream and splits it into *blobs* (the data of every regular member
of at least :data:`MIN_BLOB` bytes, named by its sha256) and *skeleton* (every other
byte: headers, padding, small files such as ``manifest.json``). How the tar is read
changes only what counts as a blob, never the bytes: a recipe lists byte ranges
whose concatenation is the tar exactly, so anything :func:`scan` cannot parse simply
stays skeleton.

A recipe is ASCII text, one item per line (the auditor's shell loop reads it as is)::

    mk8s-delta-recipe 1
    content <sha256> <size>             # what the concatenation must hash to
    <source> <offset> <size> [<sha256>] # repeated, in order

where ``<source>`` is a member of the delta (``delta/NAME.skel``,
``blobs/sha256/HEX``) or ``base:<artifact path>``: the decompressed content of that
artifact of the base. ``<sha256>`` names the blob a range holds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from mk8s.bundle.delta.model import HEX64
from mk8s.bundle.format import tarfmt

MAGIC = "mk8s-delta-recipe 1"
#: Regular members at least this big are blobs; smaller ones stay in the skeleton.
MIN_BLOB = 512
#: A recipe of an archive with tens of thousands of members stays far below this.
MAX_RECIPE = 64 << 20
BASE_PREFIX = "base:"
CHUNK = 1 << 20


@dataclass(frozen=True)
class Segment:
    """``size`` bytes at ``offset`` of ``source``; ``sha256`` when they are one blob."""

    source: str
    offset: int
    size: int
    sha256: str | None = None

    @property
    def base_path(self) -> str | None:
        """The base artifact this range is read from, or None (a delta member)."""
        return self.source[len(BASE_PREFIX) :] if self.source.startswith(BASE_PREFIX) else None

    def line(self) -> str:
        tail = f" {self.sha256}" if self.sha256 else ""
        return f"{self.source} {self.offset} {self.size}{tail}"


@dataclass(frozen=True)
class Recipe:
    content_size: int
    content_sha256: str
    segments: tuple[Segment, ...]

    def render(self) -> bytes:
        lines = [MAGIC, f"content {self.content_sha256} {self.content_size}"]
        lines += [s.line() for s in self.segments]
        return ("\n".join(lines) + "\n").encode("ascii")

    def base_paths(self) -> set[str]:
        return {p for s in self.segments if (p := s.base_path) is not None}

    def base_extent(self, path: str) -> int:
        """How many bytes of the base artifact's content the recipe reads at most."""
        ends = [s.offset + s.size for s in self.segments if s.base_path == path]
        return max(ends, default=0)


def parse(data: bytes, what: str) -> Recipe:
    """Read a recipe; ValueError naming ``what`` and the line on anything malformed."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as e:
        raise ValueError(f"{what} is not ASCII text") from e
    lines = text.split("\n")
    if len(lines) < 3 or lines[0] != MAGIC or lines[-1] != "":
        raise ValueError(f"{what} is not an mk8s delta recipe")
    head = lines[1].split(" ")
    if len(head) != 3 or head[0] != "content" or not HEX64.fullmatch(head[1]):
        raise ValueError(f"{what}: line 2 must be 'content <sha256> <size>'")
    segments = []
    total = 0
    for n, line in enumerate(lines[2:-1], start=3):
        seg = _segment(line, f"{what} line {n}")
        segments.append(seg)
        total += seg.size
    size = _number(head[2], f"{what} line 2")
    if total != size:
        raise ValueError(f"{what}: the ranges add up to {total} bytes, not {size}")
    return Recipe(size, head[1], tuple(segments))


def _segment(line: str, where: str) -> Segment:
    parts = line.split(" ")
    if len(parts) not in (3, 4) or not parts[0]:
        raise ValueError(f"{where}: expected '<source> <offset> <size> [<sha256>]'")
    sha = parts[3] if len(parts) == 4 else None
    if sha is not None and not HEX64.fullmatch(sha):
        raise ValueError(f"{where}: bad sha256")
    return Segment(parts[0], _number(parts[1], where), _number(parts[2], where), sha)


def _number(text: str, where: str) -> int:
    if not text.isdigit() or len(text) > 15:
        raise ValueError(f"{where}: {text!r} is not a byte count")
    return int(text)


class ScanSink(Protocol):
    """Receives a tar's bytes from :func:`scan`, in order."""

    def skeleton(self, data: bytes | memoryview) -> None: ...
    def blob_begin(self, offset: int, size: int) -> None: ...
    def blob_data(self, data: bytes | memoryview) -> None: ...
    def blob_end(self, sha256: str) -> None: ...


def scan(stream: BinaryIO, sink: ScanSink) -> int:
    """Feed the tar read from ``stream`` to ``sink``; returns its length in bytes."""
    pos = 0
    pax_size: int | None = None
    parsing = True
    while parsing:
        block = _read(stream, tarfmt.BLOCK)
        sink.skeleton(block)
        pos += len(block)
        if len(block) < tarfmt.BLOCK:
            return pos
        if block.count(0) == tarfmt.BLOCK:
            continue
        try:
            header = tarfmt.parse_header(block)
        except tarfmt.TarFormatError:
            break  # not (or no longer) a tar: the rest is skeleton
        assert header is not None
        size = pax_size if pax_size is not None else header.size
        pax_size = None
        if (header.is_file or header.typeflag == b"7") and size >= MIN_BLOB:
            got = _blob(stream, sink, pos, size)
        else:
            data = _read(stream, size) if header.typeflag == b"x" and size <= CHUNK else b""
            if data:
                sink.skeleton(data)
                pax_size = _pax_size(data)
                got = len(data)
            else:
                got = _copy(stream, size, sink.skeleton)
        pos += got
        if got < size:
            return pos
        pad = _read(stream, tarfmt.padding(size))
        sink.skeleton(pad)
        pos += len(pad)
    pos += _copy(stream, None, sink.skeleton)
    return pos


def _blob(stream: BinaryIO, sink: ScanSink, pos: int, size: int) -> int:
    sink.blob_begin(pos, size)
    h = hashlib.sha256()

    def data(piece: bytes) -> None:
        h.update(piece)
        sink.blob_data(piece)

    got = _copy(stream, size, data)
    if got == size:
        sink.blob_end(h.hexdigest())
    return got


def _pax_size(data: bytes) -> int | None:
    """The ``size`` record of a pax extended header, if any (it overrides the next
    header's size field)."""
    for record in data.split(b"\n"):
        _, _, kv = record.partition(b" ")
        key, _, value = kv.partition(b"=")
        if key == b"size" and value.isdigit():
            return int(value)
    return None


def _read(stream: BinaryIO, n: int) -> bytes:
    parts = []
    while n > 0:
        piece = stream.read(n)
        if not piece:
            break
        parts.append(piece)
        n -= len(piece)
    return b"".join(parts)


def _copy(stream: BinaryIO, n: int | None, out: object) -> int:
    done = 0
    for piece in _chunks(stream, n):
        out(piece)  # type: ignore[operator]
        done += len(piece)
    return done


def _chunks(stream: BinaryIO, n: int | None) -> Iterator[bytes]:
    left = n
    while left is None or left > 0:
        piece = stream.read(CHUNK if left is None else min(CHUNK, left))
        if not piece:
            return
        if left is not None:
            left -= len(piece)
        yield piece


__all__ = ["MIN_BLOB", "Recipe", "Segment", "parse", "scan"]
