"""``mk8s bundle create``: fetch what a lock pins, check every byte, write the bundle.

``create_bundle`` fetches exactly what a lock (:mod:`mk8s.bundle.lock`) pins into the
content cache (:mod:`mk8s.bundle.upstream`), checking every byte, then writes the
signed bundle (:mod:`mk8s.bundle.format`; an SBOM from :mod:`mk8s.bundle.provenance`
if asked) and the lock beside it. Upstream drift against a lock raises
ChecksumMismatch (exit 3) naming the artifact and both hashes. On any failure no
bundle and no lock is left behind.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import unquote, urlsplit

from mk8s.bundle import workload_sources
from mk8s.bundle.format import split as split_mod
from mk8s.bundle.format.keys import Signature
from mk8s.bundle.format.manifest import Artifact, ArtifactKind, Lock, artifact_path, build_lock
from mk8s.bundle.format.writer import WriteSettings, WrittenBundle, write_bundle
from mk8s.bundle.lock import LOCK_NAME, pin_file, write_lock
from mk8s.bundle.provenance import sbom as sbom_mod
from mk8s.bundle.upstream import checksums, fetch
from mk8s.bundle.upstream.settings import UpstreamSettings
from mk8s.callbacks import TransferProgress
from mk8s.errors import ChecksumMismatch, LockError, OutputError

SELF_NAME = "mk8s-linux-amd64"


@dataclass(frozen=True, kw_only=True)
class CreateSettings:
    """How to build the bundle from a lock."""

    upstream: UpstreamSettings
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
    # Embed an SBOM in this format as a signed artifact.
    sbom: sbom_mod.SbomFormat | None = None
    registry_auth_file: Path | None = None  # a Docker config.json with credentials


@dataclass(frozen=True)
class Created:
    lock: Lock
    lock_path: Path
    bundle: WrittenBundle
    downloaded: int
    parts: split_mod.SplitResult | None = None  # with --split: the bundle's parts


def create_bundle(
    lock: Lock, settings: CreateSettings, progress: TransferProgress | None = None
) -> Created:
    """Fetch what ``lock`` pins (checking every byte), then write the lock and bundle.

    Raises ChecksumMismatch (exit 3) when any byte differs from the lock, UpstreamError
    for server trouble, OutputError when the bundle or lock cannot be written. Nothing
    is left at the output paths on failure.
    """
    workload_sources.check_releases(lock.find(kind=ArtifactKind.CHART))
    out = bundle_path(settings.out, lock, force=settings.force)
    if settings.split:
        split_mod.check_free(out, force=settings.force)
    if settings.self_executable is not None:
        lock = _with_self(lock, settings.self_executable)
    files, downloaded = _gather_files(lock, settings, progress)
    lock_path = settings.lock_out or out.parent / LOCK_NAME
    manifest = lock.as_manifest()
    if settings.sbom:  # the lock stays as pinned: the SBOM is derived, not fetched
        cache = settings.cache_dir or fetch.default_cache_dir()
        manifest, files = sbom_mod.embed(manifest, files, settings.sbom, cache)
    written = write_bundle(
        manifest,
        files,
        out,
        settings.signature,
        settings=WriteSettings(threads=settings.threads),
    )
    parts = _split_and_write_lock(out, written, lock, lock_path, settings)
    return Created(lock.as_lock(), lock_path, written, downloaded, parts)


def _with_self(lock: Lock, executable: Path) -> Lock:
    """``lock`` carrying ``executable`` as the mk8s executable (``--include-self``)."""
    exe = pin_file(executable, ArtifactKind.MK8S)
    exe = replace(exe, name=SELF_NAME, path=artifact_path(SELF_NAME, "mk8s"))
    others = [a for a in lock.artifacts if a.kind != ArtifactKind.MK8S]
    return build_lock(lock.release, [*others, exe], lock.resolved_at)


def _gather_files(
    lock: Lock, settings: CreateSettings, progress: TransferProgress | None
) -> tuple[dict[str, Path], int]:
    """Every artifact's file, by bundle path, each checked against the lock: release
    files from the cache (downloaded if missing), images pulled again by digest, the
    operator's files where the lock found them. Also how many were downloaded."""
    remote = [a for a in lock.artifacts if (a.url or "").startswith(("http://", "https://"))]
    items = [
        fetch.FetchItem(
            a.name,
            a.url or "",
            sha256=a.sha256,
            size=a.size,
            source=f"the lock's sha256 for {a.name}",
        )
        for a in remote
    ]
    fetched = fetch.fetch(items, settings.upstream, settings.cache_dir, settings.jobs, progress)
    files: dict[str, Path] = {a.path: f.path for a, f in zip(remote, fetched, strict=True)}
    cache = settings.cache_dir or fetch.default_cache_dir()
    files.update(workload_sources.fetch_images(lock, cache, settings.registry_auth_file))
    for art in lock.artifacts:
        if art.path not in files:
            src = _local_source(art)
            _check_local(art, src)
            files[art.path] = src
    _cross_check_sums(lock, files)
    return files, sum(1 for f in fetched if f.downloaded)


def _split_and_write_lock(
    out: Path, written: WrittenBundle, lock: Lock, lock_path: Path, settings: CreateSettings
) -> split_mod.SplitResult | None:
    """With ``--split``, cut the bundle at ``out`` into parts (the whole file goes);
    then write the lock. On any failure neither the bundle nor its parts are left."""
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
    return parts


def _local_source(art: Artifact) -> Path:
    url = art.url or ""
    parts = urlsplit(url)
    if parts.scheme != "file":
        raise LockError(f"artifact {art.name} has no usable source URL ({url!r})")
    return Path(unquote(parts.path))


def _check_local(art: Artifact, path: Path) -> None:
    # The lock may come from anyone: never print the hash of the local file, or a lock
    # naming /etc/shadow would turn this message into a hash oracle.
    now = pin_file(path, art.kind)
    if now.sha256 != art.sha256 or now.size != art.size:
        raise ChecksumMismatch(
            f"{path} ({art.name}) differs from the lock, which pins sha256 {art.sha256}",
            "restore the original file, or lock again on purpose",
        )
    # A lock is the user's file too: what it calls a chart or a manifest is checked as
    # `bundle lock` checked it, so no bundle carries one that deploy would refuse.
    if art.kind == ArtifactKind.CHART:
        workload_sources.check_chart(path)
    elif art.kind == ArtifactKind.MANIFEST:
        workload_sources.check_manifest(path)


def _cross_check_sums(lock: Lock, files: dict[str, Path]) -> None:
    """The pinned checksum files must vouch for the pinned release files."""
    for sums in lock.find(kind=ArtifactKind.CHECKSUMS):
        table = checksums.parse_sha256sums(files[sums.path].read_bytes(), sums.name)
        for art in lock.artifacts:
            if art.arch == sums.arch and art.kind in (ArtifactKind.RKE2, ArtifactKind.IMAGES):
                listed = table.get(art.name)
                if listed != art.sha256:
                    raise ChecksumMismatch(
                        f"{sums.name} lists sha256 {listed} for {art.name} but the lock pins "
                        f"{art.sha256}",
                        "treat this as a supply-chain alarm: do not use this release",
                    )


def bundle_path(out: Path | None, lock: Lock, *, force: bool = False) -> Path:
    """Where the bundle goes; OutputError if a file is there already (without ``force``)
    or the directory is missing."""
    name = lock.bundle_name()
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


__all__ = ["CreateSettings", "Created", "bundle_path", "create_bundle", "default_jobs"]
