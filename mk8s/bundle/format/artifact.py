"""One artifact of a lock or bundle: its kind, where it sits in the bundle, and the
invariants its JSON Schema also states, or cannot state: its file name, its source
URL, and what a workload artifact says about itself (a chart's name and version, the
platforms an image archive carries).

:mod:`mk8s.bundle.format.manifest` holds the lock that lists the artifacts and calls
these checks for each; they raise ValueError, which the manifest turns into a
LockError or a rejected bundle.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

ARTIFACT_DIR = "artifacts"


class ArtifactKind(StrEnum):
    """What an artifact is; the closed set a lock and a manifest may name."""

    CHECKSUMS = "checksums"
    RKE2 = "rke2"
    IMAGES = "images"
    INSTALL_SCRIPT = "install-script"
    FILE = "file"
    MK8S = "mk8s"
    SBOM = "sbom"
    IMAGE = "image"  # one of the operator's images, an OCI image-layout archive
    CHART = "chart"  # a Helm chart archive
    MANIFEST = "manifest"  # Kubernetes manifests (YAML)


# Only the operator's own files come from the local disk; everything else from upstream.
LOCAL_KINDS = frozenset(
    {ArtifactKind.FILE, ArtifactKind.MK8S, ArtifactKind.CHART, ArtifactKind.MANIFEST}
)
# Where each kind of artifact sits below artifacts/ (the rest at the top). A name is at
# most 80 bytes, so every path fits the 100 bytes of a ustar name field (tested).
_SUBDIRS = {
    ArtifactKind.FILE: "files",
    ArtifactKind.IMAGE: "oci",
    ArtifactKind.CHART: "charts",
    ArtifactKind.MANIFEST: "manifests",
}
# Kinds whose files are executables (mode 0755 when extracted or staged).
EXECUTABLE_KINDS = frozenset({ArtifactKind.INSTALL_SCRIPT, ArtifactKind.MK8S})


@dataclass(frozen=True)
class Artifact:
    """One file pinned by a lock: where it came from, where it sits in the bundle.

    ``kind`` is an :class:`ArtifactKind`; a string naming no kind raises ValueError."""

    name: str
    kind: ArtifactKind
    path: str
    size: int
    sha256: str
    url: str | None = None
    arch: str | None = None
    # A chart's (name, version) from its Chart.yaml: the name is its Helm release.
    chart: tuple[str, str] | None = None
    # An image whose index lists more platforms than the archive carries: the carried.
    platforms: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.kind, ArtifactKind):
            try:
                object.__setattr__(self, "kind", ArtifactKind(self.kind))
            except ValueError as e:
                raise ValueError(f"artifact {self.name}: unknown kind {self.kind!r}") from e

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "kind": str(self.kind),
            "path": self.path,
            "size": self.size,
            "sha256": self.sha256,
        }
        if self.url is not None:
            out["url"] = self.url
        if self.arch is not None:
            out["arch"] = self.arch
        if self.chart is not None:
            out["chart"] = {"name": self.chart[0], "version": self.chart[1]}
        if self.platforms:
            out["platforms"] = list(self.platforms)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Artifact:
        return cls(
            name=data["name"],
            kind=data["kind"],
            path=data["path"],
            size=data["size"],
            sha256=data["sha256"],
            url=data.get("url"),
            arch=data.get("arch"),
            chart=(data["chart"]["name"], data["chart"]["version"]) if "chart" in data else None,
            platforms=tuple(data.get("platforms") or ()),
        )


def artifact_path(name: str, kind: ArtifactKind | str) -> str:
    """Where an artifact of this kind lives inside the bundle."""
    sub = _SUBDIRS.get(ArtifactKind(kind))
    return f"{ARTIFACT_DIR}/{sub}/{name}" if sub else f"{ARTIFACT_DIR}/{name}"


_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._+-")


def check_artifact_name(name: str) -> str | None:
    """Why ``name`` cannot be an artifact's file name, or None if it can."""
    if not name or len(name) > 80:
        return "must be 1 to 80 characters"
    if not set(name) <= _NAME_CHARS:
        return "may hold only letters, digits and . _ + -"
    if name.startswith("."):
        return "must not start with a dot"
    return None


# oci://REGISTRY/REPO[:TAG]@sha256:<64 hex>: an image is only ever pinned by digest.
_OCI_PINNED = re.compile(r"oci://[^/@]+/[^@]+@sha256:[0-9a-f]{64}")
_URL_BAD_CHARS = re.compile(r"[\x00-\x20\x7f]")


def check_url(a: Artifact) -> None:
    """ValueError unless the artifact's URL suits its kind (oci:// for images, pinned;
    file:// for the operator's own files; http(s) without credentials otherwise)."""
    if a.url is None:
        return
    if _URL_BAD_CHARS.search(a.url):
        raise ValueError(f"artifact {a.name}: url has spaces or control characters")
    try:
        parts = urlsplit(a.url)
        parts.port  # noqa: B018  (raises ValueError for a bad port)
    except ValueError as e:
        raise ValueError(f"artifact {a.name}: url is not a valid URL ({e})") from e
    if (parts.scheme == "oci") != (a.kind == ArtifactKind.IMAGE):
        raise ValueError(f"artifact {a.name}: only an image comes from oci://, and always")
    if parts.scheme == "oci":
        if not _OCI_PINNED.fullmatch(a.url):
            raise ValueError(
                f"artifact {a.name}: oci:// url must be pinned as REGISTRY/REPO@sha256:DIGEST"
            )
        return
    if parts.scheme == "file":
        if a.kind not in LOCAL_KINDS:
            raise ValueError(
                f"artifact {a.name}: a {a.kind} artifact must come from upstream, not file://"
            )
        return
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"artifact {a.name}: url must be http(s) or file://")
    if "@" in parts.netloc:
        raise ValueError(
            f"artifact {a.name}: url holds credentials; keep them in ~/.netrc or in "
            "MK8S_RELEASE_URL at run time, never in a lock"
        )


# What Chart.yaml may say for mk8s to carry the chart (the schema says the same).
CHART_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
CHART_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
PLATFORM = re.compile(r"[a-z0-9]+/[a-z0-9_]+(/[a-z0-9.]+)?")


def check_workload(a: Artifact) -> None:
    """ValueError unless a chart's ``chart`` (name, version) and an image's
    ``platforms`` are well formed, and only those kinds carry them."""
    if a.chart is not None:
        if a.kind != ArtifactKind.CHART:
            raise ValueError(f"artifact {a.name}: only a chart has chart name and version")
        name, version = a.chart
        if not isinstance(name, str) or not CHART_NAME.fullmatch(name):
            raise ValueError(f"artifact {a.name}: chart name {str(name)[:100]!r} is invalid")
        if not isinstance(version, str) or not CHART_VERSION.fullmatch(version):
            raise ValueError(f"artifact {a.name}: chart version {str(version)[:64]!r} is invalid")
    if a.platforms:
        if a.kind != ArtifactKind.IMAGE:
            raise ValueError(f"artifact {a.name}: only an image lists the platforms it carries")
        if len(set(a.platforms)) != len(a.platforms) or not all(
            isinstance(p, str) and PLATFORM.fullmatch(p) for p in a.platforms
        ):
            raise ValueError(f"artifact {a.name}: platforms must be distinct os/arch[/variant]")


__all__ = [
    "ARTIFACT_DIR",
    "EXECUTABLE_KINDS",
    "LOCAL_KINDS",
    "Artifact",
    "ArtifactKind",
    "artifact_path",
    "check_artifact_name",
    "check_url",
    "check_workload",
]
