"""Write a bundle: one deterministic, signed ``.tar.zst`` (docs/format.md).

Members, in order: ``mk8s-bundle.json``, ``mk8s-bundle.json.sig``, then every artifact
in manifest order. Determinism: headers carry only the name, size, mode 0644, uid/gid
0 and the lock's time; zstd runs in its multi-threaded mode at a fixed level, whose
output does not depend on the number of worker threads. The same manifest, files and
key therefore give the same bytes.

The file is written under a temporary name next to the target and renamed only when
complete and flushed; on any failure (a changed input, a full disk, Ctrl-C) the
temporary file is removed and nothing is left at the target.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import zstandard

from mk8s.bundle.format import tarfmt
from mk8s.bundle.format.keys import Signature
from mk8s.bundle.format.manifest import (
    BUNDLE_KIND,
    MANIFEST_NAME,
    SIGNATURE_NAME,
    Artifact,
    Lock,
    bundle_id,
)
from mk8s.callbacks import StreamProgress
from mk8s.errors import ChecksumMismatch, InputError, OutputError

CHUNK = 1 << 20
ZSTD_LEVEL = 3


@dataclass(frozen=True)
class WriteSettings:
    """How to compress. ``threads`` only changes speed, never the output bytes."""

    threads: int = 0  # 0: one worker per CPU
    level: int = ZSTD_LEVEL

    def workers(self) -> int:
        return self.threads if self.threads > 0 else max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class WrittenBundle:
    path: Path
    size: int
    sha256: str
    bundle_id: str
    artifacts: int
    artifact_bytes: int


class _HashingFile:
    """A write-only file wrapper that hashes and counts what passes through."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | memoryview) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self.raw.write(data)

    def flush(self) -> None:
        self.raw.flush()


def compressor(settings: WriteSettings) -> zstandard.ZstdCompressor:
    params = zstandard.ZstdCompressionParameters.from_level(
        settings.level,
        threads=settings.workers(),
        write_checksum=1,
        write_content_size=0,
        write_dict_id=0,
    )
    return zstandard.ZstdCompressor(compression_params=params)


def write_bundle(
    manifest: Lock,
    files: Mapping[str, Path],
    out: Path,
    signature: Callable[[bytes], Signature],
    *,
    settings: WriteSettings | None = None,
    progress: StreamProgress | None = None,
) -> WrittenBundle:
    """Write ``manifest`` and the files it lists to ``out``.

    ``files`` maps each artifact's bundle path to a local file. Each file is hashed as
    it is copied; a size or sha256 that differs from the manifest raises
    ChecksumMismatch and no bundle is written. ``signature`` is given the exact
    manifest bytes. OutputError on any write failure (disk full, permissions).
    """
    if manifest.kind != BUNDLE_KIND:
        raise ValueError("write_bundle needs a bundle manifest (Lock.as_manifest())")
    missing = [a.path for a in manifest.artifacts if a.path not in files]
    if missing:
        raise InputError(f"no local file for artifact {missing[0]}")
    settings = settings or WriteSettings()
    manifest_bytes = manifest.to_bytes()
    sig_bytes = signature(manifest_bytes).to_bytes()
    out = out.absolute()
    tmp = out.with_name(f".{out.name}.{secrets.token_hex(4)}.part")
    try:
        with open(tmp, "xb") as raw:
            sink = _HashingFile(raw)
            with compressor(settings).stream_writer(sink, closefd=False, write_size=CHUNK) as z:  # type: ignore[arg-type]
                _write_members(z, manifest, (manifest_bytes, sig_bytes), files, progress)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, out)
    except OSError as e:
        _discard(tmp)
        if e.errno == errno.ENOSPC:
            raise OutputError(
                f"no space left on the device writing {out}",
                "free some space or write the bundle elsewhere with -o",
            ) from e
        raise OutputError(f"cannot write {out}: {e.strerror or e}") from e
    except BaseException:
        _discard(tmp)
        raise
    return WrittenBundle(
        path=out,
        size=sink.size,
        sha256=sink.hash.hexdigest(),
        bundle_id=bundle_id(manifest_bytes),
        artifacts=len(manifest.artifacts),
        artifact_bytes=manifest.total_size,
    )


def _write_members(
    z: BinaryIO,
    manifest: Lock,
    head: tuple[bytes, bytes],
    files: Mapping[str, Path],
    progress: StreamProgress | None,
) -> None:
    """The tar stream into ``z``: the manifest and signature members (``head``), every
    artifact in manifest order (checked as it is copied), the end-of-archive blocks."""
    total = manifest.total_size
    done = 0
    written = 0
    for name, data in zip((MANIFEST_NAME, SIGNATURE_NAME), head, strict=True):
        z.write(tarfmt.file_header(name, len(data), manifest.mtime))
        z.write(data + b"\0" * tarfmt.padding(len(data)))
        written += tarfmt.BLOCK + len(data) + tarfmt.padding(len(data))
    for art in manifest.artifacts:
        z.write(tarfmt.file_header(art.path, art.size, manifest.mtime))
        done = _copy_checked(art, files[art.path], z, done, total, progress)
        z.write(b"\0" * tarfmt.padding(art.size))
        written += tarfmt.BLOCK + art.size + tarfmt.padding(art.size)
    z.write(tarfmt.end_padding(written))


def _copy_checked(
    art: Artifact,
    src_path: Path,
    z: BinaryIO,
    done: int,
    total: int,
    progress: StreamProgress | None,
) -> int:
    """Copy one artifact into the archive, hashing it; ChecksumMismatch if its size or
    sha256 is not the manifest's. Returns the bytes done so far in all."""
    h = hashlib.sha256()
    copied = 0
    with open(src_path, "rb") as src:
        while copied <= art.size:
            chunk = src.read(CHUNK)
            if not chunk:
                break
            copied += len(chunk)
            if copied > art.size:
                break
            h.update(chunk)
            z.write(chunk)
            done += len(chunk)
            if progress:
                progress(done, total)
    if copied != art.size or h.hexdigest() != art.sha256:
        raise ChecksumMismatch(
            f"{src_path} no longer matches the lock for {art.name} "
            f"(expected {art.size} bytes sha256 {art.sha256[:16]}...)",
            "clear the cache entry or run create again",
        )
    return done


def _discard(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
