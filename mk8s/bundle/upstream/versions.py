"""RKE2 version tags and the specs a user may ask for (docs/bundles.md, "Creating bundles").

A tag is ``vMAJ.MIN.PATCH[-rcK]+rke2rN``. Semver would ignore the ``+rke2rN`` build
part, but RKE2 uses it for respins (``r2`` replaces ``r1``), so tags are compared as
``(major, minor, patch, final-after-rc, rc, N)`` numbers, never as strings.

Pure functions, no I/O: parsing and matching are unit-testable without a server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mk8s.errors import InputError

_TAG = re.compile(
    r"^v?(?P<major>0|[1-9]\d*)\.(?P<minor>0|[1-9]\d*)\.(?P<patch>0|[1-9]\d*)"
    r"(?:-rc(?P<rc>0|[1-9]\d*))?\+rke2r(?P<build>[1-9]\d*)$"
)
_SPEC = re.compile(
    r"^v?(?P<major>0|[1-9]\d*)\.(?P<minor>0|[1-9]\d*)"
    r"(?:\.(?:(?P<x>x)|(?P<patch>0|[1-9]\d*)(?:-rc(?P<rc>0|[1-9]\d*))?(?:\+rke2r(?P<build>[1-9]\d*))?))?$"
)
SPEC_HELP = "use an exact tag (v1.28.15+rke2r1), a patch (v1.28.15), a minor (v1.28.x) or latest"


@dataclass(frozen=True)
class Version:
    """A parsed RKE2 tag. Instances order by release order, newest greatest."""

    major: int
    minor: int
    patch: int
    rc: int | None
    build: int

    @property
    def tag(self) -> str:
        """The canonical tag, with the leading ``v``: ``v1.28.15+rke2r1``."""
        rc = f"-rc{self.rc}" if self.rc is not None else ""
        return f"v{self.major}.{self.minor}.{self.patch}{rc}+rke2r{self.build}"

    @property
    def is_rc(self) -> bool:
        return self.rc is not None

    @property
    def key(self) -> tuple[int, int, int, int, int, int]:
        """Sort key: an ``-rcK`` sorts below the final patch, ``rke2rN`` by N."""
        final = 1 if self.rc is None else 0
        return (self.major, self.minor, self.patch, final, self.rc or 0, self.build)

    def __lt__(self, other: Version) -> bool:
        return self.key < other.key

    def __le__(self, other: Version) -> bool:
        return self.key <= other.key

    def __gt__(self, other: Version) -> bool:
        return self.key > other.key

    def __ge__(self, other: Version) -> bool:
        return self.key >= other.key

    def __str__(self) -> str:
        return self.tag


def parse_tag(tag: str) -> Version | None:
    """Parse an RKE2 tag; return None for anything that is not one (never raises)."""
    m = _TAG.match(tag.strip())
    if m is None:
        return None
    return Version(
        major=int(m["major"]),
        minor=int(m["minor"]),
        patch=int(m["patch"]),
        rc=int(m["rc"]) if m["rc"] is not None else None,
        build=int(m["build"]),
    )


@dataclass(frozen=True)
class VersionSpec:
    """What the user asked for. ``None`` fields are free; ``latest`` leaves all free.

    ``rc`` is only meaningful when ``patch`` is set: ``v1.28.15-rc2`` pins the
    candidate, while ``v1.28.15`` means the final release (or, with prereleases
    allowed, the newest candidate when no final exists yet).
    """

    text: str
    major: int | None = None
    minor: int | None = None
    patch: int | None = None
    rc: int | None = None
    build: int | None = None

    def matches(self, v: Version) -> bool:
        """True if ``v`` satisfies this spec (prerelease policy is applied elsewhere)."""
        if self.major is None:
            return True
        if (v.major, v.minor) != (self.major, self.minor):
            return False
        if self.patch is None:
            return True
        if v.patch != self.patch:
            return False
        if self.rc is not None and v.rc != self.rc:
            return False
        if self.build is not None:
            return v.rc == self.rc and v.build == self.build
        return True


def parse_spec(text: str) -> VersionSpec:
    """Parse a version spec: an exact tag, ``v1.28.15``, ``v1.28.x``, ``v1.28`` or ``latest``.

    The leading ``v`` is optional. Raises InputError (exit 2) for anything else.
    """
    s = text.strip()
    if s.lower() == "latest":
        return VersionSpec(text=s)
    m = _SPEC.match(s)
    if m is None:
        raise InputError(f"{text!r} is not an RKE2 version spec", SPEC_HELP)

    def num(name: str) -> int | None:
        return int(m[name]) if m[name] is not None else None

    return VersionSpec(
        text=s,
        major=num("major"),
        minor=num("minor"),
        patch=num("patch"),
        rc=num("rc"),
        build=num("build"),
    )


__all__ = ["SPEC_HELP", "Version", "VersionSpec", "parse_spec", "parse_tag"]
