"""Follow the structure of a zstd stream as its bytes pass by.

The zstandard module's streaming reader stops quietly at the end of its input, even
when the frame is cut short, and never says whether bytes followed the frame. A bundle
is exactly one complete zstd frame, so the reader feeds every compressed byte through a
:class:`FrameWalker` too. It reads only headers (frame header, 3-byte block headers,
the checksum) and skips block contents by their declared size, so it costs almost
nothing and needs no second pass over the file.
"""

from __future__ import annotations

_MAGIC = b"\x28\xb5\x2f\xfd"


class ZstdFrameError(ValueError):
    """The bytes are not exactly one complete zstd frame."""


class FrameWalker:
    """Incremental checker that the fed bytes form exactly one complete zstd frame."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._need = 4
        self._state = "magic"
        self._skip = 0
        self._checksum = False
        self.consumed = 0
        self.done = False

    def feed(self, data: bytes) -> None:
        """Consume more bytes; raises ZstdFrameError as soon as they cannot be valid."""
        pos = 0
        n = len(data)
        self.consumed += n
        while pos < n:
            if self._skip:
                take = min(self._skip, n - pos)
                self._skip -= take
                pos += take
                if not self._skip:
                    self._after_block_content()
                continue
            if self.done:
                raise ZstdFrameError(
                    f"{n - pos} unexpected bytes follow the end of the zstd stream"
                )
            take = min(self._need - len(self._buf), n - pos)
            self._buf += data[pos : pos + take]
            pos += take
            if len(self._buf) == self._need:
                self._advance()

    def finish(self) -> None:
        """Raise ZstdFrameError unless a complete frame was seen."""
        if self.consumed == 0:
            raise ZstdFrameError("the file is empty")
        if not self.done:
            raise ZstdFrameError("the zstd stream is truncated (the file is incomplete)")

    # -- state machine ---------------------------------------------------------------
    def _advance(self) -> None:
        buf = bytes(self._buf)
        self._buf.clear()
        if self._state == "magic":
            if buf != _MAGIC:
                raise ZstdFrameError("not a zstd file (bad magic number)")
            self._expect("descriptor", 1)
        elif self._state == "descriptor":
            fhd = buf[0]
            if fhd & 0x08:
                raise ZstdFrameError("zstd frame header has a reserved bit set")
            single_segment = bool(fhd & 0x20)
            self._checksum = bool(fhd & 0x04)
            fcs_flag = fhd >> 6
            fcs_size = (1 if single_segment else 0) if fcs_flag == 0 else (2, 4, 8)[fcs_flag - 1]
            dict_size = (0, 1, 2, 4)[fhd & 0x03]
            window = 0 if single_segment else 1
            self._expect("header-rest", window + dict_size + fcs_size)
        elif self._state == "header-rest":
            self._expect("block", 3)
        elif self._state == "block":
            header = int.from_bytes(buf, "little")
            self._last = bool(header & 1)
            block_type = (header >> 1) & 0x03
            size = header >> 3
            if block_type == 3:
                raise ZstdFrameError("zstd stream holds a reserved block type (corrupt)")
            self._skip = 1 if block_type == 1 else size
            if not self._skip:
                self._after_block_content()
            else:
                self._state = "content"
        elif self._state == "checksum":
            self._finish_frame()

    def _expect(self, state: str, need: int) -> None:
        self._state = state
        self._need = need
        if need == 0:
            self._advance()

    def _after_block_content(self) -> None:
        if not self._last:
            self._expect("block", 3)
        elif self._checksum:
            self._expect("checksum", 4)
        else:
            self._finish_frame()

    def _finish_frame(self) -> None:
        self.done = True
        self._state = "done"
        self._need = 0
