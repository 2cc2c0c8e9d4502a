"""Split a bundle into numbered parts for size-limited media, and join them again.

Neither re-signs the bundle: the parts are its exact bytes cut at ``part_size``, and
joining is ``cat``. :func:`split_bundle` writes the parts and the parts index (see
:mod:`mk8s.bundle.format.parts`) under temporary names and renames them only when all are
complete, so a failure leaves nothing behind; :func:`join_parts` checks every part's
hash and the whole bundle's sha256 while it copies, and writes the bundle atomically.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from mk8s.bundle.format.keys import Signature
from mk8s.bundle.format.parts import (
    CHUNK,
    INDEX_SUFFIX,
    MAX_PARTS,
    SIG_SUFFIX,
    Part,
    PartRejected,
    PartsIndex,
    load_index,
    locate,
    part_name,
    part_paths,
)
from mk8s.bundle.format.partstream import PartsReader
from mk8s.errors import InputError, OutputError
from mk8s.files import open_regular


@dataclass(frozen=True)
class SplitResult:
    index_path: Path
    signature_path: Path
    part_paths: tuple[Path, ...]
    index: PartsIndex
    signed: bool

    def remove(self) -> None:
        for p in (*self.part_paths, self.index_path, self.signature_path):
            p.unlink(missing_ok=True)


def outputs(bundle: Path, count: int | None = None) -> list[Path]:
    """The files a split of ``bundle`` writes (parts first: ``count`` of them, or every
    existing numbered part when None), then the index and its signature."""
    folder, name = bundle.parent, bundle.name
    if count is None:
        prefix = name + "."
        found = folder.glob(f"{name}.*") if folder.is_dir() else iter(())
        parts = [f for f in found if f.name[len(prefix) :].isdigit()]
    else:
        parts = [folder / part_name(name, i) for i in range(count)]
    return [*sorted(parts), folder / (name + INDEX_SUFFIX), folder / (name + SIG_SUFFIX)]


def check_free(bundle: Path, *, force: bool = False) -> None:
    """OutputError if a split of ``bundle`` would replace files (without ``force``) or
    its directory is missing."""
    if not bundle.parent.is_dir():
        raise OutputError(f"directory {bundle.parent} does not exist", "create it or choose -o")
    if force:
        return
    taken = [p for p in outputs(bundle) if p.exists() or p.is_symlink()]
    if taken:
        raise OutputError(f"{taken[0]} already exists", "pass --force to replace it")


def split_bundle(
    src: Path,
    part_size: int,
    signature: Callable[[bytes], Signature],
    *,
    out: Path | None = None,
    force: bool = False,
) -> SplitResult:
    """Cut ``src`` into parts of ``part_size`` bytes named after ``out`` (default: next
    to ``src``, same name), write the index and its signature. ``src`` is left as is.

    InputError for more than 1000 parts; OutputError if outputs exist (without
    ``force``) or cannot be written: then nothing new is left behind.
    """
    if src.name.endswith(INDEX_SUFFIX) or re.search(r"\.\d{3}$", src.name):
        raise InputError(
            f"{src} is a part or index of a split bundle",
            "join it first (`mk8s bundle join`), then split the bundle",
        )
    target = out or src
    check_free(target, force=force)
    with open_regular(src, what="bundle", fix="give the bundle file") as f:
        total = os.fstat(f.fileno()).st_size
        count = max(1, -(-total // part_size))
        if total == 0:
            raise InputError(f"{src} is empty, not a bundle")
        if count > MAX_PARTS:
            raise InputError(
                f"--split {part_size} would cut {src.name} into {count} parts; at most "
                f"{MAX_PARTS} are allowed",
                "choose a larger part size",
            )
        paths = outputs(target, count)
        tag = secrets.token_hex(4)
        temps = [p.with_name(f".{p.name}.{tag}.tmp") for p in paths]
        try:
            whole = hashlib.sha256()
            parts = [
                _copy_part(f, temps[i], part_name(target.name, i), part_size, whole)
                for i in range(count)
            ]
            index = PartsIndex(target.name, total, whole.hexdigest(), part_size, tuple(parts))
            data = index.to_bytes()
            _write(temps[-2], data)
            sig = signature(data)
            _write(temps[-1], sig.to_bytes())
            if force:  # stale parts of an earlier split with more parts would be "extra"
                for stale in outputs(target)[:-2]:
                    if stale not in paths:
                        stale.unlink(missing_ok=True)
            for tmp, final in zip(temps, paths, strict=True):
                os.replace(tmp, final)
        except OSError as e:
            _discard(temps)
            raise _output_error(e, f"the parts of {target.name}") from e
        except BaseException:
            _discard(temps)
            raise
    return SplitResult(paths[-2], paths[-1], tuple(paths[:-2]), index, sig.signed)


def _copy_part(src: BinaryIO, tmp: Path, name: str, size: int, whole: hashlib._Hash) -> Part:
    h = hashlib.sha256()
    left = size
    written = 0
    with open(tmp, "xb") as dst:
        while left > 0:
            data = src.read(min(CHUNK, left))
            if not data:
                break
            h.update(data)
            whole.update(data)
            dst.write(data)
            left -= len(data)
            written += len(data)
        dst.flush()
        os.fsync(dst.fileno())
    return Part(name, written, h.hexdigest())


def _write(path: Path, data: bytes) -> None:
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _discard(paths: list[Path]) -> None:
    for p in paths:
        with contextlib.suppress(OSError):
            p.unlink()


def _output_error(e: OSError, what: str) -> OutputError:
    if e.errno == errno.ENOSPC:
        return OutputError(
            f"no space left on the device writing {what}",
            "free some space or write them elsewhere with -o",
        )
    return OutputError(f"cannot write {what}: {e.strerror or e}")


@dataclass(frozen=True)
class JoinResult:
    path: Path
    size: int
    sha256: str
    parts: int


def join_parts(path: Path, out: Path | None = None, *, force: bool = False) -> JoinResult:
    """Concatenate the parts of the split bundle ``path`` names into one bundle file.

    Every part's size and sha256 and the whole bundle's sha256 are checked against the
    index while copying (PartRejected, exit 3, naming the part); the output appears
    only when all matched. This checks integrity, not origin: verify the result.
    """
    index_path = locate(path)
    if index_path is None:
        raise InputError(
            f"{path} is not a split bundle (no parts index)",
            "give the .parts file or the first part (.000)",
        )
    index, _ = load_index(index_path)
    target = out if out is not None and not out.is_dir() else None
    if target is None:
        target = (out or index_path.parent) / index.bundle_name
    if not force and (target.exists() or target.is_symlink()):
        raise OutputError(f"{target} already exists", "pass --force to replace it, or -o")
    reader = PartsReader(index, part_paths(index_path, index), hash_parts=True)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    whole = hashlib.sha256()
    try:
        with reader, open(tmp, "xb") as dst:
            while data := reader.read(CHUNK):
                whole.update(data)
                dst.write(data)
            dst.flush()
            os.fsync(dst.fileno())
        if whole.hexdigest() != index.bundle_sha256:
            raise PartRejected(
                f"the joined parts hash to {whole.hexdigest()}, the parts index says "
                f"{index.bundle_sha256}",
                "split the bundle again from the original",
            )
        os.replace(tmp, target)
    except OSError as e:
        _discard([tmp])
        raise _output_error(e, str(target)) from e
    except BaseException:
        _discard([tmp])
        raise
    return JoinResult(target, index.bundle_size, index.bundle_sha256, len(index.parts))
