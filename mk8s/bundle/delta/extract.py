"""Extract a delta with its base: the whole release's artifacts, byte for byte.

Both files are verified while they stream (:mod:`.verify`): the delta's members and
the base artifacts it reads go to a private work directory inside the destination.
Then every artifact of the release is put together there: carried ones as they came,
base ones copied, image archives rebuilt from their recipes (:mod:`.recipe`): every
range is read, every blob range hashed against its name, the whole tar hashed against
the recipe's content pin, compressed again with the recorded zstd parameters, and the
result checked against the artifact's own size and sha256, i.e. upstream's. Only when
all of that passed does anything move into the destination; on any failure it is as
it was.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from mk8s.bundle.delta import codec, recipe
from mk8s.bundle.delta.model import Delta, Source
from mk8s.bundle.delta.verify import delta_head, verify_delta
from mk8s.bundle.format.extract import make_dirs
from mk8s.bundle.format.keys import TrustedKey
from mk8s.bundle.format.manifest import (
    EXECUTABLE_KINDS,
    MANIFEST_NAME,
    SIGNATURE_NAME,
    Artifact,
    Lock,
)
from mk8s.bundle.format.reader import VerifiedBundle
from mk8s.callbacks import StreamProgress
from mk8s.errors import BundleRejected, OutputError

CHUNK = 1 << 20
AGAIN = "get the delta and its base again: one of them was damaged or altered"


class _FileSink:
    """Writes the members it is asked for under ``root``, by path (an ArtifactSink)."""

    def __init__(self, root: Path, wanted: set[str] | None) -> None:
        self.root = root
        self.wanted = wanted
        self._file: BinaryIO | None = None

    def begin(self, artifact: Artifact) -> None:
        if self.wanted is not None and artifact.path not in self.wanted:
            return
        target = self.root / artifact.path
        target.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(target, "xb")  # noqa: SIM115  (closed in end() or close())

    def write(self, data: memoryview) -> None:
        if self._file is not None:
            self._file.write(data)

    def end(self, artifact: Artifact) -> None:
        self.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def extract_delta(
    path: Path,
    base: Path,
    trusted: Sequence[TrustedKey],
    dest: Path,
    *,
    allow_unsigned: bool = False,
    progress: StreamProgress | None = None,
) -> VerifiedBundle:
    """Verify the delta and its base, rebuild the release into ``dest`` (exit 3 on any
    check, OutputError when ``dest`` cannot take it); ``dest`` is unchanged on failure.
    ``dest`` gets the delta's own signed manifest and signature, and every artifact."""
    targets = [dest / MANIFEST_NAME, dest / SIGNATURE_NAME, dest / "artifacts"]
    for t in targets:
        if t.exists() or t.is_symlink():
            raise OutputError(f"{t} already exists", "extract into an empty directory")
    created = make_dirs(dest)
    work = dest / f".mk8s-extract-{secrets.token_hex(4)}"
    moved: list[Path] = []
    try:
        work.mkdir()
        verified = rebuild_into(path, base, trusted, work, allow_unsigned, progress)
        for t in targets:
            os.replace(work / "out" / t.name, t)
            moved.append(t)
    except BaseException as e:
        shutil.rmtree(work, ignore_errors=True)
        for t in moved:
            shutil.rmtree(t, ignore_errors=True) if t.is_dir() else t.unlink(missing_ok=True)
        for d in reversed(created):
            shutil.rmtree(d, ignore_errors=True)
        if isinstance(e, OSError):
            raise OutputError(f"cannot extract into {dest}: {e.strerror or e}") from e
        raise
    shutil.rmtree(work, ignore_errors=True)
    return verified


def rebuild_into(
    path: Path,
    base: Path,
    trusted: Sequence[TrustedKey],
    work: Path,
    allow_unsigned: bool = False,
    progress: StreamProgress | None = None,
) -> VerifiedBundle:
    """Verify, then put the whole release together in ``work/out`` (the manifest, its
    signature and ``artifacts/``); the rest of ``work`` is scratch space."""
    head = delta_head(path, trusted, allow_unsigned)  # which base artifacts to keep
    delta = head.delta
    assert delta is not None
    wanted = {a.path for a in delta.base.artifacts}
    sinks = {"delta": _FileSink(work / "d", None), "base": _FileSink(work / "b", wanted)}

    def before(whole: Lock) -> None:
        free = shutil.disk_usage(work).free
        need = room_needed(whole, delta)
        if free < need:
            raise OutputError(
                f"{work.parent} has {free} bytes free; extracting this delta needs {need}"
                f" (the release's {whole.total_size} and, while it is rebuilt, the"
                " delta's pieces and the base's artifacts)",
                "free some space or extract elsewhere",
            )

    try:
        v = verify_delta(
            path,
            base,
            trusted,
            allow_unsigned=allow_unsigned,
            sink=sinks["delta"],
            base_sink=sinks["base"],
            before_artifacts=before,
            progress=progress,
        )
    finally:
        for s in sinks.values():
            s.close()
    assert v.delta is not None and v.delta.manifest.delta is not None
    if v.delta.manifest != head:
        raise BundleRejected(f"{path} changed while mk8s was reading it", "retry")
    out = work / "out"
    (out / "artifacts").mkdir(parents=True)
    rebuilder = _Rebuilder(work, v.delta.manifest.delta)
    for art in v.manifest.artifacts:
        target = out / art.path
        target.parent.mkdir(parents=True, exist_ok=True)
        rebuilder.place(art, target)
        if art.kind in EXECUTABLE_KINDS:
            os.chmod(target, 0o755)  # noqa: S103  (executables, as shipped)
    (out / MANIFEST_NAME).write_bytes(v.delta.manifest_bytes)
    (out / SIGNATURE_NAME).write_bytes(v.signature_bytes)
    return v


