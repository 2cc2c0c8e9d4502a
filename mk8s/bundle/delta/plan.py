"""Decide what a delta carries: per artifact, per blob (the connected side).

* An artifact the base has byte for byte (same size and sha256, any path) is taken
  from the base.
* An image archive (RKE2's ``rke2-images*.tar.zst``, an operator's OCI archive) is
  split into blobs and skeleton (:func:`mk8s.bundle.delta.recipe.scan`); blobs the
  base's image archives hold are read from the base, the others travel once each
  under ``blobs/sha256/``. A zstd archive is rebuilt this way only when this zstd
  reproduces upstream's compressed bytes (:func:`mk8s.bundle.delta.codec.find_parameters`);
  otherwise, and when no blob of it is in the base, it travels whole.
* Everything else travels whole.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO

from mk8s.bundle.delta import codec, recipe
from mk8s.bundle.delta.model import BLOB_DIR, DELTA_DIR, Source
from mk8s.bundle.delta.recipe import BASE_PREFIX, Recipe, Segment
from mk8s.bundle.format.manifest import Artifact, ArtifactKind, Lock

#: Kinds whose files are image archives a delta may split into blobs.
ARCHIVE_KINDS = frozenset({ArtifactKind.IMAGES, ArtifactKind.IMAGE})


@dataclass
class Plan:
    """What the delta carries (member path -> local file) and where the rest comes from."""

    files: dict[str, Path] = field(default_factory=dict)
    sources: list[Source] = field(default_factory=list)
    base_used: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)  # archives carried whole, and why
    blobs: dict[str, Path] = field(default_factory=dict)  # new blobs: sha256 -> file


# -- reading archives ----------------------------------------------------------------
def open_content(f: BinaryIO) -> BinaryIO | None:
    """The tar inside an archive file: a zstd frame's content, or the file itself when
    it is a plain tar; None for anything else (gzip, not an archive)."""
    if codec.frame_info(f) is not None:
        return codec.content(f)
    f.seek(257)
    if f.read(5) == b"ustar":
        f.seek(0)
        return f
    return None


class _Hasher:
    """A scan sink that hashes the whole tar and records its blobs in order."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.blobs: list[tuple[int, int, str]] = []  # (offset, size, sha256)
        self._at = (0, 0)

    def skeleton(self, data: bytes | memoryview) -> None:
        self.hash.update(data)

    def blob_begin(self, offset: int, size: int) -> None:
        self._at = (offset, size)

    def blob_data(self, data: bytes | memoryview) -> None:
        self.hash.update(data)

    def blob_end(self, sha256: str) -> None:
        self.blobs.append((*self._at, sha256))


def index_base(base: Lock, files: Mapping[str, Path]) -> dict[str, tuple[str, int, int]]:
    """Every blob of the base's image archives: sha256 -> (artifact path, offset in its
    decompressed tar, size)."""
    index: dict[str, tuple[str, int, int]] = {}
    for art in base.artifacts:
        if art.kind not in ARCHIVE_KINDS or art.path not in files:
            continue
        with open(files[art.path], "rb") as f:
            stream = open_content(f)
            if stream is None:
                continue
            sink = _Hasher()
            recipe.scan(stream, sink)
        for offset, size, sha in sink.blobs:
            index.setdefault(sha, (art.path, offset, size))
    return index


# -- planning ------------------------------------------------------------------------
def plan(
    new: Lock,
    files: Mapping[str, Path],
    base: Lock,
    index: Mapping[str, tuple[str, int, int]],
    work: Path,
) -> Plan:
    """Sources and members for ``new`` against ``base`` (files written under ``work``)."""
    out = Plan()
    same = {(a.size, a.sha256): a.path for a in base.artifacts}
    base_paths = {a.path for a in base.artifacts}
    for art in new.artifacts:
        found = art.path if art.path in base_paths else None
        pinned = same.get((art.size, art.sha256))
        if pinned is not None:
            from_base = found if found and _pins(base, found) == (art.size, art.sha256) else pinned
            out.sources.append(Source(art.path, base=from_base))
            out.base_used.add(from_base)
            continue
        if art.kind in ARCHIVE_KINDS and _rebuild(art, files[art.path], index, work, out):
            continue
        out.files[art.path] = files[art.path]
    for sha, path in out.blobs.items():
        out.files[BLOB_DIR + sha] = path
    return out


def _pins(lock: Lock, path: str) -> tuple[int, str] | None:
    a = next((a for a in lock.artifacts if a.path == path), None)
    return (a.size, a.sha256) if a else None


