"""``bundle create --base OLD``: write a delta against an earlier bundle or its lock.

OLD is the base bundle file (split or not), its extracted ``mk8s-bundle.json``, or the
lock it was made from (the base is then named as this mk8s would write that lock's
bundle). The base's image archives are needed to know which blobs the base holds:
they come from the content cache (by sha256), else from the base bundle, else from
their upstream URLs, each checked against the base's pins. The delta's manifest is
the release's manifest plus the delta section (:mod:`.model`, :mod:`.plan`); it is
written by the same writer as every bundle, so the same lock, base and key give the
same bytes.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from mk8s.bundle.delta import plan as plan_mod
from mk8s.bundle.delta.extract import _FileSink
from mk8s.bundle.delta.model import BLOB_DIR, BaseRef, Delta, Pin
from mk8s.bundle.format.keys import Signature, TrustedKey
from mk8s.bundle.format.manifest import BUNDLE_KIND, Artifact, Lock, bundle_id
from mk8s.bundle.format.reader import parse_manifest, read_bundle, read_head
from mk8s.bundle.format.writer import WriteSettings, WrittenBundle, write_bundle
from mk8s.bundle.upstream import fetch as fetch_mod
from mk8s.bundle.upstream.settings import UpstreamSettings
from mk8s.errors import BundleRejected, InputError, LockError, Mk8sError
from mk8s.files import open_regular, read_regular

MAX_MANIFEST = 16 << 20


@dataclass(frozen=True)
class BaseInput:
    """The base as ``--base`` gave it."""

    manifest: Lock  # the base bundle's manifest (for a lock: as this mk8s would write it)
    manifest_bytes: bytes
    file: str  # the base bundle's file name, for messages on the other side
    bundle: Path | None  # the base bundle itself, when given one

    def delta_name(self, lock: Lock) -> str:
        """A delta's default file name: the full bundle's and the base release, e.g.
        ``mk8s-rke2-v1.31.5-rke2r1-linux-amd64.delta-from-v1.31.4-rke2r1.tar.zst``."""
        stem = lock.bundle_name().removesuffix(".tar.zst")
        return f"{stem}.delta-from-{self.manifest.release.tag.replace('+', '-')}.tar.zst"

    def ref(self, used: set[str], file_pin: tuple[int, str] | None) -> BaseRef:
        pins = [Pin(a.path, a.size, a.sha256) for a in self.manifest.artifacts if a.path in used]
        digest = hashlib.sha256(self.manifest_bytes).hexdigest()
        return BaseRef(
            bundle_id=bundle_id(self.manifest_bytes),
            manifest_sha256=digest,
            file=self.file,
            tag=self.manifest.release.tag,
            artifacts=tuple(sorted(pins, key=lambda p: p.path)),
            file_pin=file_pin,
        )


@dataclass(frozen=True)
class DeltaWritten:
    bundle: WrittenBundle
    delta: Delta
    notes: tuple[str, ...]  # image archives that travel whole, and why


_NOT_DELTA = "give the full bundle the delta was made from, or that bundle's lock"


def load_base(path: Path) -> BaseInput:
    """Read ``--base``: a bundle, a bundle manifest or a lock; InputError (exit 2) for
    anything else, or for a delta (a delta of a delta is not supported)."""
    if not path.exists() and not _split(path):
        raise InputError(f"--base {path} does not exist", _NOT_DELTA)
    if _split(path) or _is_zstd(path):
        try:
            head = read_head(path)
            manifest = parse_manifest(head.manifest_bytes)
        except BundleRejected as e:
            raise InputError(f"--base {path} is not a usable bundle: {e.problem}") from e
        return _checked(BaseInput(manifest, head.manifest_bytes, _file_name(path), path), path)
    data = read_regular(path, what="--base", max_size=MAX_MANIFEST, error=LockError, fix=_NOT_DELTA)
    lock = Lock.from_bytes(data, source=str(path))
    if lock.kind == BUNDLE_KIND:  # an extracted mk8s-bundle.json: its exact bytes
        return _checked(BaseInput(lock, data, lock.bundle_name(), None), path)
    manifest = lock.as_manifest()
    return _checked(BaseInput(manifest, manifest.to_bytes(), manifest.bundle_name(), None), path)


def _checked(base: BaseInput, path: Path) -> BaseInput:
    if base.manifest.delta is not None:
        raise InputError(
            f"--base {path} is itself a delta (of {base.manifest.delta.base.describe()}):"
            " a delta of a delta is not supported",
            _NOT_DELTA,
        )
    return base


def _file_name(path: Path) -> str:
    """The bundle's file name, also when ``path`` is its parts index or one part."""
    from mk8s.bundle.format.parts import INDEX_SUFFIX, locate

    index = locate(path)
    return index.name.removesuffix(INDEX_SUFFIX) if index is not None else path.name


