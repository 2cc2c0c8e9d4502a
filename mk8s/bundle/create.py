"""The connected side: resolve a release, pin it in a lock, fetch, check, write a bundle.

``lock_release`` resolves a version spec and pins every artifact without downloading
the large files (only the small checksum files and install.sh, whose hashes must be
pinned). ``create_bundle`` fetches exactly what a lock pins into the content cache,
checking every byte, then writes the lock and the signed bundle. Upstream drift
against a lock raises ChecksumMismatch (exit 3) naming the artifact and both hashes.
On any failure no bundle and no lock is left behind.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from urllib.parse import unquote, urlsplit

from mk8s.bundle import fetch as fetch_mod
from mk8s.bundle import sbom as sbom_mod
from mk8s.bundle import split as split_mod
from mk8s.bundle import upstream, workloads
from mk8s.bundle.delta.create import BaseInput, DeltaWritten
from mk8s.bundle.keys import Signature
from mk8s.bundle.manifest import (
    Artifact,
    ArtifactKind,
    Lock,
    Release,
    artifact_path,
    build_lock,
    check_artifact_name,
    now_utc,
)
from mk8s.bundle.upstream import DEFAULT_CNI
from mk8s.bundle.writer import WriteSettings, WrittenBundle, write_bundle
from mk8s.callbacks import TransferProgress
from mk8s.errors import ChecksumMismatch, InputError, LockError, OutputError
from mk8s.files import atomic_write, open_regular, read_regular, sha256_file

LOCK_NAME = "mk8s.lock"
# 10000 artifacts of a few hundred bytes each: a lock is never near this size.
MAX_LOCK_BYTES = 16 << 20
SELF_NAME = "mk8s-linux-amd64"


@dataclass(frozen=True, kw_only=True)
class LockSettings:
    """What to resolve: a version spec and the shape of the bundle."""

    spec: str
    upstream: upstream.UpstreamSettings
    arches: tuple[str, ...] = ("amd64",)
    cni: str = DEFAULT_CNI
    image_groups: tuple[str, ...] = ()
    allow_prerelease: bool = False
    files: tuple[Path, ...] = ()
    cache_dir: Path | None = None
    # The operator's workloads (see mk8s.bundle.workloads).
    images: tuple[str, ...] = ()
    charts: tuple[Path, ...] = ()
    manifests: tuple[Path, ...] = ()
    registry_auth_file: Path | None = None  # a Docker config.json with credentials
    all_platforms: bool = False  # carry every platform of a multi-platform --image


@dataclass(frozen=True, kw_only=True)
class CreateSettings:
    """How to build the bundle from a lock."""

    upstream: upstream.UpstreamSettings
    signature: Callable[[bytes], Signature]
    out: Path | None = None
    lock_out: Path | None = None
    jobs: int = 4
    threads: int = 0
    cache_dir: Path | None = None
    # The single-file mk8s executable to carry (``--include-self``), or None.
    self_executable: Path | None = None
    # Replace an existing bundle file at the output path.
    force: bool = False
    # Write the bundle as numbered parts of at most this many bytes (``--split``).
    split: int | None = None
    # Embed an SBOM in this format ("cyclonedx" or "spdx") as a signed artifact.
    sbom: str | None = None
    registry_auth_file: Path | None = None  # a Docker config.json with credentials
    # Write a delta against this earlier bundle, its manifest or its lock (``--base``).
    base: Path | None = None


@dataclass(frozen=True)
class Created:
    lock: Lock
    lock_path: Path
    bundle: WrittenBundle
    downloaded: int
    parts: split_mod.SplitResult | None = None  # with --split: the bundle's parts
    delta: DeltaWritten | None = None  # with --base: what the delta carries


def _file_artifact(path: Path, kind: ArtifactKind = ArtifactKind.FILE) -> Artifact:
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


def lock_release(settings: LockSettings, progress: TransferProgress | None = None) -> Lock:
    """Resolve ``settings.spec`` and pin every artifact (no large downloads).

    Raises VersionNotFound / InputError (exit 2) for a spec or selection that matches
    nothing, UpstreamError for server trouble, ChecksumMismatch when the release's own
    checksum file cannot vouch for a selected asset.
    """
    up = settings.upstream
    release = upstream.resolve_release(
        settings.spec, up, allow_prerelease=settings.allow_prerelease
    )
    names = upstream.select_assets(
        release.asset_names,
        settings.arches,
        settings.cni,
        settings.image_groups,
        tag=release.tag,
    )
    artifacts: list[Artifact] = []
    for arch in settings.arches:
        sums_name = upstream.sha256sums_name(arch)
        sums_item = fetch_mod.FetchItem(sums_name, upstream.asset_url(up, release.tag, sums_name))
        got, text = fetch_mod.fetch_text(sums_item, up, settings.cache_dir, progress=progress)
        artifacts.append(
            Artifact(
                name=sums_name,
                kind=ArtifactKind.CHECKSUMS,
                path=artifact_path(sums_name, "checksums"),
                size=got.size,
                sha256=got.sha256,
                url=sums_item.url,
                arch=arch,
            )
        )
        sums = fetch_mod.parse_sha256sums(text, f"{sums_name} of {release.tag}")
        arch_names = [n for n in names if n != sums_name and f"linux-{arch}." in n]
        pinned = fetch_mod.expected_hashes(sums, arch_names, f"{sums_name} of {release.tag}")
        for name in arch_names:
            kind = ArtifactKind.RKE2 if name == upstream.tarball_name(arch) else ArtifactKind.IMAGES
            artifacts.append(
                Artifact(
                    name=name,
                    kind=kind,
                    path=artifact_path(name, kind),
                    size=release.asset(name).size,
                    sha256=pinned[name],
                    url=upstream.asset_url(up, release.tag, name),
                    arch=arch,
                )
            )
    script_item = fetch_mod.FetchItem("install.sh", upstream.install_script_url(up, release.tag))
    got, _ = fetch_mod.fetch_text(script_item, up, settings.cache_dir, progress=progress)
    artifacts.append(
        Artifact(
            name="install.sh",
            kind=ArtifactKind.INSTALL_SCRIPT,
            path=artifact_path("install.sh", "install-script"),
            size=got.size,
            sha256=got.sha256,
            url=script_item.url,
        )
    )
    artifacts += [_file_artifact(p) for p in settings.files]
    artifacts += workloads.pin_charts(
        settings.charts, partial(_file_artifact, kind=ArtifactKind.CHART)
    )
    artifacts += [_file_artifact(p, ArtifactKind.MANIFEST) for p in settings.manifests]
    if settings.images:
        cache = settings.cache_dir or fetch_mod.default_cache_dir()
        pins = workloads.ImagePins(
            settings.arches, release.tag, settings.all_platforms, settings.registry_auth_file
        )
        artifacts += workloads.pin_images(settings.images, pins, cache)
    rel = Release(
        requested=settings.spec,
        tag=release.tag,
        arch=tuple(settings.arches),
        cni=settings.cni,
        image_groups=tuple(settings.image_groups),
        allow_prerelease=settings.allow_prerelease,
    )
    return build_lock(rel, artifacts, now_utc())


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
    if lock.kind != "mk8s.lock":
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


def _local_source(art: Artifact) -> Path:
    url = art.url or ""
    parts = urlsplit(url)
    if parts.scheme != "file":
        raise LockError(f"artifact {art.name} has no usable source URL ({url!r})")
    return Path(unquote(parts.path))


def _check_local(art: Artifact, path: Path) -> None:
    # The lock may come from anyone: never print the hash of the local file, or a lock
    # naming /etc/shadow would turn this message into a hash oracle.
    now = _file_artifact(path, art.kind)
    if now.sha256 != art.sha256 or now.size != art.size:
        raise ChecksumMismatch(
            f"{path} ({art.name}) differs from the lock, which pins sha256 {art.sha256}",
            "restore the original file, or lock again on purpose",
        )
    # A lock is the user's file too: what it calls a chart or a manifest is checked as
    # `bundle lock` checked it, so no bundle carries one that deploy would refuse.
    if art.kind == ArtifactKind.CHART:
        workloads.check_chart(path)
    elif art.kind == ArtifactKind.MANIFEST:
        workloads.check_manifest(path)


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
        from mk8s.images.auth import read_auth_file

        read_auth_file(registry_auth_file)
    for chart in charts:
        _file_artifact(chart, ArtifactKind.CHART)
        workloads.check_chart(chart)
    for manifest in manifests:
        _file_artifact(manifest, ArtifactKind.MANIFEST)
        workloads.check_manifest(manifest)
    seen: dict[str, Path] = {}
    for path in [*paths, *charts, *manifests]:
        _file_artifact(path)
        if path.name in seen:
            raise InputError(
                f"--file {path} and --file {seen[path.name]} have the same name {path.name!r}",
                "rename one of them: files are carried by name",
            )
        seen[path.name] = path


def create_bundle(
    lock: Lock, settings: CreateSettings, progress: TransferProgress | None = None
) -> Created:
    """Fetch what ``lock`` pins (checking every byte), then write the lock and bundle.

    Raises ChecksumMismatch (exit 3) when any byte differs from the lock, UpstreamError
    for server trouble, OutputError when the bundle or lock cannot be written. Nothing
    is left at the output paths on failure.
    """
    workloads.check_releases(lock.find(kind=ArtifactKind.CHART))
    base = _load_base(settings.base)  # a delta's base is read before anything else
    name = base.delta_name(lock) if base is not None else None
    out = bundle_path(settings.out, lock, force=settings.force, name=name)
    if settings.split:
        split_mod.check_free(out, force=settings.force)
    if settings.self_executable is not None:
        exe = _file_artifact(settings.self_executable, ArtifactKind.MK8S)
        exe = replace(exe, name=SELF_NAME, path=artifact_path(SELF_NAME, "mk8s"))
        others = [a for a in lock.artifacts if a.kind != ArtifactKind.MK8S]
        lock = build_lock(lock.release, [*others, exe], lock.resolved_at)
    remote = [a for a in lock.artifacts if (a.url or "").startswith(("http://", "https://"))]
    items = [
        fetch_mod.FetchItem(
            a.name,
            a.url or "",
            sha256=a.sha256,
            size=a.size,
            source=f"the lock's sha256 for {a.name}",
        )
        for a in remote
    ]
    fetched = fetch_mod.fetch(items, settings.upstream, settings.cache_dir, settings.jobs, progress)
    files: dict[str, Path] = {a.path: f.path for a, f in zip(remote, fetched, strict=True)}
    cache = settings.cache_dir or fetch_mod.default_cache_dir()
    files.update(workloads.fetch_images(lock, cache, settings.registry_auth_file))
    for art in lock.artifacts:
        if art.path not in files:
            src = _local_source(art)
            _check_local(art, src)
            files[art.path] = src
    _cross_check_sums(lock, files)
    lock_path = settings.lock_out or out.parent / LOCK_NAME
    manifest = lock.as_manifest()
    if settings.sbom:  # the lock stays as pinned: the SBOM is derived, not fetched
        cache = settings.cache_dir or fetch_mod.default_cache_dir()
        manifest, files = sbom_mod.embed(manifest, files, settings.sbom, cache)
    written, delta = _write(manifest, files, out, settings, base)
    parts = None
    try:
        if settings.split:
            parts = split_mod.split_bundle(out, settings.split, settings.signature, force=True)
            out.unlink()
        write_lock(lock, lock_path)
    except BaseException:
        written.path.unlink(missing_ok=True)
        if parts is not None:
            parts.remove()
        raise
    downloaded = sum(1 for f in fetched if f.downloaded)
    return Created(lock.as_lock(), lock_path, written, downloaded, parts, delta)


def _load_base(path: Path | None) -> BaseInput | None:
    if path is None:
        return None
    from mk8s.bundle.delta.create import load_base

    return load_base(path)


def _write(
    manifest: Lock,
    files: dict[str, Path],
    out: Path,
    settings: CreateSettings,
    base: BaseInput | None,
) -> tuple[WrittenBundle, DeltaWritten | None]:
    """The bundle, or with a base the delta against it (mk8s.bundle.delta.create)."""
    write = WriteSettings(threads=settings.threads)
    if base is None:
        return write_bundle(manifest, files, out, settings.signature, settings=write), None
    from mk8s.bundle.delta.create import write_delta

    cache = settings.cache_dir or fetch_mod.default_cache_dir()
    delta = write_delta(
        manifest, files, out, settings.signature, base, upstream=settings.upstream,
        cache_dir=cache, jobs=settings.jobs, settings=write,
    )  # fmt: skip
    return delta.bundle, delta


def _cross_check_sums(lock: Lock, files: dict[str, Path]) -> None:
    """The pinned checksum files must vouch for the pinned release files."""
    for sums in lock.find(kind=ArtifactKind.CHECKSUMS):
        table = fetch_mod.parse_sha256sums(files[sums.path].read_bytes(), sums.name)
        for art in lock.artifacts:
            if art.arch == sums.arch and art.kind in (ArtifactKind.RKE2, ArtifactKind.IMAGES):
                listed = table.get(art.name)
                if listed != art.sha256:
                    raise ChecksumMismatch(
                        f"{sums.name} lists sha256 {listed} for {art.name} but the lock pins "
                        f"{art.sha256}",
                        "treat this as a supply-chain alarm: do not use this release",
                    )


def bundle_path(
    out: Path | None, lock: Lock, *, force: bool = False, name: str | None = None
) -> Path:
    """Where the bundle goes; OutputError if a file is there already (without ``force``)
    or the directory is missing."""
    name = name or lock.bundle_name()
    if out is None:
        path = Path.cwd() / name
    elif out.is_dir():
        path = out / name
    elif not out.parent.exists():
        raise OutputError(f"directory {out.parent} does not exist", "create it or choose -o")
    else:
        path = out
    if not force and (path.exists() or path.is_symlink()):
        raise OutputError(f"{path} already exists", "pass --force to replace it, or choose -o")
    return path


def default_jobs() -> int:
    return min(8, max(2, (os.cpu_count() or 2) * 2))


__all__ = [
    "CreateSettings",
    "Created",
    "LockSettings",
    "create_bundle",
    "lock_release",
    "read_lock",
    "write_lock",
]