def _rebuild(
    art: Artifact,
    path: Path,
    index: Mapping[str, tuple[str, int, int]],
    work: Path,
    out: Plan,
) -> bool:
    """Plan ``art`` as a rebuild; False (with a note when it matters) to carry it whole."""
    stem = DELTA_DIR + art.path.split("/", 1)[1]  # delta/rke2-images.linux-amd64.tar.zst
    with open(path, "rb") as f:
        stream = open_content(f)
        if stream is None:
            return False
        sink = _Hasher()
        size = recipe.scan(stream, sink)
    if not any(sha in index for _, _, sha in sink.blobs):
        return False  # nothing of it is in the base
    zstd = placed = None
    tail = b""
    with open(path, "rb") as f:
        info = codec.frame_info(f)
    if info is not None:
        found = codec.find_parameters(path, size)
        if found is None:
            placed = _placed(path, size)
            out.notes.append(
                f"{art.name}: zstd {codec.library()} does not reproduce upstream's compressed"
                f" bytes; it is rebuilt from its blobs into an uncompressed zstd frame"
                f" ({placed[0]} bytes, not upstream's {art.size}), placed on nodes instead"
            )
        else:
            zstd, frame_length = found
            with open(path, "rb") as f:
                f.seek(frame_length)
                tail = f.read()
    elif (size, sink.hash.hexdigest()) != (art.size, art.sha256):
        return False
    segments = _split(path, sink.blobs, index, work, stem + ".skel", out)
    rec = Recipe(size, sink.hash.hexdigest(), tuple(segments))
    _write(work, stem + ".recipe", rec.render(), out)
    tail_member = None
    if tail:
        tail_member = stem + ".tail"
        _write(work, tail_member, tail, out)
    content = (size, rec.content_sha256)
    rebuilt = Source(art.path, recipe=stem + ".recipe", content=content, zstd=zstd)
    out.sources.append(replace(rebuilt, tail=tail_member, placed=placed))
    out.base_used.update(rec.base_paths())
    return True


def _placed(path: Path, size: int) -> tuple[int, str]:
    """(size, sha256) of the archive's tar as one frame of raw zstd blocks."""
    h = hashlib.sha256()
    n = 0

    def out(data: bytes) -> None:
        nonlocal n
        h.update(data)
        n += len(data)

    with open(path, "rb") as f:
        stream = codec.content(f)
        codec.store(size, iter(lambda: stream.read(recipe.CHUNK), b""), out)
    return n, h.hexdigest()


class _Splitter:
    """Second pass over an archive's tar: writes the skeleton and the new blobs, and
    lists the recipe's ranges."""

    def __init__(self, skel: BinaryIO, name: str, kinds: list[str], work: Path, out: Plan):
        self.skel = skel
        self.name = name  # the skeleton's member path
        self.kinds = iter(kinds)  # per blob, in order: "base", "new" or "dup"
        self.work = work
        self.out = out
        self.segments: list[Segment] = []
        self.skel_pos = 0
        self._blob: BinaryIO | None = None
        self._size = 0

    def skeleton(self, data: bytes | memoryview) -> None:
        if not data:
            return
        last = self.segments[-1] if self.segments else None
        if last is not None and last.sha256 is None:
            self.segments[-1] = Segment(last.source, last.offset, last.size + len(data))
        else:
            self.segments.append(Segment(self.name, self.skel_pos, len(data)))
        self.skel.write(data)
        self.skel_pos += len(data)

    def blob_begin(self, offset: int, size: int) -> None:
        self._size = size
        if next(self.kinds) == "new":
            self._blob = open(self.work / "blob.part", "wb")  # noqa: SIM115 (closed at end)

    def blob_data(self, data: bytes | memoryview) -> None:
        if self._blob is not None:
            self._blob.write(data)

    def blob_end(self, sha256: str) -> None:
        if self._blob is not None:
            self._blob.close()
            self._blob = None
            target = self.work / "blobs" / sha256
            os.replace(self.work / "blob.part", target)
            self.out.blobs[sha256] = target
        self.segments.append(Segment(BLOB_DIR + sha256, 0, self._size, sha256))


def _split(
    path: Path,
    blobs: list[tuple[int, int, str]],
    index: Mapping[str, tuple[str, int, int]],
    work: Path,
    skel_member: str,
    out: Plan,
) -> list[Segment]:
    """Write the skeleton and the blobs the base lacks; the recipe's ranges in order."""
    kinds = []
    seen = set(out.blobs)
    for _, _, sha in blobs:
        kinds.append("base" if sha in index else "dup" if sha in seen else "new")
        seen.add(sha)
    (work / "blobs").mkdir(parents=True, exist_ok=True)
    skel_path = work / skel_member
    skel_path.parent.mkdir(parents=True, exist_ok=True)
    with open(skel_path, "wb") as skel, open(path, "rb") as f:
        splitter = _Splitter(skel, skel_member, kinds, work, out)
        stream = open_content(f)
        assert stream is not None
        recipe.scan(stream, splitter)
    out.files[skel_member] = skel_path
    return [_from_base(s, index) for s in splitter.segments]


def _from_base(seg: Segment, index: Mapping[str, tuple[str, int, int]]) -> Segment:
    if seg.sha256 is None or seg.sha256 not in index:
        return seg
    base_path, offset, size = index[seg.sha256]
    return Segment(BASE_PREFIX + base_path, offset, size, seg.sha256)


def _write(work: Path, member: str, data: bytes, out: Plan) -> None:
    path = work / member
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    out.files[member] = path


__all__ = ["ARCHIVE_KINDS", "Plan", "index_base", "open_content", "plan"]
