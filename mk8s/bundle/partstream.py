"""Read a split bundle's parts as one stream, checking each part as it goes by.

:func:`open_bundle` is what the bundle reader opens: the file itself for a plain
bundle, or a :class:`PartsReader` over the parts a parts index lists. The reader then
decompresses and verifies exactly as it does a single file (one pass, bounded memory):
the parts reader only adds a per-part sha256, checked when the part's last byte is
read and before that byte is handed on, so a damaged or reordered part is named at
its end. Missing, extra and resized parts are named before the first byte is read.

When the reader rejects the bundle in the middle of a part (a zstd error or a member
hash that differs), the damage is in that part: on the way out the rest of the part
is hashed and, if it differs from the index, the error names the part instead.
"""

from __future__ import annotations

import hashlib
import io
import threading
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, cast

from mk8s.bundle.parts import AGAIN, PartRejected, PartsIndex, load_index, locate, part_paths
from mk8s.errors import BundleRejected
from mk8s.files import open_regular

CHUNK = 1 << 20


class PartsReader(io.RawIOBase):
    """The concatenated parts, read front to back, each part's sha256 checked."""

    def __init__(self, index: PartsIndex, paths: list[Path]) -> None:
        super().__init__()
        self.index = index
        self.paths = paths
        self._next = 0  # the part to open next
        self._file: BinaryIO | None = None
        self._left = 0
        self._hash = hashlib.sha256()
        self._lock = threading.Lock()
        self._failed: PartRejected | None = None  # a part found bad, for blame()

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        with self._lock:
            while True:
                if self._file is None:
                    if self._next >= len(self.paths):
                        return b""
                    self._open_next()
                    continue
                want = size if size and size > 0 else CHUNK
                data = self._file.read(min(want, self._left))
                if not data:
                    self._truncated()
                self._hash.update(data)
                self._left -= len(data)
                if self._left == 0:
                    self._finish()
                return data

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        memoryview(buffer)[: len(data)] = data
        return len(data)

    def _open_next(self) -> None:
        i = self._next
        part = self.index.parts[i]
        self._file = open_regular(self.paths[i], what="part", fix=AGAIN)
        self._left = part.size
        self._hash = hashlib.sha256()
        self._next += 1

    def _current(self) -> str:
        return self.index.parts[self._next - 1].name

    def _truncated(self) -> None:
        part = self.index.parts[self._next - 1]
        self._failed = PartRejected(
            f"part {part.name} ended {self._left} bytes early (it was truncated while "
            f"being read; the parts index says {part.size} bytes)",
            AGAIN,
        )
        raise self._failed

    def _finish(self) -> None:
        """The current part was read whole: its hash must be the index's."""
        assert self._file is not None
        self._file.close()
        self._file = None
        part = self.index.parts[self._next - 1]
        got = self._hash.hexdigest()
        if got != part.sha256:
            self._failed = PartRejected(
                f"part {part.name} is damaged or out of order: its sha256 is {got}, "
                f"the parts index says {part.sha256}",
                AGAIN,
            )
            raise self._failed

    def blame(self) -> PartRejected | None:
        """After the reader failed: hash the rest of the current part; the part's
        error if it differs from the index, else None."""
        with self._lock:
            if self._failed is not None:  # read ahead found it before the reader failed
                return self._failed
            if self._file is None:
                return None
            try:
                while self._left > 0:
                    data = self._file.read(min(CHUNK, self._left))
                    if not data:
                        self._truncated()
                    self._hash.update(data)
                    self._left -= len(data)
                self._finish()
            except PartRejected as e:
                return e
            return None

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
        super().close()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if isinstance(exc, BundleRejected) and not isinstance(exc, PartRejected):
                named = self.blame()
                if named is not None:
                    raise named from exc
        finally:
            self.close()


def open_parts(path: Path) -> BinaryIO | None:
    """The parts of the split bundle ``path`` names as one stream; None for a plain
    bundle (``path`` is then an ordinary file for the caller to open).

    ``path`` may be the parts index, a part, or the unsplit name when only the parts
    exist. Every part must be present with its size and no extra part may lie beside
    them (PartRejected, exit 3, naming the part). The index's signature is checked by
    :func:`mk8s.bundle.parts.check_index`, where the trusted keys are known.
    """
    index_path = locate(path)
    if index_path is None:
        return None
    index, _ = load_index(index_path)
    return cast(BinaryIO, PartsReader(index, part_paths(index_path, index)))