def room_needed(whole: Lock, delta: Delta) -> int:
    """Bytes the work directory holds at most: the release; the delta's members that
    are not artifacts (artifacts carried whole are moved, not copied); the base
    artifacts it reads; and each rebuilt archive's tar, the size of the decompressed
    base content its recipe reads (at most, roughly: the rebuilt tar is what it holds)."""
    pieces = sum(m.size for m in delta.members if not m.path.startswith("artifacts/"))
    base = sum(p.size for p in delta.base.artifacts)
    contents = sum(s.content[0] for s in delta.sources if s.content is not None)
    return whole.total_size + pieces + base + contents


class _Rebuilder:
    """Puts each artifact of the release in place from the verified pieces."""

    def __init__(self, work: Path, delta: Delta) -> None:
        self.work = work
        self.delta = delta
        self.contents: dict[str, Path] = {}  # base artifact path -> its decompressed tar

    def place(self, art: Artifact, target: Path) -> None:
        if self.delta.member(art.path) is not None:
            os.replace(self.work / "d" / art.path, target)
            return
        source = self.delta.source(art.path)
        assert source is not None  # Delta.check: every artifact is carried or sourced
        if source.base is not None:  # checked against the pins as the base streamed
            shutil.copyfile(self.work / "b" / source.base, target)
        else:
            self._rebuild(art, source, target)

    def _rebuild(self, art: Artifact, source: Source, target: Path) -> None:
        assert source.recipe is not None and source.content is not None
        try:
            rec = recipe.parse((self.work / "d" / source.recipe).read_bytes(), source.recipe)
        except ValueError as e:
            raise BundleRejected(f"{e}", AGAIN) from e
        if (rec.content_size, rec.content_sha256) != source.content:
            raise BundleRejected(f"{source.recipe} does not match the manifest's content", AGAIN)
        h = hashlib.sha256()
        with open(target, "xb") as f:
            out = _Hashing(f)
            pieces = self._pieces(art, rec, h)
            if source.placed is not None:  # no zstd reproduced upstream's bytes
                codec.store(rec.content_size, pieces, out.write)
            elif source.zstd is None:
                for piece in pieces:
                    out.write(piece)
            else:
                codec.compress(source.zstd, rec.content_size, pieces, out.write)
                if source.tail is not None:
                    with open(self.work / "d" / source.tail, "rb") as tail:
                        while chunk := tail.read(CHUNK):
                            out.write(chunk)
        if h.hexdigest() != rec.content_sha256:
            raise BundleRejected(
                f"rebuilding {art.path}: its tar hashes to {h.hexdigest()}, not the pinned"
                f" {rec.content_sha256}",
                AGAIN,
            )
        if (out.size, out.hash.hexdigest()) != (art.size, art.sha256):
            raise BundleRejected(
                f"rebuilt {art.path} is {out.size} bytes with sha256 {out.hash.hexdigest()},"
                f" not the pinned {art.size} bytes {art.sha256}",
                "use the mk8s (and zstd) that made the delta, or carry the full bundle",
            )

    def _pieces(self, art: Artifact, rec: recipe.Recipe, h: hashlib._Hash) -> Iterator[bytes]:
        for seg in rec.segments:
            blob = hashlib.sha256() if seg.sha256 else None
            for piece in _read_range(self._file_of(art, rec, seg), seg, art):
                h.update(piece)
                if blob is not None:
                    blob.update(piece)
                yield piece
            if blob is not None and blob.hexdigest() != seg.sha256:
                raise BundleRejected(
                    f"rebuilding {art.path}: {seg.source} at offset {seg.offset} is not blob"
                    f" sha256:{seg.sha256}",
                    AGAIN,
                )

    def _file_of(self, art: Artifact, rec: recipe.Recipe, seg: recipe.Segment) -> Path:
        base_path = seg.base_path
        if base_path is None:
            if self.delta.member(seg.source) is None or seg.source.startswith("artifacts/"):
                raise BundleRejected(f"the recipe of {art.path} reads {seg.source!r}", AGAIN)
            return self.work / "d" / seg.source
        if self.delta.base.pin(base_path) is None:
            raise BundleRejected(f"the recipe of {art.path} reads base {base_path!r}", AGAIN)
        if base_path not in self.contents:
            self.contents[base_path] = self._content(base_path, rec.base_extent(base_path))
        return self.contents[base_path]

    def _content(self, base_path: str, extent: int) -> Path:
        """The decompressed tar of a base archive (a plain tar is its own), up to the
        ``extent`` the recipes read (so nothing unbounded is written)."""
        src = self.work / "b" / base_path
        with open(src, "rb") as f:
            if codec.frame_info(f) is None:
                return src
            target = self.work / "c" / base_path
            target.parent.mkdir(parents=True, exist_ok=True)
            reader = codec.content(f)
            with open(target, "wb") as out:
                left = extent
                while left > 0 and (chunk := reader.read(min(CHUNK, left))):
                    out.write(chunk)
                    left -= len(chunk)
        return target


def _read_range(path: Path, seg: recipe.Segment, art: Artifact) -> Iterator[bytes]:
    with open(path, "rb") as f:
        f.seek(seg.offset)
        left = seg.size
        while left > 0:
            piece = f.read(min(CHUNK, left))
            if not piece:
                raise BundleRejected(
                    f"rebuilding {art.path}: {seg.source} ends before offset"
                    f" {seg.offset + seg.size}",
                    AGAIN,
                )
            left -= len(piece)
            yield piece


class _Hashing:
    """Writes to a file, hashing and counting."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.hash.update(data)
        self.size += len(data)
        self.f.write(data)


__all__ = ["extract_delta", "rebuild_into", "room_needed"]
