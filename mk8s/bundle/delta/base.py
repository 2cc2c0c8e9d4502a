"""The base of a delta on the disconnected side: is it the one the delta needs?

A delta names its base (bundle id, file name, release) and pins every base artifact it
reads (path, size, sha256). A given base is accepted when it is a full bundle (a delta
of a delta is refused) whose manifest lists each of those artifacts with the same pins;
its members are then checked against its own manifest as they stream, so a damaged or
altered base is rejected too. A base whose manifest differs elsewhere (made from the
same lock by another mk8s version, or with --include-self) is accepted: the bytes the
delta reads are the ones it pinned. Every refusal is exit 3, names the base needed,
and happens before anything from either file is used.
"""

from __future__ import annotations

from pathlib import Path

from mk8s.bundle.delta.model import BaseRef, needs_base
from mk8s.bundle.format.keys import TrustedKey
from mk8s.bundle.format.manifest import Lock
from mk8s.bundle.format.reader import BundleHead, Trust, parse_manifest, read_head
from mk8s.errors import BundleRejected, Mk8sError


def open_base(ref: BaseRef, given: Path) -> BundleHead:
    """Read the given base's head and check it is the base ``ref`` names (its manifest
    is believed only where the delta's own pins confirm it); BundleRejected otherwise."""
    if not (given.exists() or _has_parts(given)):
        why = "a symlink that leads nowhere" if given.is_symlink() else "no such file"
        raise needs_base(ref, given, why)
    try:
        head = read_head(given)
    except Mk8sError as e:
        raise needs_base(ref, given, f"not a readable bundle: {e.problem}") from e
    try:
        manifest = parse_manifest(head.manifest_bytes)
    except BundleRejected as e:
        raise needs_base(ref, given, f"its manifest is unusable: {e.problem}") from e
    check_base_manifest(ref, manifest, given)
    return head


def check_base_manifest(ref: BaseRef, manifest: Lock, given: Path) -> None:
    """BundleRejected unless ``manifest`` is a full bundle's holding every pinned artifact."""
    if manifest.delta is not None:
        raise needs_base(
            ref,
            given,
            f"it is itself a delta (of {manifest.delta.base.describe()}); a delta of a "
            "delta is not supported",
        )
    arts = {a.path: a for a in manifest.artifacts}
    for pin in ref.artifacts:
        got = arts.get(pin.path)
        if got is None:
            raise needs_base(ref, given, f"it has no {pin.path}")
        if (got.size, got.sha256) != (pin.size, pin.sha256):
            raise needs_base(
                ref,
                given,
                f"its {pin.path} is sha256 {got.sha256[:16]}..., not {pin.sha256[:16]}...",
            )


def base_trust(ref: BaseRef, given: Path, head_bytes: bytes) -> Trust:
    """How the base's own stream is believed: the same manifest bytes as the head that
    :func:`open_base` checked (no signature needed: the delta's signed pins vouch)."""

    def trust(manifest_bytes: bytes, sig_bytes: bytes) -> tuple[Lock, TrustedKey | None]:
        if manifest_bytes != head_bytes:
            raise needs_base(ref, given, "it changed while mk8s was reading it")
        manifest = parse_manifest(manifest_bytes)
        check_base_manifest(ref, manifest, given)
        return manifest, None

    return trust


def _has_parts(path: Path) -> bool:
    """A split bundle's index, part, or unsplit name whose parts exist."""
    from mk8s.bundle.format.parts import locate

    try:
        return locate(path) is not None
    except (OSError, Mk8sError):
        return True  # something is there: let read_head name the problem


__all__ = ["base_trust", "check_base_manifest", "needs_base", "open_base"]
