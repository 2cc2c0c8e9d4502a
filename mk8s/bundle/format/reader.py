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
from pathlib import Path
from typing import BinaryIO, Protocol

import zstandard

from mk8s.bundle.delta.model import needs_base
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
from mk8s.bundle.format.members import (
    expect_member,
    read_small,
    reject_stream_error,
    skip_padding,
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
class DeltaVerified:
    """What a delta verification read besides the delta's own bytes."""

    manifest: Lock  # the delta's own manifest, with its delta section
    manifest_bytes: bytes  # as signed
    base_path: Path
    base_bundle_id: str  # the id of the base given (its manifest's)

    @property
    def carried(self) -> int:
        assert self.manifest.delta is not None
        return self.manifest.delta.carried_bytes


@dataclass(frozen=True)
class VerifiedBundle:
    """A bundle that passed every check. For a delta verified with its base,
    ``manifest`` and ``manifest_bytes`` are those of the whole release (as the full
    bundle's), and ``delta`` says what was read (mk8s.bundle.delta.verify)."""

    path: Path
    manifest: Lock
    manifest_bytes: bytes
    signature_bytes: bytes
    signer: TrustedKey | None
    file_sha256: str
    file_size: int
    delta: DeltaVerified | None = None

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


def open_bundle(path: Path) -> BinaryIO:
    """The bundle's bytes as one stream (a split bundle's parts in order)."""
    return _open(path)


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


def parse_manifest(data: bytes) -> Lock:
    """A bundle's manifest from its bytes, schema-checked; BundleRejected otherwise."""
    return _parse_manifest(data)


def read_head(path: Path) -> BundleHead:
    """Read the manifest and signature members only, without verifying anything.

    Decompresses just the first members, so it answers at once on a huge bundle.
    Raises BundleRejected if the head is not a mk8s bundle at all.
    """
    with _open(path) as raw:
        stream = Decompressed(raw, threaded=False)
        try:
            mh = expect_member(stream, 1, MANIFEST_NAME, MAX_MANIFEST)
            manifest_bytes = read_small(stream, mh)
            sh = expect_member(stream, 2, SIGNATURE_NAME, MAX_SIGNATURE)
            sig_bytes = read_small(stream, sh)
        except Truncated as e:
            raise BundleRejected("the bundle ends inside its first members (truncated)") from e
        except (ZstdFrameError, zstandard.ZstdError) as e:
            raise reject_stream_error(e, path, "in the bundle head") from e
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
    A delta is refused, naming the base it needs: :func:`mk8s.bundle.check.verify`
    takes a delta with its base.
    """
    trust = signature_trust(trusted, allow_unsigned=allow_unsigned)
    return read_bundle(path, trust, sink=sink, before_artifacts=before_artifacts, progress=progress)


#: Decides whether a bundle's head can be believed: given the manifest and signature
#: members' bytes, returns the parsed manifest and its signer, or raises BundleRejected.
Trust = Callable[[bytes, bytes], tuple[Lock, TrustedKey | None]]


def signature_trust(
    trusted: Sequence[TrustedKey], *, allow_unsigned: bool = False, delta: bool = False
) -> Trust:
    """Believe a manifest signed by one of ``trusted``. A delta's manifest is refused,
    naming its base, unless ``delta`` (then its members are what it carries)."""

    def trust(manifest_bytes: bytes, sig_bytes: bytes) -> tuple[Lock, TrustedKey | None]:
        signer = verify_signature(
            manifest_bytes, Signature.from_bytes(sig_bytes), trusted, allow_unsigned=allow_unsigned
        )
        manifest = _parse_manifest(manifest_bytes)
        if manifest.delta is not None and not delta:
            raise needs_base(manifest.delta.base, None)
        return manifest, signer

    return trust


def read_bundle(
    path: Path,
    trust: Trust,
    *,
    sink: ArtifactSink | None = None,
    before_artifacts: Callable[[Lock], None] | None = None,
    progress: StreamProgress | None = None,
    hash_file: bool = True,
) -> VerifiedBundle:
    """Check a bundle in one pass against the manifest ``trust`` believes (see
    :func:`verify_bundle`). ``hash_file=False`` skips the sha256 of the whole file
    (``file_sha256`` is then that of nothing)."""
    with _open(path) as raw:
        stream = Decompressed(raw, threaded=True, hash_file=hash_file)
        try:
            result = _verify_stream(stream, trust, sink, before_artifacts, progress)
            manifest, manifest_bytes, sig_bytes, signer = result
        except Truncated as e:
            raise BundleRejected(
                f"the bundle is truncated: the data ends {e.args[0]} bytes into a member",
                "copy the bundle again; the file is incomplete",
            ) from e
        except (ZstdFrameError, zstandard.ZstdError) as e:
            raise reject_stream_error(e, path) from e
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
    trust: Trust,
    sink: ArtifactSink | None,
    before_artifacts: Callable[[Lock], None] | None,
    progress: StreamProgress | None,
) -> tuple[Lock, bytes, bytes, TrustedKey | None]:
    mh = expect_member(stream, 1, MANIFEST_NAME, MAX_MANIFEST)
    manifest_bytes = read_small(stream, mh)
    sh = expect_member(stream, 2, SIGNATURE_NAME, MAX_SIGNATURE)
    sig_bytes = read_small(stream, sh)
    manifest, signer = trust(manifest_bytes, sig_bytes)
    if before_artifacts:
        before_artifacts(manifest)
    members = manifest.members()  # a delta's: what it carries
    total = sum(a.size for a in members)
    done = 0
    for index, art in enumerate(members, start=3):
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
    header = expect_member(stream, index, art.path)
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
    skip_padding(stream, art.path, art.size)
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
