"""Read a bundle: inspect its head, or verify (and extract) it in one streaming pass.

Verification order (SPEC section 6): the manifest and signature members are read
(bounded sizes), the signature is checked against the trusted keys before anything in
the manifest is believed, then every member must be exactly the manifest's next
artifact: a regular file with a safe relative path, the right name, size and sha256.
After the last artifact only tar padding may follow, the zstd stream must be one
complete frame, and nothing may follow it. Memory stays bounded: decompressed data
flows through a small queue of 1 MiB chunks, and the amount read is bounded by the
manifest, so a decompression bomb cannot exhaust memory or disk.

Decompression (and hashing of the compressed file) runs in a second thread while the
calling thread parses and hashes members; both release the GIL in their C code.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import secrets
import shutil
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Protocol

import zstandard

from mk8s.bundle import tarfmt
from mk8s.bundle.keys import Signature, TrustedKey, verify_signature
from mk8s.bundle.manifest import (
    BUNDLE_KIND,
    MANIFEST_NAME,
    SIGNATURE_NAME,
    Artifact,
    Lock,
    bundle_id,
)
from mk8s.bundle.zstdframe import FrameWalker, ZstdFrameError
from mk8s.errors import BundleRejected, InputError, LockError, OutputError

CHUNK = 1 << 20
QUEUE_DEPTH = 8
MAX_MANIFEST = 16 << 20
MAX_SIGNATURE = 4096
# After the last artifact: the end-of-archive blocks and padding to a 10 KiB record,
# as tar writers emit; allow one more record for writers with a bigger blocking factor.
MAX_TRAILER = 2 * tarfmt.RECORD + 2 * tarfmt.BLOCK

Progress = Callable[[int, int], None]
EXECUTABLE_KINDS = ("mk8s", "install-script")


class ArtifactSink(Protocol):
    """Receives an artifact's bytes during verification (used by extract)."""

    def begin(self, artifact: Artifact) -> None: ...
    def write(self, data: memoryview) -> None: ...
    def end(self, artifact: Artifact) -> None: ...


@dataclass(frozen=True)
class BundleHead:
    """The manifest and signature, read but NOT verified."""

    manifest: Lock | None
    manifest_bytes: bytes
    signature: Signature | None
    problem: str | None  # why the manifest or signature could not be parsed

    @property
    def bundle_id(self) -> str:
        return bundle_id(self.manifest_bytes)


@dataclass(frozen=True)
class VerifiedBundle:
    """A bundle that passed every check."""

    path: Path
    manifest: Lock
    manifest_bytes: bytes
    signature_bytes: bytes
    signer: TrustedKey | None
    file_sha256: str
    file_size: int

    @property
    def bundle_id(self) -> str:
        return bundle_id(self.manifest_bytes)


class _Truncated(Exception):
    pass


class _Source:
    """The compressed file as zstandard reads it: hashed and structure-checked."""

    def __init__(self, raw: BinaryIO, *, check: bool) -> None:
        self.raw = raw
        self.check = check
        self.hash = hashlib.sha256()
        self.walker = FrameWalker()

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n if n and n > 0 else CHUNK)
        if data and self.check:
            self.hash.update(data)
            self.walker.feed(data)
        return data


_EOF = object()


