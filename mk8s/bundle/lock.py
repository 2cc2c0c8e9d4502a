"""``mk8s bundle lock``: resolve a release and pin every artifact in a lockfile.

``lock_release`` resolves a version spec and pins every artifact without downloading
the large files: each release file by the sha256 its release's ``sha256sum-ARCH.txt``
lists (only those small checksum files and install.sh are downloaded, to pin them),
then the operator's own files, charts, manifests and images
(:mod:`mk8s.bundle.workload_sources`). :mod:`mk8s.bundle.create` builds a bundle from
the lock; ``read_lock`` and ``write_lock`` keep it on disk.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from mk8s.bundle import workload_sources
from mk8s.bundle.format.manifest import (
    LOCK_KIND,
    Artifact,
    ArtifactKind,
    Lock,
    Release,
    artifact_path,
    build_lock,
    check_artifact_name,
    now_utc,
)
from mk8s.bundle.upstream import checksums, fetch, releases
from mk8s.bundle.upstream.releases import DEFAULT_CNI, UpstreamRelease
from mk8s.bundle.upstream.settings import UpstreamSettings
from mk8s.callbacks import TransferProgress
from mk8s.errors import InputError, LockError, OutputError
from mk8s.files import atomic_write, open_regular, read_regular, sha256_file

LOCK_NAME = "mk8s.lock"
# 10000 artifacts of a few hundred bytes each: a lock is never near this size.
MAX_LOCK_BYTES = 16 << 20


@dataclass(frozen=True, kw_only=True)
class LockSettings:
    """What to resolve: a version spec and the shape of the bundle."""

    spec: str
    upstream: UpstreamSettings
    arches: tuple[str, ...] = ("amd64",)
    cni: str = DEFAULT_CNI
    image_groups: tuple[str, ...] = ()
    allow_prerelease: bool = False
    files: tuple[Path, ...] = ()
    cache_dir: Path | None = None
    # The operator's workloads (see mk8s.bundle.workload_sources).
    images: tuple[str, ...] = ()
    charts: tuple[Path, ...] = ()
    manifests: tuple[Path, ...] = ()
    registry_auth_file: Path | None = None  # a Docker config.json with credentials
    all_platforms: bool = False  # carry every platform of a multi-platform --image


def pin_file(path: Path, kind: ArtifactKind = ArtifactKind.FILE) -> Artifact:
    """Pin one of the operator's own files; InputError (exit 2) for an unusable one."""
    name = path.name
    why = check_artifact_name(name)
    if why:
        raise InputError(
            f"--file {path}: the name {name!r} {why}",
            "rename or copy the file to a plain name first",
        )
    with open_regular(path, what="--file", fix="give a regular file") as f:
        try:
            sha256, size = sha256_file(f)
        except OSError as e:
            raise InputError(f"cannot read --file {path}: {e.strerror or e}") from e
    return Artifact(
        name=name,
        kind=kind,
        path=artifact_path(name, kind),
        size=size,
        sha256=sha256,
        url=path.resolve().as_uri(),
    )


def check_files(
    paths: Sequence[Path],
    charts: Sequence[Path] = (),
    manifests: Sequence[Path] = (),
    registry_auth_file: Path | None = None,
) -> None:
    """Refuse unusable ``--file``, ``--chart``, ``--manifest`` and
    ``--registry-auth-file`` inputs before anything is resolved or downloaded.

    InputError (exit 2) for a name a bundle cannot carry, two files with one name, a
    chart that is not a chart archive, a manifest that is not Kubernetes YAML, an auth
    file that is not a Docker config, or anything that is not a readable regular file.
    """
    if registry_auth_file is not None:
        # Imported here: only an auth file pays for the images package.
        from mk8s.images.auth import read_auth_file

        read_auth_file(registry_auth_file)
    for chart in charts:
        pin_file(chart, ArtifactKind.CHART)
        workload_sources.check_chart(chart)
    for manifest in manifests:
        pin_file(manifest, ArtifactKind.MANIFEST)
        workload_sources.check_manifest(manifest)
    seen: dict[str, Path] = {}
    for path in [*paths, *charts, *manifests]:
        pin_file(path)
        if path.name in seen:
            raise InputError(
                f"--file {path} and --file {seen[path.name]} have the same name {path.name!r}",
                "rename one of them: files are carried by name",
            )
        seen[path.name] = path


