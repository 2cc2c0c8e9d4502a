"""Local files mk8s reads and writes: regular files only, size-capped, written safely.

Everything a user or an attacker hands mk8s (keys, locks, cluster files, bundles,
``--file`` inputs) is opened through :func:`open_regular`, so a FIFO, a device such as
``/dev/zero`` or a directory gets a clear one-line error instead of a hang or an
out-of-memory, and :func:`read_regular` never reads more than its cap.

Everything mk8s writes goes through :func:`atomic_write` (a temporary sibling created
exclusively, never following a symlink, then renamed) or :func:`open_append_private`
(an append-only file that is never a symlink and is created 0600).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast

from mk8s.errors import InputError, Mk8sError

KIB = 1 << 10
MIB = 1 << 20


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def open_regular(
    path: Path,
    *,
    what: str,
    error: type[Mk8sError] = InputError,
    fix: str = "check the path",
    missing: str | None = None,
) -> BinaryIO:
    """Open ``path`` for reading if it is a regular file (symlinks to one are fine).

    Raises ``error`` (an InputError, exit 2) naming ``what`` when it is missing,
    unreadable, or a directory, FIFO, device or socket. A FIFO is opened non-blocking,
    so no writer is waited for.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError as e:
        raise error(missing or f"{what} {path} does not exist", fix) from e
    except IsADirectoryError as e:
        raise error(f"{what} {path} is a directory, not a file", fix) from e
    except OSError as e:
        raise error(f"cannot read {what} {path}: {e.strerror or e}", fix) from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{what} {path} is {_kind(st.st_mode)}, not a regular file", fix)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(
    path: Path,
    *,
    what: str,
    max_size: int,
    error: type[Mk8sError] = InputError,
    fix: str = "check the path",
    missing: str | None = None,
    too_large: type[Mk8sError] | None = None,
) -> bytes:
    """The bytes of a regular file of at most ``max_size`` bytes, else ``error``
    (``too_large`` instead, if given, for a file over the cap: a damaged file that
    came with a bundle is a rejected bundle, not a bad path)."""
    with open_regular(path, what=what, error=error, fix=fix, missing=missing) as f:
        try:
            data = f.read(max_size + 1)
        except OSError as e:
            raise error(f"cannot read {what} {path}: {e.strerror or e}", fix) from e
    if len(data) > max_size:
        raise (too_large or error)(
            f"{what} {path} is larger than {max_size} bytes; this cannot be a {what}", fix
        )
    return data


class BoundedReader(io.RawIOBase):
    """A readable stream over ``raw`` (a decompressor) that raises ``error()`` once more
    than ``limit`` bytes came out of it: a decompression bomb costs at most ``limit``
    bytes of work, whatever its header claims. ``left`` is what may still be read."""

    def __init__(self, raw: BinaryIO, limit: int, error: Callable[[], Exception]) -> None:
        super().__init__()
        self.raw = raw
        self.left = limit
        self._error = error

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.raw.read(len(buffer))
        self.left -= len(data)
        if self.left < 0:
            raise self._error()
        buffer[: len(data)] = data
        return len(data)


def sha256_file(f: BinaryIO) -> tuple[str, int]:
    """(sha256 hex, size) of everything left in an open binary file."""
    digest = hashlib.file_digest(cast(Any, f), "sha256")
    return digest.hexdigest(), f.tell()


def _tmp_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


@contextlib.contextmanager
def atomic_writer(path: Path, *, mode: int = 0o644) -> Iterator[BinaryIO]:
    """A file to write that replaces ``path`` atomically when the block ends; on any
    exception it is removed (nothing is left behind) and the exception goes on.

    The temporary sibling is created with O_EXCL|O_NOFOLLOW and the final mode, so a
    symlink planted at that name is never followed and no reader sees a looser mode.
    """
    tmp = _tmp_sibling(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically; raises OSError (nothing is left behind)."""
    with atomic_writer(path, mode=mode) as f:
        f.write(data)


def open_append_private(path: Path) -> BinaryIO:
    """Open ``path`` for appending, created 0600; refuses a symlink (raises OSError).

    An existing file must be a regular file owned by this user: a log in a shared
    place (``/tmp``) planted by someone else is refused, not written into.
    """
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
            raise PermissionError(f"{path} is not a regular file of this user")
        return os.fdopen(fd, "ab")
    except BaseException:
        os.close(fd)
        raise


__all__ = [
    "KIB",
    "MIB",
    "BoundedReader",
    "atomic_write",
    "atomic_writer",
    "open_append_private",
    "open_regular",
    "read_regular",
    "sha256_file",
]
