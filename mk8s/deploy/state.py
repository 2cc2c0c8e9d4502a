"""The local state of one cluster: ``.mk8s/<cluster name>/`` in the current directory.

It holds (mode 0700, every file 0600):

* ``lock``: held (flock) by the one mk8s process working on the cluster;
* ``token``: the join token when cluster.yaml gives none (generated with ``secrets``);
* ``journal.json``: what each node reached, for summaries and resumed runs;
* ``audit.jsonl``: one JSON line per remote command (masked), file sent, and exit code.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mk8s.errors import InputError, OutputError, StateLockedError
from mk8s.files import atomic_write, open_append_private, read_regular
from mk8s.untrusted import load_json

STATE_ROOT = ".mk8s"


def _private_file(path: Path, data: bytes) -> None:
    atomic_write(path, data, mode=0o600)


MAX_TOKEN_FILE = 64 << 10
MAX_JOURNAL = 16 << 20  # a line per node and step: a few KiB for 100 nodes


def read_token_file(path: Path) -> str:
    """The token on the first line of ``path`` (surrounding blanks dropped).

    Raises InputError (exit 2) when the file is not a regular file, is huge, is empty,
    or the token holds characters RKE2 cannot take (spaces, control characters).
    """
    fix = "put the token alone on the first line of the file"
    raw = read_regular(path, what="token file", max_size=MAX_TOKEN_FILE, fix=fix)
    first = raw.split(b"\n", 1)[0].strip()
    if not first:
        raise InputError(f"the token file {path} is empty", fix)
    if len(first) > 1024 or any(c < 0x21 or c > 0x7E for c in first):
        raise InputError(
            f"the token in {path} is longer than 1024 characters or holds spaces,"
            " control or non-ASCII characters",
            fix,
        )
    return first.decode("ascii")


class StateDir:
    """Access to ``.mk8s/<name>/``; created 0700 on first use."""

    def __init__(self, name: str, base: Path | None = None) -> None:
        self.name = name
        self.path = (base or Path.cwd()) / STATE_ROOT / name
        self._audit_lock = threading.Lock()
        self._lock_fd: int | None = None

    def ensure(self) -> Path:
        """Create the directory (0700) if needed; raises OutputError if it cannot."""
        try:
            self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(self.path.parent, 0o700)
            os.chmod(self.path, 0o700)
        except OSError as e:
            raise OutputError(
                f"cannot create the state directory {self.path}: {e.strerror}",
                f"make {self.path} a directory this user can write (move away what is there)",
            ) from e
        return self.path

    # -- lock --------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the cluster's lock; StateLockedError if another mk8s holds it."""
        self.ensure()
        fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise StateLockedError(
                f"another mk8s ({holder}) is already working on cluster {self.name}",
                "wait for it to finish; two deploys of one cluster at once would fight",
            ) from e
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    # -- token -------------------------------------------------------------------------
    @property
    def token_path(self) -> Path:
        return self.path / "token"

    def read_token(self) -> str | None:
        """The stored token, or None; InputError if the file is unusable."""
        if not self.token_path.exists():
            return None
        return read_token_file(self.token_path)

    def write_token(self, token: str) -> None:
        self.ensure()
        _private_file(self.token_path, (token + "\n").encode())

    @staticmethod
    def new_token() -> str:
        return secrets.token_hex(32)

    # -- journal -----------------------------------------------------------------------
    @property
    def journal_path(self) -> Path:
        return self.path / "journal.json"

    def read_journal(self) -> dict[str, Any]:
        """The journal, or an empty one when there is none or it is unusable (a FIFO,
        too large, not JSON, nested too deeply: mk8s then reads the nodes afresh)."""
        if not self.journal_path.exists():
            return {"nodes": {}}
        try:
            raw = read_regular(self.journal_path, what="journal", max_size=MAX_JOURNAL)
            data = load_json(raw, what="journal", error=InputError, max_bytes=MAX_JOURNAL)
        except InputError:
            return {"nodes": {}}
        return data if isinstance(data, dict) and "nodes" in data else {"nodes": {}}

    def write_journal(self, journal: dict[str, Any]) -> None:
        self.ensure()
        _private_file(
            self.journal_path, (json.dumps(journal, indent=2, sort_keys=True) + "\n").encode()
        )

    # -- audit -------------------------------------------------------------------------
    @property
    def audit_path(self) -> Path:
        return self.path / "audit.jsonl"

    def audit(self, **record: Any) -> None:
        """Append one record; every value must already be masked."""
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **record}
        line = json.dumps(record, sort_keys=True) + "\n"
        with self._audit_lock:
            self.ensure()
            with open_append_private(self.audit_path) as f:
                f.write(line.encode())
