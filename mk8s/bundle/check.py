"""Verify or extract a bundle, full or delta: the one door the CLI and deploy use.

A full bundle is read by the format package (``mk8s.bundle.format``); a delta, with
the full bundle it was made against (``base``), by ``mk8s.bundle.delta``, as if the
whole release had been carried (docs/format.md, "Delta bundles"). Without ``base`` a
delta is refused naming the base it needs; ``base`` given for a full bundle is a usage
error, said by the callers that take ``--base``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from mk8s.bundle.delta.extract import extract_delta
from mk8s.bundle.delta.verify import verify_delta
from mk8s.bundle.format import extract as full_extract
from mk8s.bundle.format import reader
from mk8s.bundle.format.keys import TrustedKey
from mk8s.bundle.format.manifest import Lock
from mk8s.callbacks import StreamProgress


def verify(
    path: Path,
    trusted: Sequence[TrustedKey],
    *,
    allow_unsigned: bool = False,
    sink: reader.ArtifactSink | None = None,
    before_artifacts: Callable[[Lock], None] | None = None,
    progress: StreamProgress | None = None,
    base: Path | None = None,
) -> reader.VerifiedBundle:
    """:func:`mk8s.bundle.format.reader.verify_bundle`, or for a delta with its
    ``base``, :func:`mk8s.bundle.delta.verify.verify_delta`."""
    if base is not None:
        return verify_delta(
            path,
            base,
            trusted,
            allow_unsigned=allow_unsigned,
            sink=sink,
            before_artifacts=before_artifacts,
            progress=progress,
        )
    return reader.verify_bundle(
        path,
        trusted,
        allow_unsigned=allow_unsigned,
        sink=sink,
        before_artifacts=before_artifacts,
        progress=progress,
    )


def extract(
    path: Path,
    trusted: Sequence[TrustedKey],
    dest: Path,
    *,
    allow_unsigned: bool = False,
    progress: StreamProgress | None = None,
    base: Path | None = None,
) -> reader.VerifiedBundle:
    """:func:`mk8s.bundle.format.extract.extract_bundle`, or for a delta with its
    ``base``, :func:`mk8s.bundle.delta.extract.extract_delta`."""
    if base is not None:
        return extract_delta(
            path, base, trusted, dest, allow_unsigned=allow_unsigned, progress=progress
        )
    return full_extract.extract_bundle(
        path, trusted, dest, allow_unsigned=allow_unsigned, progress=progress
    )


__all__ = ["extract", "verify"]
