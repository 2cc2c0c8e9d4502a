"""The ``delta`` section of a bundle manifest (docs/format.md, "Delta bundles").

A delta's manifest describes the whole release as a full bundle's does (every artifact
with its pins) and adds this section: the base it needs, the members the file carries
after the signature, and where each artifact it does not carry comes from:

* ``base``: the same bytes are an artifact of the base (same size and sha256);
* ``rebuild``: an image archive put together from a recipe (a member listing byte
  ranges of the delta's own members and of the base's decompressed archives), whose
  result must hash to ``content``; for a zstd archive that result is then compressed
  with ``zstd`` parameters (which reproduced upstream's bytes when the delta was made)
  and followed by the ``tail`` member's bytes, and must match the artifact's own pins.

Members live under ``artifacts/`` (an artifact carried whole), ``blobs/sha256/``
(content-addressed, named by their sha256) and ``delta/`` (recipes, skeletons, tails).
This module holds only the data and its invariants; it imports nothing from the
manifest module, which embeds it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mk8s.errors import BundleRejected
from mk8s.ui import safe

HEX64 = re.compile(r"[0-9a-f]{64}")
BUNDLE_ID = re.compile(r"[0-9a-f]{16}")
BLOB_DIR = "blobs/sha256/"
DELTA_DIR = "delta/"
ARTIFACT_DIR = "artifacts/"
_MEMBER = re.compile(
    r"(artifacts/[A-Za-z0-9._+-]+(/[A-Za-z0-9._+-]+)?"
    r"|blobs/sha256/[0-9a-f]{64}"
    r"|delta/[A-Za-z0-9._+-]+(/[A-Za-z0-9._+-]+)?)"
)
FROM_BASE = "base"
FROM_REBUILD = "rebuild"
RAW_BLOCKS = "zstd-raw-blocks"  # the only encoding of a placed archive


@dataclass(frozen=True)
class Pin:
    """A file by path, size and sha256."""

    path: str
    size: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Pin:
        return cls(path=data["path"], size=data["size"], sha256=data["sha256"])

    def check(self, what: str) -> None:
        if not isinstance(self.path, str) or not _MEMBER.fullmatch(self.path):
            raise ValueError(f"{what}: path {self.path!r} is not a member path")
        if len(self.path) > 100:
            raise ValueError(f"{what}: path {self.path!r} is longer than 100 bytes")
        _check_size_sha(self.size, self.sha256, f"{what} {self.path}")
        if self.path.startswith(BLOB_DIR) and self.path[len(BLOB_DIR) :] != self.sha256:
            raise ValueError(f"{what}: blob {self.path} does not hash to its name")


@dataclass(frozen=True)
class Zstd:
    """zstd parameters that turn a rebuilt archive back into upstream's exact bytes."""

    level: int
    window_log: int
    long_distance: bool
    multithreaded: bool
    checksum: bool
    content_size: bool
    library: str  # the zstd library version that reproduced the bytes, e.g. "1.5.7"

    def to_json(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "windowLog": self.window_log,
            "longDistance": self.long_distance,
            "multithreaded": self.multithreaded,
            "checksum": self.checksum,
            "contentSize": self.content_size,
            "library": self.library,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Zstd:
        return cls(
            level=data["level"],
            window_log=data["windowLog"],
            long_distance=data["longDistance"],
            multithreaded=data["multithreaded"],
            checksum=data["checksum"],
            content_size=data["contentSize"],
            library=data["library"],
        )


@dataclass(frozen=True)
class Source:
    """Where an artifact the delta does not carry comes from."""

    path: str  # the artifact's path in the release
    base: str | None = None  # from the base: that base artifact's path
    recipe: str | None = None  # rebuilt: the recipe member
    content: tuple[int, str] | None = None  # rebuilt: (size, sha256) of the archive's tar
    zstd: Zstd | None = None  # rebuilt: compress the tar with these (None: a plain tar)
    tail: str | None = None  # rebuilt: the member holding the bytes after the zstd frame
    # rebuilt when no zstd reproduces upstream's bytes: the tar in a frame of raw zstd
    # blocks, which is placed instead of upstream's file; its (size, sha256)
    placed: tuple[int, str] | None = None

    @property
    def kind(self) -> str:
        return FROM_BASE if self.base is not None else FROM_REBUILD

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "from": self.kind}
        if self.base is not None:
            out["base"] = self.base
            return out
        assert self.content is not None
        out["recipe"] = self.recipe
        out["content"] = {"size": self.content[0], "sha256": self.content[1]}
        if self.zstd is not None:
            out["zstd"] = self.zstd.to_json()
        if self.tail is not None:
            out["tail"] = self.tail
        if self.placed is not None:
            out["placed"] = {
                "encoding": RAW_BLOCKS,
                "size": self.placed[0],
                "sha256": self.placed[1],
            }
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Source:
        if data["from"] == FROM_BASE:
            return cls(path=data["path"], base=data["base"])
        content = data["content"]
        placed = data.get("placed")
        return cls(
            path=data["path"],
            recipe=data["recipe"],
            content=(content["size"], content["sha256"]),
            zstd=Zstd.from_json(data["zstd"]) if "zstd" in data else None,
            tail=data.get("tail"),
            placed=(placed["size"], placed["sha256"]) if placed is not None else None,
        )

    def members(self) -> tuple[str, ...]:
        """The delta members this source reads itself (the recipe names the rest)."""
        return tuple(p for p in (self.recipe, self.tail) if p is not None)


