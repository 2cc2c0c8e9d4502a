"""RKE2 version gates: every "which RKE2 releases do X" fact mk8s relies on, in one table.

A row names a feature and either the first patch of each minor that has it (``SINCE``:
a minor above the last one listed has it from its first release, a minor below the
first one listed never does) or releases where it is known to be broken
(``BROKEN``). Each row cites where the fact stands upstream. Release candidates count
as their patch (``v1.31.5-rc1`` as ``v1.31.5``); a tag that does not parse has every
feature (mk8s never guesses a version is old).

Pure: no I/O. Deploy's preflight (:func:`embedded_mirror_problem`) and restarts
(:func:`imports_while_running`), and the image archives ``bundle create`` may write
(:func:`imports_partial_index`) all read this table, so it sits beside both sides.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from mk8s.bundle.upstream.versions import Version, parse_tag


class Feature(StrEnum):
    """What a gate is about."""

    EMBEDDED_MIRROR = "the embedded registry mirror (Spegel)"
    EMBEDDED_MIRROR_AGENTS = "agents pulling from the embedded registry mirror"
    IMPORT_WHILE_RUNNING = "importing images placed in agent/images while RKE2 runs"
    IMPORT_PARTIAL_INDEX = "importing an image index whose other platforms are not carried"
    UNITS_REFUSE_OTHER_ROLE = "units that skip starting next to the other role's (ExecCondition=)"
    NM_CLOUD_SETUP_ALLOWED = "starting while nm-cloud-setup.service is enabled"


class Kind(StrEnum):
    SINCE = "since"  # the first patch of each minor that has the feature
    BROKEN = "broken"  # releases on which the feature does not work


@dataclass(frozen=True)
class Gate:
    """One row: ``feature`` is available ``since`` / ``broken`` on ``releases``."""

    feature: Feature
    kind: Kind
    releases: tuple[str, ...]  # vMAJ.MIN.PATCH, one per minor for SINCE
    source: str  # where upstream says so


GATES: tuple[Gate, ...] = (
    Gate(
        Feature.EMBEDDED_MIRROR,
        Kind.SINCE,
        ("v1.26.13", "v1.27.10", "v1.28.6", "v1.29.1"),
        # Experimental from the January 2024 releases, GA from v1.29.12, v1.30.8, v1.31.4
        # (the version gate was dropped from the page once those minors were EOL).
        "rancher/rke2-docs docs/install/registry_mirror.md (Version Gate, before b93344e2)",
    ),
    Gate(
        Feature.EMBEDDED_MIRROR_AGENTS,
        Kind.BROKEN,
        ("v1.31.13", "v1.31.14"),
        # Agents cannot bootstrap from the embedded registry; fixed in 1.32+ only: the
        # 1.31 backport (rancher/rke2#9228) was closed with 1.31 end of life.
        "rancher/rke2#9197 (Unable to bootstrap nodes from embedded registry)",
    ),
    Gate(
        Feature.IMPORT_WHILE_RUNNING,
        Kind.SINCE,
        ("v1.29.13", "v1.30.9", "v1.31.5"),
        # Before: images in agent/images are imported when RKE2 starts, only.
        "rancher/rke2-docs docs/add-ons/import-images.md (Version Gate, January 2025);"
        " k3s-io/k3s pkg/agent/containerd/watcher.go",
    ),
    Gate(
        Feature.IMPORT_PARTIAL_INDEX,
        Kind.SINCE,
        ("v1.27.15", "v1.28.11", "v1.29.6", "v1.30.2"),
        # Import with WithAllPlatforms(true) and, from these releases, WithSkipMissing():
        # before, an index listing a platform whose blobs are absent fails the whole
        # file ("content digest sha256:...: not found").
        "rancher/rke2#5944 (backports #5977, #5978, #5979); k3s-io/k3s#10136,"
        " pkg/agent/containerd/containerd.go preloadFile",
    ),
    Gate(
        Feature.UNITS_REFUSE_OTHER_ROLE,
        Kind.SINCE,
        ("v1.32.13", "v1.33.9", "v1.34.5", "v1.35.2"),
        # Before: Conflicts= (starting one unit stops the other and leaves its data).
        "rancher/rke2 bundle/lib/systemd/system/rke2-*.service at each tag (commit"
        ' "Prevent a node transform from agent/server to server/agent")',
    ),
    Gate(
        Feature.NM_CLOUD_SETUP_ALLOWED,
        Kind.SINCE,
        ("v1.32.11", "v1.33.7", "v1.34.3"),
        # Before (and in every 1.31 and older): an ExecStartPre refuses to start while
        # nm-cloud-setup.service is enabled.
        "rancher/rke2 bundle/lib/systemd/system/rke2-*.service at each tag",
    ),
)


def _split(release: str) -> tuple[int, int, int]:
    major, minor, patch = release.removeprefix("v").split(".")
    return int(major), int(minor), int(patch)


def _version(tag: str | Version) -> Version | None:
    return tag if isinstance(tag, Version) else parse_tag(tag)


def gate(feature: Feature, kind: Kind) -> Gate:
    """The row for ``feature`` of ``kind`` (KeyError when the table has none)."""
    for g in GATES:
        if g.feature == feature and g.kind == kind:
            return g
    raise KeyError(f"no {kind} gate for {feature}")


def has(feature: Feature, tag: str | Version) -> bool:
    """Whether RKE2 ``tag`` has ``feature`` and is not a release it is broken on."""
    v = _version(tag)
    if v is None:
        return True
    for g in GATES:
        if g.feature != feature:
            continue
        listed = [_split(r) for r in g.releases]
        if g.kind == Kind.BROKEN and (v.major, v.minor, v.patch) in listed:
            return False
        if g.kind == Kind.SINCE and not _since(v, listed):
            return False
    return True


def _since(v: Version, listed: list[tuple[int, int, int]]) -> bool:
    by_minor = {(major, minor): patch for major, minor, patch in listed}
    first = by_minor.get((v.major, v.minor))
    if first is not None:
        return v.patch >= first
    return (v.major, v.minor) > max(by_minor)


def first_releases(feature: Feature) -> str:
    """``v1.29.13, v1.30.9, v1.31.5``: the releases a SINCE gate names, for messages."""
    return ", ".join(gate(feature, Kind.SINCE).releases)


def imports_while_running(version: str | Version) -> bool:
    """Whether RKE2 ``version`` imports an image tarball placed in ``agent/images``
    while it runs; before v1.29.13, v1.30.9, v1.31.5 it imports them at start only, so
    a new tarball takes a restart."""
    return has(Feature.IMPORT_WHILE_RUNNING, version)


def imports_partial_index(version: str | Version) -> bool:
    """Whether RKE2 ``version`` imports an OCI archive whose image index lists
    platforms the archive does not carry (WithSkipMissing)."""
    return has(Feature.IMPORT_PARTIAL_INDEX, version)


def embedded_mirror_problem(tag: str) -> str | None:
    """Why ``distribution: servers`` cannot work on RKE2 ``tag``, or None."""
    if not has(Feature.EMBEDDED_MIRROR, tag):
        return (
            f"spec.images.distribution: servers needs RKE2's embedded registry mirror, which"
            f" {tag} does not have (it came with {first_releases(Feature.EMBEDDED_MIRROR)});"
            " use a newer bundle or distribution: all"
        )
    if not has(Feature.EMBEDDED_MIRROR_AGENTS, tag):
        broken = gate(Feature.EMBEDDED_MIRROR_AGENTS, Kind.BROKEN)
        return (
            f"spec.images.distribution: servers does not work on {tag}: its agents cannot"
            f" pull from the embedded registry mirror ({broken.source.split(' (')[0]}, broken"
            f" in {', '.join(broken.releases)} and not fixed for 1.31); use a bundle of"
            " another release (1.32 or newer) or distribution: all"
        )
    return None


__all__ = [
    "GATES",
    "Feature",
    "Gate",
    "Kind",
    "embedded_mirror_problem",
    "first_releases",
    "gate",
    "has",
    "imports_partial_index",
    "imports_while_running",
]