def lock_release(settings: LockSettings, progress: TransferProgress | None = None) -> Lock:
    """Resolve ``settings.spec`` and pin every artifact (no large downloads).

    Raises VersionNotFound / InputError (exit 2) for a spec or selection that matches
    nothing, UpstreamError for server trouble, ChecksumMismatch when the release's own
    checksum file cannot vouch for a selected asset.
    """
    release = releases.resolve_release(
        settings.spec, settings.upstream, allow_prerelease=settings.allow_prerelease
    )
    names = releases.select_assets(
        release.asset_names,
        settings.arches,
        settings.cni,
        settings.image_groups,
        tag=release.tag,
    )
    artifacts: list[Artifact] = []
    for arch in settings.arches:
        artifacts += _pin_release_files(release, names, arch, settings, progress)
    artifacts.append(_pin_install_script(release, settings, progress))
    artifacts += _pin_operator_inputs(settings, release.tag)
    rel = Release(
        requested=settings.spec,
        tag=release.tag,
        arch=tuple(settings.arches),
        cni=settings.cni,
        image_groups=tuple(settings.image_groups),
        allow_prerelease=settings.allow_prerelease,
    )
    return build_lock(rel, artifacts, now_utc())


def _pin_release_files(
    release: UpstreamRelease,
    names: Sequence[str],
    arch: str,
    settings: LockSettings,
    progress: TransferProgress | None,
) -> list[Artifact]:
    """The checksum file of ``arch`` (downloaded, to pin it) and the selected release
    files of ``arch``, each pinned by the hash that checksum file lists."""
    up = settings.upstream
    sums_name = releases.sha256sums_name(arch)
    sums_item = fetch.FetchItem(sums_name, releases.asset_url(up, release.tag, sums_name))
    got, text = fetch.fetch_text(sums_item, up, settings.cache_dir, progress=progress)
    out = [
        Artifact(
            name=sums_name,
            kind=ArtifactKind.CHECKSUMS,
            path=artifact_path(sums_name, "checksums"),
            size=got.size,
            sha256=got.sha256,
            url=sums_item.url,
            arch=arch,
        )
    ]
    sums = checksums.parse_sha256sums(text, f"{sums_name} of {release.tag}")
    arch_names = [n for n in names if n != sums_name and f"linux-{arch}." in n]
    pinned = checksums.expected_hashes(sums, arch_names, f"{sums_name} of {release.tag}")
    for name in arch_names:
        kind = ArtifactKind.RKE2 if name == releases.tarball_name(arch) else ArtifactKind.IMAGES
        out.append(
            Artifact(
                name=name,
                kind=kind,
                path=artifact_path(name, kind),
                size=release.asset(name).size,
                sha256=pinned[name],
                url=releases.asset_url(up, release.tag, name),
                arch=arch,
            )
        )
    return out


def _pin_install_script(
    release: UpstreamRelease, settings: LockSettings, progress: TransferProgress | None
) -> Artifact:
    """install.sh at the resolved tag, downloaded to pin it."""
    up = settings.upstream
    item = fetch.FetchItem("install.sh", releases.install_script_url(up, release.tag))
    got, _ = fetch.fetch_text(item, up, settings.cache_dir, progress=progress)
    return Artifact(
        name="install.sh",
        kind=ArtifactKind.INSTALL_SCRIPT,
        path=artifact_path("install.sh", "install-script"),
        size=got.size,
        sha256=got.sha256,
        url=item.url,
    )


def _pin_operator_inputs(settings: LockSettings, tag: str) -> list[Artifact]:
    """The operator's files, charts, manifests and images (pulled, to pin them)."""
    artifacts = [pin_file(p) for p in settings.files]
    artifacts += workload_sources.pin_charts(
        settings.charts, partial(pin_file, kind=ArtifactKind.CHART)
    )
    artifacts += [pin_file(p, ArtifactKind.MANIFEST) for p in settings.manifests]
    if settings.images:
        cache = settings.cache_dir or fetch.default_cache_dir()
        pins = workload_sources.ImagePins(
            settings.arches, tag, settings.all_platforms, settings.registry_auth_file
        )
        artifacts += workload_sources.pin_images(settings.images, pins, cache)
    return artifacts


def read_lock(path: Path) -> Lock:
    """Load a lockfile; LockError (exit 2) if missing, malformed or not a lock."""
    data = read_regular(
        path,
        what="lockfile",
        max_size=MAX_LOCK_BYTES,
        error=LockError,
        fix="create one with `mk8s bundle lock`",
    )
    lock = Lock.from_bytes(data, source=str(path))
    if lock.kind != LOCK_KIND:
        raise LockError(
            f"{path} is a bundle manifest, not a lockfile",
            "pass the mk8s.lock written next to the bundle",
        )
    return lock


def write_lock(lock: Lock, path: Path) -> None:
    """Write the lockfile atomically (OutputError on failure)."""
    try:
        atomic_write(path, lock.as_lock().to_bytes())
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from e


__all__ = [
    "LOCK_NAME",
    "LockSettings",
    "check_files",
    "lock_release",
    "pin_file",
    "read_lock",
    "write_lock",
]