class _Decompressed:
    """Decompressed bytes, produced by a worker thread, consumed in bounded reads."""

    def __init__(self, raw: BinaryIO, *, threaded: bool) -> None:
        # The threaded (verifying) reader checks the whole file; the head reader
        # (inspect) stops early and so checks nothing about the rest.
        self.source = _Source(raw, check=threaded)
        self._reader = zstandard.ZstdDecompressor().stream_reader(
            self.source,  # type: ignore[arg-type]  # any object with read() will do
            read_size=CHUNK,
            read_across_frames=False,
        )
        self._buf = memoryview(b"")
        self._stop = threading.Event()
        self._queue: queue.Queue[object] = queue.Queue(QUEUE_DEPTH)
        self._thread: threading.Thread | None = None
        self._eof = False
        if threaded:
            self._thread = threading.Thread(target=self._produce, daemon=True)
            self._thread.start()

    # -- producer --------------------------------------------------------------------
    def _next_raw(self) -> bytes:
        chunk: bytes = self._reader.read(CHUNK)
        if chunk:
            return chunk
        # End of the frame (or of the input): anything left in the file must not exist.
        while self.source.read(CHUNK):
            pass
        if self.source.check:  # the head reader feeds the walker nothing
            self.source.walker.finish()
        return b""

    def _produce(self) -> None:
        try:
            while not self._stop.is_set():
                chunk = self._next_raw()
                if not self._put(chunk if chunk else _EOF):
                    return
                if not chunk:
                    return
        except BaseException as e:  # forwarded to the consumer, which re-raises it
            self._put(e)

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    # -- consumer --------------------------------------------------------------------
    def _fill(self) -> bool:
        if self._eof:
            return False
        if self._thread is None:
            item: object = self._next_raw() or _EOF
        else:
            item = self._queue.get()
        if item is _EOF:
            self._eof = True
            return False
        if isinstance(item, BaseException):
            self._eof = True
            raise item
        assert isinstance(item, bytes)
        self._buf = memoryview(item)
        return True

    def chunks(self, n: int) -> Iterator[memoryview]:
        """Yield exactly ``n`` bytes in pieces; raises _Truncated if the data ends first."""
        left = n
        while left:
            if not self._buf and not self._fill():
                raise _Truncated(n - left)
            piece = self._buf[:left]
            self._buf = self._buf[len(piece) :]
            left -= len(piece)
            yield piece

    def read_exact(self, n: int) -> bytes:
        return b"".join(self.chunks(n))

    def rest(self, limit: int) -> tuple[int, bool]:
        """Consume everything left; return (bytes, all zero) or raise if over ``limit``."""
        count = 0
        zero = True
        while self._buf or self._fill():
            piece = self._buf
            self._buf = memoryview(b"")
            count += len(piece)
            if zero and piece.tobytes().count(0) != len(piece):
                zero = False
            if count > limit:
                return count, zero
        return count, zero

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            with contextlib.suppress(queue.Empty):
                while True:
                    self._queue.get_nowait()
            self._thread.join(timeout=5)


def _open(path: Path) -> BinaryIO:
    try:
        return open(path, "rb")
    except FileNotFoundError as e:
        raise InputError(f"bundle {path} does not exist", "check the path") from e
    except IsADirectoryError as e:
        raise InputError(f"{path} is a directory, not a bundle file") from e
    except OSError as e:
        raise InputError(f"cannot read bundle {path}: {e.strerror or e}") from e


def _reject_stream_error(e: BaseException, where: str) -> BundleRejected:
    if isinstance(e, ZstdFrameError):
        return BundleRejected(f"{e}", "get the bundle again; the file was damaged or altered")
    if isinstance(e, zstandard.ZstdError):
        return BundleRejected(
            f"the zstd stream is corrupt {where} ({e})",
            "get the bundle again; the file was damaged or altered",
        )
    raise e


def _safe_name(name: str) -> bool:
    p = PurePosixPath(name)
    return bool(name) and not p.is_absolute() and ".." not in p.parts and "\\" not in name


def _expect_member(
    stream: _Decompressed, index: int, expected: str, size_limit: int | None = None
) -> tarfmt.Header:
    block = stream.read_exact(tarfmt.BLOCK)
    try:
        header = tarfmt.parse_header(block)
    except tarfmt.TarFormatError as e:
        raise BundleRejected(f"member {index} (expected {expected}): {e}") from e
    if header is None:
        raise BundleRejected(
            f"member {expected} is missing: the archive ends after {index - 1} members"
        )
    if not _safe_name(header.name):
        raise BundleRejected(
            f"member {index} has an unsafe path {header.name!r} (absolute or with '..')"
        )
    if header.name.rstrip("/") != expected:
        raise BundleRejected(
            f"member {index}: expected {expected}, found {header.name!r} "
            "(a member was added, removed, renamed or reordered)"
        )
    if not header.is_file:
        raise BundleRejected(f"member {expected} is a {header.kind}, not a regular file")
    if size_limit is not None and header.size > size_limit:
        raise BundleRejected(f"member {expected} is {header.size} bytes, over {size_limit}")
    return header


def _read_small(stream: _Decompressed, header: tarfmt.Header) -> bytes:
    data = stream.read_exact(header.size)
    _skip_padding(stream, header.name, header.size)
    return data


def _skip_padding(stream: _Decompressed, name: str, size: int) -> None:
    pad = stream.read_exact(tarfmt.padding(size))
    if pad.count(0) != len(pad):
        raise BundleRejected(f"member {name}: non-zero bytes hidden in the tar padding")


def _parse_manifest(data: bytes, *, validate: bool = True) -> Lock:
    try:
        manifest = Lock.from_bytes(data, source=MANIFEST_NAME, validate=validate)
    except LockError as e:
        raise BundleRejected(e.problem, "the bundle was not written by mk8s or was altered") from e
    if manifest.kind != BUNDLE_KIND:
        raise BundleRejected(
            f"{MANIFEST_NAME} is a {manifest.kind}, not a bundle manifest",
            "the bundle was not written by mk8s or was altered",
        )
    return manifest


