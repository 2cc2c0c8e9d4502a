"""The decompressed side of a bundle: a zstd stream read in bounded chunks.

:class:`Decompressed` runs zstandard in a worker thread (for verification) or inline
(for ``inspect``), hashing the compressed bytes and walking the zstd frame structure
as they pass, with a small queue between the threads so memory stays bounded.
"""

from __future__ import annotations

import contextlib
import hashlib
import queue
import threading
from collections.abc import Iterator
from typing import BinaryIO

import zstandard

from mk8s.bundle.format.zstdframe import FrameWalker

CHUNK = 1 << 20
QUEUE_DEPTH = 8


class Truncated(Exception):
    pass


class _Source:
    """The compressed file as zstandard reads it: hashed and structure-checked."""

    def __init__(self, raw: BinaryIO, *, check: bool) -> None:
        self.raw = raw
        self.check = check
        self.hash = hashlib.sha256()
        self.walker = FrameWalker()

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n if n and n > 0 else CHUNK)
        if data and self.check:
            self.hash.update(data)
            self.walker.feed(data)
        return data


_EOF = object()


class Decompressed:
    """Decompressed bytes, produced by a worker thread, consumed in bounded reads."""

    def __init__(self, raw: BinaryIO, *, threaded: bool) -> None:
        # The threaded (verifying) reader checks the whole file; the head reader
        # (inspect) stops early and so checks nothing about the rest.
        self.source = _Source(raw, check=threaded)
        self._reader = zstandard.ZstdDecompressor().stream_reader(
            self.source,  # type: ignore[arg-type]  # any object with read() will do
            read_size=CHUNK,
            read_across_frames=False,
        )
        self._buf = memoryview(b"")
        self._stop = threading.Event()
        self._queue: queue.Queue[object] = queue.Queue(QUEUE_DEPTH)
        self._thread: threading.Thread | None = None
        self._eof = False
        if threaded:
            self._thread = threading.Thread(target=self._produce, daemon=True)
            self._thread.start()

    # -- producer --------------------------------------------------------------------
    def _next_raw(self) -> bytes:
        chunk: bytes = self._reader.read(CHUNK)
        if chunk:
            return chunk
        # End of the frame (or of the input): anything left in the file must not exist.
        while self.source.read(CHUNK):
            pass
        if self.source.check:  # the head reader feeds the walker nothing
            self.source.walker.finish()
        return b""

    def _produce(self) -> None:
        try:
            while not self._stop.is_set():
                chunk = self._next_raw()
                if not self._put(chunk if chunk else _EOF):
                    return
                if not chunk:
                    return
        except BaseException as e:  # forwarded to the consumer, which re-raises it
            self._put(e)

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    # -- consumer --------------------------------------------------------------------
    def _fill(self) -> bool:
        if self._eof:
            return False
        if self._thread is None:
            item: object = self._next_raw() or _EOF
        else:
            item = self._queue.get()
        if item is _EOF:
            self._eof = True
            return False
        if isinstance(item, BaseException):
            self._eof = True
            raise item
        assert isinstance(item, bytes)
        self._buf = memoryview(item)
        return True

    def chunks(self, n: int) -> Iterator[memoryview]:
        """Yield exactly ``n`` bytes in pieces; raises Truncated if the data ends first."""
        left = n
        while left:
            if not self._buf and not self._fill():
                raise Truncated(n - left)
            piece = self._buf[:left]
            self._buf = self._buf[len(piece) :]
            left -= len(piece)
            yield piece

    def read_exact(self, n: int) -> bytes:
        return b"".join(self.chunks(n))

    def rest(self, limit: int) -> tuple[int, bool]:
        """Consume everything left; return (bytes, all zero) or raise if over ``limit``."""
        count = 0
        zero = True
        while self._buf or self._fill():
            piece = self._buf
            self._buf = memoryview(b"")
            count += len(piece)
            if zero and piece.tobytes().count(0) != len(piece):
                zero = False
            if count > limit:
                return count, zero
        return count, zero

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            with contextlib.suppress(queue.Empty):
                while True:
                    self._queue.get_nowait()
            self._thread.join(timeout=5)
