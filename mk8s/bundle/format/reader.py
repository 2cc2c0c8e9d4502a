"""Read a bundle: inspect its head, or verify (and extract) it in one streaming pass.

Verification order (docs/format.md, "What verify checks"): the manifest and signature
members are read (bounded sizes), the signature is checked against the trusted keys
before anything in the manifest is believed, then every member must be exactly the manifest's next
artifact: a regular file with a safe relative path, the right name, size and sha256.
After the last artifact only tar padding may follow, the zstd stream must be one
complete frame, and nothing may follow it. Memory stays bounded: decompressed data
flows through a small queue of 1 MiB chunks, and the amount read is bounded by the
manifest, so a decompression bomb cannot exhaust memory or disk.

Decompression (and hashing of the compressed file) runs in a second thread while the
calling thread parses and hashes members; both release the GIL in their C code.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Protocol

import zstandard

from mk8s.bundle.format import tarfmt
from mk8s.bundle.format.keys import Signature, TrustedKey, verify_signature
from mk8s.bundle.format.manifest import (
    BUNDLE_KIND,
    MANIFEST_NAME,
    SIGNATURE_NAME,
    Artifact,
    Lock,
    bundle_id,
)
from mk8s.bundle.format.partstream import open_parts
from mk8s.bundle.format.stream import Decompressed, Truncated
from mk8s.bundle.format.zstdframe import ZstdFrameError
from mk8s.callbacks import StreamProgress
from mk8s.errors import BundleRejected, LockError
from mk8s.files import open_regular

MAX_MANIFEST = 16 << 20
MAX_SIGNATURE = 4096
# After the last artifact: the end-of-archive blocks and padding to a 10 KiB record,
# as tar writers emit; allow one more record for writers with a bigger blocking factor.
MAX_TRAILER = 2 * tarfmt.RECORD + 2 * tarfmt.BLOCK


UNSIGNED_WARNING = (
    "THIS BUNDLE IS UNSIGNED: its contents are intact but nothing proves "
    "who made them (accepted because of --allow-unsigned)"
)


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


def _open(path: Path) -> BinaryIO:
    # A split bundle (its parts index, a part, or the unsplit name when only the parts
    # exist) reads as one stream over its parts; a part at fault is named (exit 3).
    try:
        parts = open_parts(path)
    except OSError:  # an unusable path: the plain open below names the problem
        parts = None
    if parts is not None:
        return parts
    return open_regular(path, what="bundle", fix="give the bundle file")


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
    stream: Decompressed, index: int, expected: str, size_limit: int | None = None
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
    if header.name != expected:
        # GNU tar reads a regular member whose name ends in "/" as a directory: the
        # bytes checked here would not be the file an auditor extracts.
        raise BundleRejected(f"member {expected} is named {header.name!r}, like a directory")
    if size_limit is not None and header.size > size_limit:
        raise BundleRejected(f"member {expected} is {header.size} bytes, over {size_limit}")
    return header


def _read_small(stream: Decompressed, header: tarfmt.Header) -> bytes:
    data = stream.read_exact(header.size)
    _skip_padding(stream, header.name, header.size)
    return data


def _skip_padding(stream: Decompressed, name: str, size: int) -> None:
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
        stream = Decompressed(raw, threaded=False)
        try:
            mh = _expect_member(stream, 1, MANIFEST_NAME, MAX_MANIFEST)
            manifest_bytes = _read_small(stream, mh)
            sh = _expect_member(stream, 2, SIGNATURE_NAME, MAX_SIGNATURE)
            sig_bytes = _read_small(stream, sh)
        except Truncated as e:
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
    progress: StreamProgress | None = None,
) -> VerifiedBundle:
    """Verify the whole bundle in one pass; return what was verified.

    Raises BundleRejected (exit 3) naming the member and the reason on any failure;
    InputError if the file cannot be read. ``sink`` receives each artifact's bytes as
    they stream (it must not trust them until verify_bundle returns). ``before_artifacts``
    runs once the signed manifest is trusted, before any artifact byte is read.
    """
    with _open(path) as raw:
        stream = Decompressed(raw, threaded=True)
        try:
            result = _verify_stream(
                stream, trusted, allow_unsigned, sink, before_artifacts, progress
            )
            manifest, manifest_bytes, sig_bytes, signer = result
        except Truncated as e:
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
    stream: Decompressed,
    trusted: Sequence[TrustedKey],
    allow_unsigned: bool,
    sink: ArtifactSink | None,
    before_artifacts: Callable[[Lock], None] | None,
    progress: StreamProgress | None,
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
        done = _verify_artifact(stream, index, art, sink, done, total, progress)
    _verify_end(stream)
    return manifest, manifest_bytes, sig_bytes, signer


def _verify_artifact(
    stream: Decompressed,
    index: int,
    art: Artifact,
    sink: ArtifactSink | None,
    done: int,
    total: int,
    progress: StreamProgress | None,
) -> int:
    """Member ``index`` must be ``art``: its name, size and sha256 (its bytes go to
    ``sink`` as they stream). ``done`` of ``total`` artifact bytes were read before it;
    returns how many are read after it."""
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
    except Truncated as e:
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
    return done


def _verify_end(stream: Decompressed) -> None:
    """After the last artifact: the end-of-archive marker, then only zero padding up to
    :data:`MAX_TRAILER`, then the end of the one zstd frame."""
    try:
        trailer = stream.read_exact(tarfmt.BLOCK)
    except Truncated as e:
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