def read_head(path: Path) -> BundleHead:
    """Read the manifest and signature members only, without verifying anything.

    Decompresses just the first members, so it answers at once on a huge bundle.
    Raises BundleRejected if the head is not a mk8s bundle at all.
    """
    with _open(path) as raw:
        stream = _Decompressed(raw, threaded=False)
        try:
            mh = _expect_member(stream, 1, MANIFEST_NAME, MAX_MANIFEST)
            manifest_bytes = _read_small(stream, mh)
            sh = _expect_member(stream, 2, SIGNATURE_NAME, MAX_SIGNATURE)
            sig_bytes = _read_small(stream, sh)
        except _Truncated as e:
            raise BundleRejected("the bundle ends inside its first members (truncated)") from e
        except (ZstdFrameError, zstandard.ZstdError) as e:
            raise _reject_stream_error(e, "in the bundle head") from e
    problems: list[str] = []
    manifest: Lock | None = None
    signature: Signature | None = None
    try:
        manifest = _parse_manifest(manifest_bytes, validate=False)
    except BundleRejected as e:
        problems.append(str(e))
    try:
        signature = Signature.from_bytes(sig_bytes)
    except BundleRejected as e:
        problems.append(str(e))
    return BundleHead(manifest, manifest_bytes, signature, "; ".join(problems) or None)


def verify_bundle(
    path: Path,
    trusted: Sequence[TrustedKey],
    *,
    allow_unsigned: bool = False,
    sink: ArtifactSink | None = None,
    before_artifacts: Callable[[Lock], None] | None = None,
    progress: Progress | None = None,
) -> VerifiedBundle:
    """Verify the whole bundle in one pass; return what was verified.

    Raises BundleRejected (exit 3) naming the member and the reason on any failure;
    InputError if the file cannot be read. ``sink`` receives each artifact's bytes as
    they stream (it must not trust them until verify_bundle returns). ``before_artifacts``
    runs once the signed manifest is trusted, before any artifact byte is read.
    """
    with _open(path) as raw:
        stream = _Decompressed(raw, threaded=True)
        try:
            result = _verify_stream(
                stream, trusted, allow_unsigned, sink, before_artifacts, progress
            )
            manifest, manifest_bytes, sig_bytes, signer = result
        except _Truncated as e:
            raise BundleRejected(
                f"the bundle is truncated: the data ends {e.args[0]} bytes into a member",
                "copy the bundle again; the file is incomplete",
            ) from e
        except (ZstdFrameError, zstandard.ZstdError) as e:
            raise _reject_stream_error(e, "") from e
        finally:
            stream.close()
        return VerifiedBundle(
            path=path,
            manifest=manifest,
            manifest_bytes=manifest_bytes,
            signature_bytes=sig_bytes,
            signer=signer,
            file_sha256=stream.source.hash.hexdigest(),
            file_size=stream.source.walker.consumed,
        )


def _verify_stream(
    stream: _Decompressed,
    trusted: Sequence[TrustedKey],
    allow_unsigned: bool,
    sink: ArtifactSink | None,
    before_artifacts: Callable[[Lock], None] | None,
    progress: Progress | None,
) -> tuple[Lock, bytes, bytes, TrustedKey | None]:
    mh = _expect_member(stream, 1, MANIFEST_NAME, MAX_MANIFEST)
    manifest_bytes = _read_small(stream, mh)
    sh = _expect_member(stream, 2, SIGNATURE_NAME, MAX_SIGNATURE)
    sig_bytes = _read_small(stream, sh)
    signer = verify_signature(
        manifest_bytes, Signature.from_bytes(sig_bytes), trusted, allow_unsigned=allow_unsigned
    )
    manifest = _parse_manifest(manifest_bytes)
    if before_artifacts:
        before_artifacts(manifest)
    total = manifest.total_size
    done = 0
    for index, art in enumerate(manifest.artifacts, start=3):
        header = _expect_member(stream, index, art.path)
        if header.size != art.size:
            raise BundleRejected(
                f"member {art.path}: size {header.size} differs from the manifest's {art.size}"
            )
        h = hashlib.sha256()
        if sink:
            sink.begin(art)
        try:
            for piece in stream.chunks(art.size):
                h.update(piece)
                if sink:
                    sink.write(piece)
                done += len(piece)
                if progress:
                    progress(done, total)
        except _Truncated as e:
            got = e.args[0]  # bytes delivered before the data ended
            raise BundleRejected(
                f"member {art.path} is truncated: expected {art.size} bytes, got {got}",
                "copy the bundle again; the file is incomplete",
            ) from e
        got_hash = h.hexdigest()
        if got_hash != art.sha256:
            raise BundleRejected(
                f"member {art.path}: sha256 {got_hash} differs from the manifest's {art.sha256}",
                "do not use this bundle; it was damaged or altered",
            )
        _skip_padding(stream, art.path, art.size)
        if sink:
            sink.end(art)
    try:
        trailer = stream.read_exact(tarfmt.BLOCK)
    except _Truncated as e:
        raise BundleRejected(
            "the archive ends without its end-of-archive marker (truncated)",
            "copy the bundle again; the file is incomplete",
        ) from e
    try:
        extra = tarfmt.parse_header(trailer)
    except tarfmt.TarFormatError as e:
        raise BundleRejected("unexpected data after the last artifact") from e
    if extra is not None:
        raise BundleRejected(
            f"unexpected member {extra.name!r} after the last artifact "
            "(a member was added or duplicated)"
        )
    count, zero = stream.rest(MAX_TRAILER)
    if not zero or count > MAX_TRAILER:
        raise BundleRejected(
            "unexpected data after the end of the archive",
            "do not use this bundle; bytes were appended to it",
        )
    return manifest, manifest_bytes, sig_bytes, signer