def _split(path: Path) -> bool:
    """Whether ``path`` names a split bundle whose parts index exists."""
    from mk8s.bundle.format.parts import locate

    try:
        index = locate(path)
    except Mk8sError:
        return False
    return index is not None and index.exists()


def _is_zstd(path: Path) -> bool:
    """Whether ``path`` is a regular file starting with zstd's magic (a FIFO or device
    is not opened for reading: read_regular then names what it is)."""
    try:
        with open_regular(path, what="--base") as f:
            return f.read(4) == b"\x28\xb5\x2f\xfd"
    except (OSError, Mk8sError):
        return False


def write_delta(
    manifest: Lock,
    files: Mapping[str, Path],
    out: Path,
    signature: Callable[[bytes], Signature],
    base: BaseInput,
    *,
    upstream: UpstreamSettings,
    cache_dir: Path,
    jobs: int = 4,
    settings: WriteSettings | None = None,
) -> DeltaWritten:
    """Write the delta of ``manifest`` (whose files ``files`` maps by path) against
    ``base`` to ``out``; scratch files live next to ``out`` and are removed."""
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        archives, file_pin = base_archives(base, upstream, cache_dir, jobs, work / "base")
        index = plan_mod.index_base(base.manifest, archives)
        planned = plan_mod.plan(manifest, files, base.manifest, index, work / "pieces")
        by_path = {a.path: a for a in manifest.artifacts}
        members = [_pin(path, f, by_path) for path, f in planned.files.items()]
        delta = Delta(
            base=base.ref(planned.base_used, file_pin),
            members=tuple(sorted(members, key=lambda p: p.path)),
            sources=tuple(sorted(planned.sources, key=lambda s: s.path)),
        )
        written = write_bundle(
            replace(manifest, delta=delta), planned.files, out, signature, settings=settings
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return DeltaWritten(written, delta, tuple(planned.notes))


def _pin(path: str, f: Path, artifacts: Mapping[str, Artifact]) -> Pin:
    art = artifacts.get(path)
    if art is not None:
        return Pin(path, art.size, art.sha256)
    if path.startswith(BLOB_DIR):
        return Pin(path, f.stat().st_size, path[len(BLOB_DIR) :])
    h = hashlib.sha256()
    with open(f, "rb") as src:
        while chunk := src.read(1 << 20):
            h.update(chunk)
    return Pin(path, f.stat().st_size, h.hexdigest())


def base_archives(
    base: BaseInput, upstream: UpstreamSettings, cache_dir: Path, jobs: int, work: Path
) -> tuple[dict[str, Path], tuple[int, str] | None]:
    """The base's image archives as local files, each checked against the base's pins:
    from the content cache, the base bundle, or upstream (in that order); and the base
    bundle file's (size, sha256) once every member was checked (None for a lock)."""
    wanted = [a for a in base.manifest.artifacts if a.kind in plan_mod.ARCHIVE_KINDS]
    out: dict[str, Path] = {}
    for a in wanted:
        cached = fetch_mod.cache_path(cache_dir, a.sha256)
        if cached.is_file() and cached.stat().st_size == a.size:
            out[a.path] = cached
    rest = {a.path for a in wanted} - set(out)
    if base.bundle is not None:  # read through once: every member checked, file pinned
        file_pin = _from_bundle(base, rest, work)
        out.update({p: work / p for p in rest})
        return out, file_pin
    remote = [
        a for a in wanted if a.path in rest and (a.url or "").startswith(("http://", "https://"))
    ]
    items = [
        fetch_mod.FetchItem(
            a.name, a.url or "", sha256=a.sha256, size=a.size, source=f"the base's {a.name}"
        )
        for a in remote
    ]
    if items:
        fetched = fetch_mod.fetch(items, upstream, cache_dir, jobs)
        out.update({a.path: f.path for a, f in zip(remote, fetched, strict=True)})
    return out, None


def _from_bundle(base: BaseInput, wanted: set[str], work: Path) -> tuple[int, str]:
    """Check every member of the base bundle against its manifest, keeping the
    ``wanted`` artifacts; the file's (size, sha256)."""
    assert base.bundle is not None

    def trust(manifest_bytes: bytes, sig_bytes: bytes) -> tuple[Lock, TrustedKey | None]:
        if manifest_bytes != base.manifest_bytes:
            raise BundleRejected(f"--base {base.bundle} changed while mk8s was reading it")
        return parse_manifest(manifest_bytes), None

    sink = _FileSink(work, wanted)
    try:
        v = read_bundle(base.bundle, trust, sink=sink)
    except BundleRejected as e:
        raise BundleRejected(
            f"--base {base.bundle} is damaged: {e.problem}", "give an intact base bundle"
        ) from e
    finally:
        sink.close()
    return v.file_size, v.file_sha256


__all__ = ["BaseInput", "DeltaWritten", "base_archives", "load_base", "write_delta"]
