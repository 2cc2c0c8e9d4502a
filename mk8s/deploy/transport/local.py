"""LocalTransport: commands with ``sh -c`` and file copies on this machine."""

from __future__ import annotations

import contextlib
import getpass
import os
import stat
import subprocess
import time
from pathlib import Path
from typing import IO

from mk8s.callbacks import BytesSent
from mk8s.deploy.command import Command
from mk8s.deploy.transport.base import RemoteStat, Result, Transport, chunks, get_with_sudo
from mk8s.errors import RemoteCommandError


class LocalTransport(Transport):
    """Runs commands with ``sh -c`` on this machine and copies files locally."""

    def __init__(self, name: str = "localhost", user: str | None = None) -> None:
        if user is None:
            user = "root" if os.geteuid() == 0 else getpass.getuser()
        super().__init__(name, user)

    def connect(self) -> None:
        pass

    def close(self) -> None:
        pass

    def _execute(self, cmd: Command) -> Result:
        start = time.monotonic()
        proc = subprocess.Popen(
            ["/bin/sh", "-c", cmd.render()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # so a timeout can kill the whole process group
        )
        try:
            out, err = proc.communicate(cmd.stdin_bytes() or b"", timeout=cmd.timeout)
        except subprocess.TimeoutExpired as e:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            proc.communicate()
            raise self._timed_out(cmd) from e
        return Result(
            proc.returncode,
            out.decode("utf-8", "replace"),
            err.decode("utf-8", "replace"),
            time.monotonic() - start,
        )

    def put(
        self,
        source: Path | bytes,
        remote_path: str,
        *,
        mode: int = 0o644,
        progress: BytesSent | None = None,
        offset: int = 0,
    ) -> int:
        target = Path(remote_path)
        try:
            f: IO[bytes]
            if offset:
                have = target.stat().st_size
                if have < offset:
                    raise RemoteCommandError(
                        f"{self.name}: cannot resume {remote_path} at byte {offset}:"
                        f" it has only {have}",
                        "upload it again from the start",
                    )
                f = target.open("r+b")
                f.truncate(offset)
                f.seek(offset)
            else:
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
                f = os.fdopen(fd, "wb")
            with f:
                os.chmod(target, mode)
                sent = 0
                for chunk in chunks(source, offset, 1 << 20):
                    f.write(chunk)
                    sent += len(chunk)
                    if progress:
                        progress(len(chunk))
            return sent
        except OSError as e:
            raise RemoteCommandError(
                f"{self.name}: cannot write {remote_path}: {e.strerror or e}",
                "check that the directory exists and is writable",
            ) from e

    def get(self, remote_path: str, *, sudo: bool = False) -> bytes:
        if sudo and self.user != "root":
            return get_with_sudo(self, remote_path)
        try:
            return Path(remote_path).read_bytes()
        except OSError as e:
            raise RemoteCommandError(
                f"{self.name}: cannot read {remote_path}: {e.strerror or e}", None
            ) from e

    def stat(self, remote_path: str) -> RemoteStat | None:
        try:
            st = os.stat(remote_path)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise RemoteCommandError(
                f"{self.name}: cannot stat {remote_path}: {e.strerror or e}", None
            ) from e
        return RemoteStat(
            st.st_size, stat.S_IMODE(st.st_mode), st.st_mtime, stat.S_ISDIR(st.st_mode)
        )
