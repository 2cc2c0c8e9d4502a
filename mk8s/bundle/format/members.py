"""A bundle's tar members as the reader expects them, one at a time: the next member
must be the manifest's next name, a regular file with a safe relative path, within its
size limit; tar padding must be zeros (docs/format.md, "What verify checks")."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import zstandard

from mk8s.bundle.format import tarfmt
from mk8s.bundle.format.stream import Decompressed
from mk8s.bundle.format.zstdframe import ZstdFrameError
from mk8s.errors import BundleRejected


def reject_stream_error(e: BaseException, path: Path, where: str = "") -> BundleRejected:
    """A damaged zstd stream as the rejection naming the file (and ``where`` in it:
    e.g. "in the bundle head"); anything else is raised."""
    fix = "get the bundle again; the file was damaged or altered"
    if isinstance(e, ZstdFrameError):
        return BundleRejected(f"{path}: {e}", fix)
    if isinstance(e, zstandard.ZstdError):
        return BundleRejected(
            f"{path}: the zstd stream is corrupt{' ' + where if where else ''} ({e})", fix
        )
    raise e


def safe_name(name: str) -> bool:
    """A relative path without ``..`` or backslashes."""
    p = PurePosixPath(name)
    return bool(name) and not p.is_absolute() and ".." not in p.parts and "\\" not in name


def expect_member(
    stream: Decompressed, index: int, expected: str, size_limit: int | None = None
) -> tarfmt.Header:
    """The header of member ``index``, which must be ``expected``; BundleRejected naming
    what is wrong otherwise."""
    block = stream.read_exact(tarfmt.BLOCK)
    try:
        header = tarfmt.parse_header(block)
    except tarfmt.TarFormatError as e:
        raise BundleRejected(f"member {index} (expected {expected}): {e}") from e
    if header is None:
        raise BundleRejected(
            f"member {expected} is missing: the archive ends after {index - 1} members"
        )
    if not safe_name(header.name):
        raise BundleRejected(
            f"member {index} has an unsafe path {header.name!r} (absolute or with '..')"
        )
    if header.name.rstrip("/") != expected:
        raise BundleRejected(
            f"member {index}: expected {expected}, found {header.name!r} "
            "(a member was added, removed, renamed or reordered)"
        )
    if not header.is_file:
        raise BundleRejected(f"member {expected} is a {header.kind}, not a regular file")
    if header.name != expected:
        # GNU tar reads a regular member whose name ends in "/" as a directory: the
        # bytes checked here would not be the file an auditor extracts.
        raise BundleRejected(f"member {expected} is named {header.name!r}, like a directory")
    if size_limit is not None and header.size > size_limit:
        raise BundleRejected(f"member {expected} is {header.size} bytes, over {size_limit}")
    return header


def read_small(stream: Decompressed, header: tarfmt.Header) -> bytes:
    """A small member's bytes (its size was bounded by :func:`expect_member`)."""
    data = stream.read_exact(header.size)
    skip_padding(stream, header.name, header.size)
    return data


def skip_padding(stream: Decompressed, name: str, size: int) -> None:
    """Read the tar padding after ``size`` bytes; it must be zeros."""
    pad = stream.read_exact(tarfmt.padding(size))
    if pad.count(0) != len(pad):
        raise BundleRejected(f"member {name}: non-zero bytes hidden in the tar padding")


__all__ = ["expect_member", "read_small", "reject_stream_error", "safe_name", "skip_padding"]
