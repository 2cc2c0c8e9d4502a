"""Verify a delta with its base, as if the whole release had been carried.

Order: the delta's head (its signature against the trusted keys, then its manifest);
the base's head (the base named, and a full bundle holding every artifact the delta
pins from it: :mod:`.base`); that this zstd is the one that reproduced the rebuilt
archives' bytes. Only then are the two files streamed, at the same time (two
threads, so a two-core machine checks the base while it checks the delta): every
member of the delta against the delta's signed manifest, every member of the base
against the base's own manifest. Any failure is exit 3 and names the file at fault.

What verify does not do is rebuild: the recipes are pinned members, the bytes they
read are pinned (by the delta, or by the base artifacts it pins), decompression is
deterministic and compression was shown at create to give upstream's bytes with
this zstd. ``extract`` and ``deploy`` rebuild, and check every rebuilt archive
against its pins before anything is placed (:mod:`.extract`).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

from mk8s.bundle.delta import codec
from mk8s.bundle.delta.base import base_trust, open_base
from mk8s.bundle.format.keys import TrustedKey, verify_signature
from mk8s.bundle.format.manifest import Lock
from mk8s.bundle.format.reader import (
    ArtifactSink,
    DeltaVerified,
    Trust,
    VerifiedBundle,
    open_bundle,
    parse_manifest,
    read_bundle,
    read_head,
    signature_trust,
)
from mk8s.callbacks import StreamProgress
from mk8s.errors import BundleRejected, InputError, Mk8sError
from mk8s.ui import safe

CHUNK = 1 << 20


class _Stopped(Exception):
    """The other stream failed: stop reading this one."""


def delta_head(path: Path, trusted: Sequence[TrustedKey], allow_unsigned: bool) -> Lock:
    """The delta's manifest, once its signature is checked; InputError for a full bundle."""
    head = read_head(path)
    if head.signature is None:
        raise BundleRejected(f"{path}: {head.problem}", "get the bundle again")
    verify_signature(head.manifest_bytes, head.signature, trusted, allow_unsigned=allow_unsigned)
    manifest = parse_manifest(head.manifest_bytes)
    if manifest.delta is None:
        raise InputError(f"{path} is a full bundle, not a delta: it needs no base", "drop --base")
    return manifest


def check_zstd(manifest: Lock) -> None:
    """BundleRejected when an archive must be compressed again by another zstd than the
    one that reproduced its bytes at create (the output would differ)."""
    assert manifest.delta is not None
    have = codec.library()
    for s in manifest.delta.sources:
        if s.zstd is not None and s.zstd.library != have:
            raise BundleRejected(
                f"rebuilding {s.path} needs zstd {s.zstd.library}, the version that made"
                f" the delta; this mk8s has zstd {have}, whose output may differ",
                "use the same mk8s on both sides (`bundle create --include-self` carries "
                "it), or carry the full bundle",
            )


def verify_delta(
    path: Path,
    base: Path,
    trusted: Sequence[TrustedKey],
    *,
    allow_unsigned: bool = False,
    sink: ArtifactSink | None = None,
    base_sink: ArtifactSink | None = None,
    before_artifacts: Callable[[Lock], None] | None = None,
    progress: StreamProgress | None = None,
) -> VerifiedBundle:
    """Verify ``path`` (a delta) with ``base``; see the module docstring. ``sink`` gets
    the delta's members, ``base_sink`` the base's artifacts, as they stream (neither
    may trust them before this returns)."""
    manifest = delta_head(path, trusted, allow_unsigned)
    assert manifest.delta is not None
    ref = manifest.delta.base
    base_head = open_base(ref, base)
    check_zstd(manifest)
    whole = manifest.whole()
    if before_artifacts:
        before_artifacts(whole)
    base_stream = partial(
        _read_base,
        base,
        base_trust(ref, base, base_head.manifest_bytes),
        ref.file_pin if base_sink is None else None,
        base_sink,
    )
    delta_stream = partial(
        read_bundle,
        path,
        signature_trust(trusted, allow_unsigned=allow_unsigned, delta=True),
        sink=sink,
    )
    try:
        v = _both(delta_stream, base_stream, progress)
    except _BaseFailed as e:
        raise _base_error(e.error, ref.describe(), base) from e.error
    if v.manifest != manifest:
        raise BundleRejected(
            f"{path} changed while mk8s was reading it", "leave the file alone, then retry"
        )
    return VerifiedBundle(
        path=path,
        manifest=whole,
        manifest_bytes=whole.to_bytes(),
        signature_bytes=v.signature_bytes,
        signer=v.signer,
        file_sha256=v.file_sha256,
        file_size=v.file_size,
        delta=DeltaVerified(manifest, v.manifest_bytes, base, base_head.bundle_id),
    )


def _read_base(
    base: Path,
    trust: Trust,
    file_pin: tuple[int, str] | None,
    sink: ArtifactSink | None,
    progress: StreamProgress,
) -> None:
    """Check the base: when create pinned its file (and nothing needs its members), a
    file with those very bytes is the base create checked member by member, so one
    sha256 of the file does; any other file is checked member by member."""
    if file_pin is not None and _file_pin(base, progress) == file_pin:
        return
    read_bundle(base, trust, sink=sink, progress=progress, hash_file=False)


def _file_pin(path: Path, progress: StreamProgress) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with open_bundle(path) as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
            progress(size, size)
    return size, h.hexdigest()


class _BaseFailed(Exception):
    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


Stream = Callable[..., VerifiedBundle]


def _both(
    delta: Stream, base: Callable[..., object], progress: StreamProgress | None
) -> VerifiedBundle:
    """Read the base in a second thread while this one reads the delta; the delta's
    error first, else the base's (as _BaseFailed). A failed delta stops the base."""
    both = _Progress(progress)
    stop = threading.Event()
    failed: list[BaseException] = []

    def read_base() -> None:
        try:
            base(progress=both.side("base", stop))
        except BaseException as e:  # re-raised by the calling thread
            failed.append(e)

    worker = threading.Thread(target=read_base, name="mk8s-delta-base", daemon=True)
    worker.start()
    try:
        v = delta(progress=both.side("delta", None))
    except BaseException:
        stop.set()
        worker.join()
        raise
    worker.join()
    if failed:
        raise _BaseFailed(failed[0])
    return v


def _base_error(e: BaseException, needed: str, base: Path) -> BaseException:
    # one line, whatever the operator's path holds
    if isinstance(e, BundleRejected) and not e.problem.startswith("--base "):
        return BundleRejected(
            safe(f"the base {base} was rejected: {e.problem} (the delta needs {needed})"),
            "get the base bundle again: it was damaged or altered",
        )
    if isinstance(e, Mk8sError) and not isinstance(e, BundleRejected):
        return BundleRejected(safe(f"the base {base} cannot be read: {e}"), "give the right file")
    return e


class _Progress:
    """Adds the two streams' progress into one (done, total) for the caller."""

    def __init__(self, progress: StreamProgress | None) -> None:
        self.progress = progress
        self.lock = threading.Lock()
        self.done: dict[str, int] = {}
        self.total: dict[str, int] = {}

    def side(self, name: str, stop: threading.Event | None) -> StreamProgress:
        def update(done: int, total: int) -> None:
            if stop is not None and stop.is_set():
                raise _Stopped
            if self.progress is None:
                return
            with self.lock:
                self.done[name], self.total[name] = done, total
                self.progress(sum(self.done.values()), sum(self.total.values()))

        return update


__all__ = ["DeltaVerified", "check_zstd", "delta_head", "verify_delta"]
