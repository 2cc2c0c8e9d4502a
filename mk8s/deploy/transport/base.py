"""The Transport base: run commands and move files on one node, whatever the link.

A :class:`Transport` executes :class:`~mk8s.deploy.command.Command` values and knows
nothing of RKE2. Implementations: :class:`~mk8s.deploy.transport.ssh.SSHTransport`
(paramiko) and :class:`~mk8s.deploy.transport.local.LocalTransport` (this machine).
"""

from __future__ import annotations

import base64
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from mk8s.callbacks import BytesSent
from mk8s.deploy.command import Command, as_user
from mk8s.errors import RemoteCommandError

_SUDO_PASSWORD = ("sudo: a password is required", "sudo: a terminal is required")


@dataclass(frozen=True)
class Result:
    """What a command did. ``stdout``/``stderr`` are decoded UTF-8 (errors replaced)."""

    exit_code: int
    stdout: str
    stderr: str
    duration: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


@dataclass(frozen=True)
class RemoteStat:
    size: int
    mode: int  # permission bits only
    mtime: float
    is_dir: bool


class Transport(ABC):
    """Commands and files on one node. Use as a context manager or call close().

    ``name`` is the node's name in messages; ``user`` the login user (commands with
    ``sudo=True`` get ``sudo -n`` in front when it is not root).
    """

    def __init__(self, name: str, user: str) -> None:
        self.name = name
        self.user = user

    def __enter__(self) -> Transport:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abstractmethod
    def connect(self) -> None:
        """Open the connection (idempotent). Raises ConnectError / HostKeyError."""

    @abstractmethod
    def close(self) -> None:
        """Close the connection; never raises. connect() may be called again."""

    def run(self, cmd: Command) -> Result:
        """Run ``cmd`` (with ``sudo -n`` added for a non-root user) and return its Result.

        Raises RemoteCommandError when it times out (the channel is killed), when sudo
        needs a password, or when ``cmd.check`` is set and it exits non-zero; messages
        show the command masked and the last line of its stderr with secrets masked.
        Raises ConnectError when the connection is lost.
        """
        real = as_user(cmd, self.user)
        result = self._execute(real)
        if (
            cmd.sudo
            and self.user != "root"
            and result.exit_code == 1
            and any(s in result.stderr for s in _SUDO_PASSWORD)
        ):
            raise RemoteCommandError(
                f"user {self.user} cannot sudo without a password on {self.name}",
                f"add a NOPASSWD sudoers rule for {self.user}, or connect as root",
            )
        if cmd.check and result.exit_code != 0:
            tail = cmd.mask(result.stderr.strip() or result.stdout.strip()).splitlines()
            last = tail[-1] if tail else "(no output)"
            raise RemoteCommandError(
                f"{self.name}: `{real.display()}` exited {result.exit_code}: {last}",
                None,
            )
        return result

    def _timed_out(self, cmd: Command) -> RemoteCommandError:
        return RemoteCommandError(
            f"{self.name}: `{cmd.display()}` timed out after {cmd.timeout:g}s and was stopped",
            "check the node (load, disk, a hung service) and run again",
        )

    @abstractmethod
    def _execute(self, cmd: Command) -> Result:
        """Run the already user-adjusted command; raise only for timeout/connection."""

    @abstractmethod
    def put(
        self,
        source: Path | bytes,
        remote_path: str,
        *,
        mode: int = 0o644,
        progress: BytesSent | None = None,
        offset: int = 0,
    ) -> int:
        """Write ``source`` (a local file or bytes) to ``remote_path`` as the login user.

        The file gets ``mode`` before any byte is written. With ``offset`` > 0 the
        remote file is kept up to ``offset`` (cut there if longer) and the source's
        bytes from ``offset`` on are appended: resume after a cut transfer. Returns
        the number of bytes sent. Raises RemoteCommandError when the remote file
        cannot be written (directory missing, permission) or is shorter than
        ``offset``; OSError when the local file cannot be read.
        """

    @abstractmethod
    def get(self, remote_path: str, *, sudo: bool = False) -> bytes:
        """The content of ``remote_path``. ``sudo``: read it as root (``sudo -n cat``)
        when the login user is not root. Raises RemoteCommandError when it is missing
        or unreadable."""

    def download(self, remote_path: str, out: BinaryIO) -> int:
        """Stream ``remote_path`` (readable by the login user) into ``out``; the number
        of bytes. Memory stays bounded where the transport streams (SFTP); this
        default reads the whole file. Raises RemoteCommandError as :meth:`get`."""
        data = self.get(remote_path)
        out.write(data)
        return len(data)

    @abstractmethod
    def stat(self, remote_path: str) -> RemoteStat | None:
        """Size, mode and mtime of ``remote_path``, or None when it does not exist.
        Raises RemoteCommandError for any other failure (e.g. permission)."""

    def size(self, remote_path: str) -> int | None:
        """Size in bytes of ``remote_path``, or None when it does not exist."""
        st = self.stat(remote_path)
        return None if st is None else st.size


def chunks(source: Path | bytes, offset: int, size: int) -> Iterator[bytes | memoryview]:
    """Yield the source's bytes from ``offset`` in pieces of at most ``size``."""
    if isinstance(source, bytes | bytearray | memoryview):
        view = memoryview(source)[offset:]
        for i in range(0, len(view), size):
            yield view[i : i + size]
        return
    with Path(source).open("rb") as f:
        f.seek(offset)
        while chunk := f.read(size):
            yield chunk


def get_with_sudo(t: Transport, remote_path: str) -> bytes:
    # `base64` keeps arbitrary bytes intact through the text Result.
    r = t.run(Command.argv("base64", "-w0", remote_path, sudo=True, timeout=120.0))
    return base64.b64decode(r.stdout)