class _DirectorySink:
    """Writes artifacts into a private temporary directory during verification."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._file: BinaryIO | None = None
        self.discard = False

    def begin(self, artifact: Artifact) -> None:
        if self.discard:
            return
        target = self.root / artifact.path
        target.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(target, "xb")  # noqa: SIM115  (closed in end() or close())

    def write(self, data: memoryview) -> None:
        if self._file is not None:
            self._file.write(data)

    def end(self, artifact: Artifact) -> None:
        self.close()
        if artifact.kind in EXECUTABLE_KINDS and not self.discard:
            os.chmod(self.root / artifact.path, 0o755)  # noqa: S103  (executables, as shipped)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def extract_bundle(
    path: Path,
    trusted: Sequence[TrustedKey],
    dest: Path,
    *,
    allow_unsigned: bool = False,
    progress: Progress | None = None,
) -> VerifiedBundle:
    """Verify while extracting into ``dest``; on any failure ``dest`` is as it was.

    Files go to a temporary directory inside ``dest`` and are moved into place only
    after every check passed. Refuses (OutputError) if ``dest`` already holds
    ``mk8s-bundle.json`` or ``artifacts``, or has too little free space.
    """
    created = not dest.exists()
    targets = [dest / MANIFEST_NAME, dest / SIGNATURE_NAME, dest / "artifacts"]
    for t in targets:
        if t.exists():
            raise OutputError(f"{t} already exists", "extract into an empty directory")
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create {dest}: {e.strerror or e}") from e
    work = dest / f".mk8s-extract-{secrets.token_hex(4)}"
    sink = _DirectorySink(work)
    moved: list[Path] = []

    shortfall: list[str] = []

    def check_space(manifest: Lock) -> None:
        # Too little room: keep verifying without writing. A bundle whose manifest lies
        # about sizes is then rejected as such (exit 3); an honest big one gets the
        # disk-space error once verification is complete.
        st = os.statvfs(dest)
        free = st.f_bavail * st.f_frsize
        if free < manifest.total_size:
            sink.discard = True
            shortfall.append(
                f"{dest} has {free} bytes free; the bundle needs {manifest.total_size}"
            )

    try:
        work.mkdir()
        verified = verify_bundle(
            path,
            trusted,
            allow_unsigned=allow_unsigned,
            sink=sink,
            before_artifacts=check_space,
            progress=progress,
        )
        sink.close()
        if shortfall:
            raise OutputError(shortfall[0], "free some space or extract elsewhere")
        (work / MANIFEST_NAME).write_bytes(verified.manifest_bytes)
        (work / SIGNATURE_NAME).write_bytes(verified.signature_bytes)
        if not (work / "artifacts").exists():
            (work / "artifacts").mkdir()
        for t in targets:
            os.replace(work / t.name, t)
            moved.append(t)
    except BaseException as e:
        sink.close()
        shutil.rmtree(work, ignore_errors=True)
        for t in moved:  # none of them existed before: take them away again
            shutil.rmtree(t, ignore_errors=True) if t.is_dir() else t.unlink(missing_ok=True)
        if created:
            shutil.rmtree(dest, ignore_errors=True)
        if isinstance(e, OSError):
            raise OutputError(f"cannot extract into {dest}: {e.strerror or e}") from e
        raise
    shutil.rmtree(work, ignore_errors=True)
    return verified