@dataclass(frozen=True)
class BaseRef:
    """The full bundle a delta needs beside it, and the artifacts it reads from it."""

    bundle_id: str
    manifest_sha256: str
    file: str
    tag: str
    artifacts: tuple[Pin, ...]
    # The base bundle file as create read it (size, sha256), when it was given one: a
    # base file with these bytes needs no member-by-member check to be verified.
    file_pin: tuple[int, str] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "bundleId": self.bundle_id,
            "manifestSha256": self.manifest_sha256,
            "file": self.file,
            "tag": self.tag,
            "artifacts": [a.to_json() for a in self.artifacts],
        }
        if self.file_pin is not None:
            out["fileSize"], out["fileSha256"] = self.file_pin
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BaseRef:
        pin = (data["fileSize"], data["fileSha256"]) if "fileSha256" in data else None
        return cls(
            bundle_id=data["bundleId"],
            manifest_sha256=data["manifestSha256"],
            file=data["file"],
            tag=data["tag"],
            artifacts=tuple(Pin.from_json(a) for a in data["artifacts"]),
            file_pin=pin,
        )

    def describe(self) -> str:
        """How messages name the base: id, file name and release."""
        return f"bundle id {self.bundle_id} ({self.file}, RKE2 {self.tag})"

    def pin(self, path: str) -> Pin | None:
        return next((a for a in self.artifacts if a.path == path), None)


