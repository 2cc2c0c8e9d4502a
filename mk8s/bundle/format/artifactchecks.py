"""The invariants of one artifact that its JSON Schema also states, or cannot state:
its file name, its source URL, and what a workload artifact says about itself (a
chart's name and version, the platforms an image archive carries).

Kept apart from :mod:`mk8s.bundle.format.manifest` (which calls them for every artifact of a
lock) so each stays small; they raise ValueError, which the manifest turns into a
LockError or a rejected bundle.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from mk8s.bundle.format.manifest import Artifact

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
    from mk8s.bundle.format.manifest import LOCAL_KINDS, ArtifactKind

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
    from mk8s.bundle.format.manifest import ArtifactKind

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


__all__ = ["check_artifact_name", "check_url", "check_workload"]
