"""The lockfile and the bundle manifest: one model, canonical JSON bytes, schema-checked.

A manifest is a lock plus ``createdBy``. Both serialise as sorted, indented JSON so a
person (and ``grep``) can read them and the same model always gives the same bytes.
Objects that exist are valid: ``from_bytes`` validates against
``schemas/manifest.schema.json`` and the invariants the schema cannot express.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from mk8s import __version__

# One artifact's model and checks; the names every reader of a lock uses are also
# this module's (see __all__).
from mk8s.bundle.format.artifact import (
    ARTIFACT_DIR,
    EXECUTABLE_KINDS,
    LOCAL_KINDS,
    Artifact,
    ArtifactKind,
    artifact_path,
    check_artifact_name,
    check_url,
    check_workload,
)
from mk8s.errors import InputError, LockError
from mk8s.schemas import first_problem
from mk8s.untrusted import load_json, shown

SCHEMA = "manifest.schema.json"
#: A lock or manifest of 10,000 artifacts with long URLs stays under this.
MAX_BYTES = 16 << 20
LOCK_KIND = "mk8s.lock"
BUNDLE_KIND = "mk8s.bundle"
MANIFEST_NAME = "mk8s-bundle.json"
SIGNATURE_NAME = "mk8s-bundle.json.sig"


@dataclass(frozen=True)
class Release:
    """What was asked for and what it resolved to."""

    requested: str
    tag: str
    arch: tuple[str, ...]
    cni: str = "canal"
    image_groups: tuple[str, ...] = ()
    allow_prerelease: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "requested": self.requested,
            "tag": self.tag,
            "arch": list(self.arch),
            "cni": self.cni,
            "imageGroups": list(self.image_groups),
            "allowPrerelease": self.allow_prerelease,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Release:
        return cls(
            requested=data["requested"],
            tag=data["tag"],
            arch=tuple(data["arch"]),
            cni=data["cni"],
            image_groups=tuple(data["imageGroups"]),
            allow_prerelease=data["allowPrerelease"],
        )

    @property
    def version(self) -> str:
        """The tag without the ``+rke2rN`` build part."""
        return self.tag.split("+", 1)[0]


@dataclass(frozen=True)
class Lock:
    """A pinned release: the contents of ``mk8s.lock``.

    ``artifacts`` are kept sorted by bundle path, which is also the member order.
    """

    release: Release
    resolved_at: str
    artifacts: tuple[Artifact, ...]
    kind: str = LOCK_KIND
    created_by: str | None = None

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.artifacts, key=lambda a: a.path))
        object.__setattr__(self, "artifacts", ordered)
        _check_invariants(self)

    # -- serialisation ---------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schemaVersion": 1,
            "kind": self.kind,
            "rke2": self.release.to_json(),
            "resolvedAt": self.resolved_at,
            "artifacts": [a.to_json() for a in self.artifacts],
        }
        if self.created_by is not None:
            out["createdBy"] = self.created_by
        return out

    def to_bytes(self) -> bytes:
        """Canonical bytes: sorted keys, two-space indent, ASCII, trailing newline."""
        return (json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n").encode("ascii")

    @classmethod
    def from_bytes(cls, data: bytes, *, source: str = "lockfile", validate: bool = True) -> Lock:
        """Parse and validate; raises LockError (exit 2) naming the field on any problem.

        ``validate=False`` skips the JSON Schema (and its ~50 ms import): for
        ``bundle inspect``, which verifies nothing; a malformed file still raises
        LockError, without the field's path."""
        fix = "regenerate it with `mk8s bundle lock`"
        obj = load_json(
            data,
            what=source,
            error=lambda problem: LockError(problem, fix),
            max_bytes=MAX_BYTES,
        )
        if not isinstance(obj, dict):
            raise LockError(f"{source} is JSON but not an object", fix)
        wrong = first_problem(SCHEMA, obj) if validate else None
        if wrong:
            raise LockError(f"{source}: {wrong}", fix)
        try:
            return cls(
                release=Release.from_json(obj["rke2"]),
                resolved_at=obj["resolvedAt"],
                artifacts=tuple(Artifact.from_json(a) for a in obj["artifacts"]),
                kind=obj["kind"],
                created_by=obj.get("createdBy"),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            # Only reachable without validation, or for invariants the schema cannot say.
            raise LockError(f"{source} is malformed ({type(e).__name__}: {shown(e)})", fix) from e

    # -- derived -----------------------------------------------------------------------
    @property
    def mtime(self) -> int:
        """Seconds since the epoch of ``resolved_at``: the mtime of every member."""
        return calendar.timegm(time.strptime(self.resolved_at, "%Y-%m-%dT%H:%M:%SZ"))

    @property
    def total_size(self) -> int:
        return sum(a.size for a in self.artifacts)

    def as_lock(self) -> Lock:
        """This pin as a lockfile (drops ``createdBy``)."""
        return replace(self, kind=LOCK_KIND, created_by=None)

    def as_manifest(self, version: str = __version__) -> Lock:
        """This pin as a bundle manifest written by mk8s ``version``."""
        return replace(self, kind=BUNDLE_KIND, created_by=f"mk8s {version}")

    def bundle_name(self) -> str:
        """The conventional file name, e.g. ``mk8s-rke2-v1.28.15-rke2r1-linux-amd64.tar.zst``."""
        tag = self.release.tag.replace("+", "-")
        return f"mk8s-rke2-{tag}-linux-{'-'.join(self.release.arch)}.tar.zst"

    def find(self, *, kind: ArtifactKind | str, arch: str | None = None) -> list[Artifact]:
        """The artifacts of ``kind`` (and ``arch``); ValueError for a kind that is none."""
        k = ArtifactKind(kind)
        return [a for a in self.artifacts if a.kind == k and (arch is None or a.arch == arch)]


def bundle_id(manifest_bytes: bytes) -> str:
    """A short stable id of a bundle: the first 16 hex digits of its manifest's sha256."""
    return hashlib.sha256(manifest_bytes).hexdigest()[:16]


def now_utc() -> str:
    """The current time in the format of ``resolvedAt``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _check_release(r: Release) -> None:
    """Types and shapes the schema also states: here so that an unvalidated manifest
    (``bundle inspect``) is still a well-formed object."""
    for name in ("requested", "tag", "cni"):
        value = getattr(r, name)
        if not isinstance(value, str) or not value or len(value) > 64:
            raise ValueError(f"rke2.{name} must be a non-empty string of at most 64 characters")
    if not r.arch or not all(a in ("amd64", "arm64") for a in r.arch):
        raise ValueError("rke2.arch must list amd64 and/or arm64")
    if not all(isinstance(g, str) for g in r.image_groups):
        raise ValueError("rke2.imageGroups must be strings")
    if not isinstance(r.allow_prerelease, bool):
        raise ValueError("rke2.allowPrerelease must be true or false")


def _check_invariants(lock: Lock) -> None:
    seen_paths: set[str] = set()
    if lock.kind not in (LOCK_KIND, BUNDLE_KIND):
        raise ValueError(f"kind must be {LOCK_KIND} or {BUNDLE_KIND}")
    if lock.created_by is not None and not isinstance(lock.created_by, str):
        raise ValueError("createdBy must be a string")
    _check_release(lock.release)
    if not lock.artifacts:
        raise ValueError("the lock pins no artifact")
    try:
        time.strptime(lock.resolved_at, "%Y-%m-%dT%H:%M:%SZ")
    except (ValueError, TypeError) as e:
        raise ValueError(f"resolvedAt {lock.resolved_at!r} is not a UTC time") from e
    for a in lock.artifacts:
        why = check_artifact_name(a.name)
        if why:
            raise ValueError(f"artifact name {a.name!r} {why}")
        expected = artifact_path(a.name, a.kind)
        if a.path != expected:
            raise ValueError(f"artifact {a.name}: path {a.path!r} must be {expected!r}")
        if a.path in seen_paths:
            raise ValueError(f"artifact path {a.path!r} appears twice")
        seen_paths.add(a.path)
        if (
            not isinstance(a.size, int)
            or isinstance(a.size, bool)
            or a.size < 0
            or not isinstance(a.sha256, str)
            or len(a.sha256) != 64
            or not set(a.sha256) <= set("0123456789abcdef")
        ):
            raise ValueError(f"artifact {a.name}: bad size or sha256")
        check_url(a)
        check_workload(a)
    if lock.kind == BUNDLE_KIND and lock.created_by is None:
        raise ValueError("a bundle manifest needs createdBy")


def build_lock(release: Release, artifacts: Iterable[Artifact], resolved_at: str) -> Lock:
    """Make a lock; raises InputError if two artifacts would land on one path."""
    try:
        return Lock(release=release, resolved_at=resolved_at, artifacts=tuple(artifacts))
    except ValueError as e:
        raise InputError(str(e), "rename the conflicting --file") from e


__all__ = [
    "ARTIFACT_DIR",
    "BUNDLE_KIND",
    "EXECUTABLE_KINDS",
    "LOCAL_KINDS",
    "LOCK_KIND",
    "MANIFEST_NAME",
    "SIGNATURE_NAME",
    "Artifact",
    "ArtifactKind",
    "Lock",
    "Release",
    "artifact_path",
    "build_lock",
    "bundle_id",
    "check_artifact_name",
    "now_utc",
]