@dataclass(frozen=True)
class Delta:
    base: BaseRef
    members: tuple[Pin, ...]
    sources: tuple[Source, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "base": self.base.to_json(),
            "members": [m.to_json() for m in self.members],
            "sources": [s.to_json() for s in self.sources],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Delta:
        return cls(
            base=BaseRef.from_json(data["base"]),
            members=tuple(Pin.from_json(m) for m in data["members"]),
            sources=tuple(Source.from_json(s) for s in data["sources"]),
        )

    @property
    def carried_bytes(self) -> int:
        return sum(m.size for m in self.members)

    def member(self, path: str) -> Pin | None:
        return next((m for m in self.members if m.path == path), None)

    def source(self, path: str) -> Source | None:
        return next((s for s in self.sources if s.path == path), None)

    def placed(self) -> dict[str, tuple[int, str]]:
        """Artifacts placed as raw-block frames instead of upstream's bytes: their pins."""
        return {s.path: s.placed for s in self.sources if s.placed is not None}

    def check(self, artifacts: Iterable[tuple[str, int, str]]) -> None:
        """ValueError unless the section is consistent with the artifacts it describes
        ((path, size, sha256) of each): every artifact carried or sourced exactly once."""
        _check_base(self.base)
        paths = [m.path for m in self.members]
        if paths != sorted(paths) or len(set(paths)) != len(paths):
            raise ValueError("delta.members must be sorted by path, each once")
        for m in self.members:
            m.check("delta member")
        arts = {p: (size, sha) for p, size, sha in artifacts}
        sourced = [s.path for s in self.sources]
        if sourced != sorted(sourced) or len(set(sourced)) != len(sourced):
            raise ValueError("delta.sources must be sorted by path, each once")
        for m in self.members:
            if m.path.startswith(ARTIFACT_DIR) and arts.get(m.path) != (m.size, m.sha256):
                raise ValueError(f"delta member {m.path} is not an artifact of the manifest")
        for s in self.sources:
            self._check_source(s, arts)
        carried = {p for p in paths if p.startswith(ARTIFACT_DIR)}
        missing = sorted(set(arts) - carried - set(sourced))
        if missing:
            raise ValueError(f"artifact {missing[0]} is neither carried nor sourced")
        both = sorted(carried & set(sourced))
        if both:
            raise ValueError(f"artifact {both[0]} is both carried and sourced")

    def _check_source(self, s: Source, arts: Mapping[str, tuple[int, str]]) -> None:
        if s.path not in arts:
            raise ValueError(f"delta source {s.path!r} is not an artifact of the manifest")
        if s.base is not None:
            pin = self.base.pin(s.base)
            if pin is None or (pin.size, pin.sha256) != arts[s.path]:
                raise ValueError(f"delta source {s.path}: base {s.base!r} is not pinned alike")
            return
        if s.content is None or s.recipe is None:
            raise ValueError(f"delta source {s.path}: a rebuild needs a recipe and content")
        _check_size_sha(s.content[0], s.content[1], f"delta source {s.path} content")
        for p in s.members():
            if not p.startswith(DELTA_DIR) or self.member(p) is None:
                raise ValueError(f"delta source {s.path}: {p!r} is not a delta/ member")
        if s.placed is not None:
            _check_size_sha(s.placed[0], s.placed[1], f"delta source {s.path} placed")
            if s.zstd is not None or s.tail is not None:
                raise ValueError(f"delta source {s.path}: a placed archive has no zstd or tail")
        elif s.zstd is None and (s.tail is not None or s.content != arts[s.path]):
            raise ValueError(f"delta source {s.path}: a plain tar is its own content")


def _check_base(b: BaseRef) -> None:
    if not isinstance(b.bundle_id, str) or not BUNDLE_ID.fullmatch(b.bundle_id):
        raise ValueError("delta.base.bundleId must be 16 hex digits")
    if not isinstance(b.manifest_sha256, str) or not HEX64.fullmatch(b.manifest_sha256):
        raise ValueError("delta.base.manifestSha256 must be 64 hex digits")
    if b.manifest_sha256[:16] != b.bundle_id:
        raise ValueError("delta.base.bundleId must be the start of manifestSha256")
    for name in ("file", "tag"):
        value = getattr(b, name)
        if not isinstance(value, str) or not value or len(value) > 200:
            raise ValueError(f"delta.base.{name} must be a string of 1 to 200 characters")
    paths = [a.path for a in b.artifacts]
    if paths != sorted(paths) or len(set(paths)) != len(paths):
        raise ValueError("delta.base.artifacts must be sorted by path, each once")
    if b.file_pin is not None:
        _check_size_sha(b.file_pin[0], b.file_pin[1], "delta.base file")
    for a in b.artifacts:
        a.check("delta base artifact")
        if not a.path.startswith(ARTIFACT_DIR):
            raise ValueError(f"delta base artifact {a.path!r} is not under artifacts/")


def _check_size_sha(size: object, sha256: object, what: str) -> None:
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValueError(f"{what}: bad size")
    if not isinstance(sha256, str) or not HEX64.fullmatch(sha256):
        raise ValueError(f"{what}: bad sha256")


def needs_base(ref: BaseRef, given: Path | None, why: str | None = None) -> BundleRejected:
    """The exit-3 error for a missing or wrong base, naming the base needed."""
    fix = "give that full bundle with --base (the file it was made against)"
    if given is None:
        return BundleRejected(f"this bundle is a delta: it needs its base, {ref.describe()}", fix)
    # one line, whatever the operator's path (or the reason quoting it) holds
    return BundleRejected(
        safe(f"--base {given} is not the base this delta needs ({why}); it needs {ref.describe()}"),
        fix,
    )


__all__ = ["BaseRef", "Delta", "Pin", "Source", "Zstd", "needs_base"]
