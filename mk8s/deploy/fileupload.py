"""Files a plan sends to a node, as values: where from, where to, what they must hash to.

A stage step carries :class:`FileUpload` values beside its commands; ``--dry-run``, logs
and the audit log print ``display()``, which never shows secret content (only its size
and hash). The engine sends them (:mod:`mk8s.deploy.engine.uploads`).
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mk8s.files import sha256_file

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class FileUpload:
    """A file the plan sends to a node: where from, where to, what it must hash to.

    ``source`` is a local path or the bytes themselves; ``secret`` content is never
    shown (``display()`` and ``repr()`` only give size and hash). Constructing one
    raises ValueError for a relative remote path or a malformed sha256.
    """

    source: Path | bytes = field(repr=False)
    remote_path: str
    sha256: str
    size: int
    mode: int = 0o644
    secret: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        if not posixpath.isabs(self.remote_path):
            raise ValueError(f"remote path must be absolute: {self.remote_path!r}")
        if not _SHA256.match(self.sha256):
            raise ValueError(f"not a lower-case hex sha256: {self.sha256!r}")

    @classmethod
    def from_bytes(
        cls, data: bytes, remote_path: str, *, mode: int = 0o644, secret: bool = False, **kw: Any
    ) -> FileUpload:
        """An upload of in-memory content; hash and size are computed here."""
        return cls(
            source=bytes(data),
            remote_path=remote_path,
            sha256=hashlib.sha256(data).hexdigest(),
            size=len(data),
            mode=mode,
            secret=secret,
            **kw,
        )

    @classmethod
    def from_path(
        cls,
        path: str | Path,
        remote_path: str,
        *,
        mode: int = 0o644,
        sha256: str | None = None,
        **kw: Any,
    ) -> FileUpload:
        """An upload of a local file; pass ``sha256`` when known (a manifest pins it)
        to avoid reading the file here. Raises OSError if the file cannot be read."""
        p = Path(path)
        size = p.stat().st_size
        if sha256 is None:
            with p.open("rb") as f:
                sha256, _ = sha256_file(f)
        return cls(source=p, remote_path=remote_path, sha256=sha256, size=size, mode=mode, **kw)

    def content(self) -> bytes:
        """The bytes to send (reads a path source; raises OSError if unreadable)."""
        return self.source if isinstance(self.source, bytes) else self.source.read_bytes()

    def display(self) -> str:
        """``upload SOURCE -> REMOTE (0644, N bytes, sha256 PREFIX)``; secret-safe."""
        if isinstance(self.source, bytes):
            src = f"<{'secret ' if self.secret else ''}{self.size} bytes>"
        else:
            src = str(self.source)
        return (
            f"upload {src} -> {self.remote_path}"
            f" ({self.mode:04o}, {self.size} bytes, sha256 {self.sha256[:16]})"
        )

    def __str__(self) -> str:
        return self.display()
