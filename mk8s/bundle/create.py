"""The connected side: resolve a release, pin it in a lock, fetch, check, write a bundle.

``lock_release`` resolves a version spec and pins every artifact without downloading
the large files (only the small checksum files and install.sh, whose hashes must be
pinned). ``create_bundle`` fetches exactly what a lock pins into the content cache,
checking every byte, then writes the lock and the signed bundle. Upstream drift
against a lock raises ChecksumMismatch (exit 3) naming the artifact and both hashes.
On any failure no bundle and no lock is left behind.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import unquote, urlsplit

from mk8s.bundle import fetch as fetch_mod
from mk8s.bundle import upstream
from mk8s.bundle.keys import Signature, atomic_write
from mk8s.bundle.manifest import Artifact, Lock, Release, artifact_path, build_lock, now_utc
from mk8s.bundle.upstream import DEFAULT_CNI
from mk8s.bundle.writer import WriteSettings, WrittenBundle, write_bundle
from mk8s.errors import ChecksumMismatch, InputError, LockError, OutputError

LOCK_NAME = "mk8s.lock"
SELF_NAME = "mk8s-linux-amd64"
Progress = fetch_mod.ProgressFn


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


@dataclass(frozen=True)
class Created:
    lock: Lock
    lock_path: Path
    bundle: WrittenBundle
    downloaded: int


def _file_artifact(path: Path, kind: str = "file") -> Artifact:
    try:
        h = hashlib.sha256()
        size = 0
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
                size += len(chunk)
    except OSError as e:
        raise InputError(f"cannot read --file {path}: {e.strerror or e}", "check the path") from e
    name = path.name
    return Artifact(
        name=name,
        kind=kind,
        path=artifact_path(name, kind),
        size=size,
        sha256=h.hexdigest(),
        url=path.resolve().as_uri(),
    )


def lock_release(settings: LockSettings, progress: Progress | None = None) -> Lock:
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
                kind="checksums",
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
            kind = "rke2" if name == upstream.tarball_name(arch) else "images"
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
            kind="install-script",
            path=artifact_path("install.sh", "install-script"),
            size=got.size,
            sha256=got.sha256,
            url=script_item.url,
        )
    )
    artifacts += [_file_artifact(p) for p in settings.files]
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
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise LockError(
            f"lockfile {path} does not exist", "create one with `mk8s bundle lock`"
        ) from e
    except OSError as e:
        raise LockError(f"cannot read lockfile {path}: {e.strerror or e}") from e
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
    now = _file_artifact(path, art.kind)
    if now.sha256 != art.sha256 or now.size != art.size:
        raise ChecksumMismatch(
            f"{path} ({art.name}) has changed since it was locked: expected sha256 "
            f"{art.sha256}, got {now.sha256}",
            "restore the original file, or lock again on purpose",
        )


def create_bundle(
    lock: Lock, settings: CreateSettings, progress: Progress | None = None
) -> Created:
    """Fetch what ``lock`` pins (checking every byte), then write the lock and bundle.

    Raises ChecksumMismatch (exit 3) when any byte differs from the lock, UpstreamError
    for server trouble, OutputError when the bundle or lock cannot be written. Nothing
    is left at the output paths on failure.
    """
    if settings.self_executable is not None:
        exe = _file_artifact(settings.self_executable, "mk8s")
        exe = replace(exe, name=SELF_NAME, path=artifact_path(SELF_NAME, "mk8s"))
        others = [a for a in lock.artifacts if a.kind != "mk8s"]
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
    for art in lock.artifacts:
        if art.path not in files:
            src = _local_source(art)
            _check_local(art, src)
            files[art.path] = src
    _cross_check_sums(lock, files)
    out = _bundle_path(settings.out, lock)
    lock_path = settings.lock_out or out.parent / LOCK_NAME
    written = write_bundle(
        lock.as_manifest(),
        files,
        out,
        settings.signature,
        settings=WriteSettings(threads=settings.threads),
    )
    try:
        write_lock(lock, lock_path)
    except BaseException:
        written.path.unlink(missing_ok=True)
        raise
    return Created(lock.as_lock(), lock_path, written, sum(1 for f in fetched if f.downloaded))


def _cross_check_sums(lock: Lock, files: dict[str, Path]) -> None:
    """The pinned checksum files must vouch for the pinned release files."""
    for sums in lock.find(kind="checksums"):
        table = fetch_mod.parse_sha256sums(files[sums.path].read_bytes(), sums.name)
        for art in lock.artifacts:
            if art.arch == sums.arch and art.kind in ("rke2", "images"):
                listed = table.get(art.name)
                if listed != art.sha256:
                    raise ChecksumMismatch(
                        f"{sums.name} lists sha256 {listed} for {art.name} but the lock pins "
                        f"{art.sha256}",
                        "treat this as a supply-chain alarm: do not use this release",
                    )


def _bundle_path(out: Path | None, lock: Lock) -> Path:
    name = lock.bundle_name()
    if out is None:
        return Path.cwd() / name
    if out.is_dir():
        return out / name
    if not out.parent.exists():
        raise OutputError(f"directory {out.parent} does not exist", "create it or choose -o")
    return out


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
