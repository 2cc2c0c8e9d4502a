"""zstd for deltas: read an archive's content, and make upstream's exact bytes again.

RKE2's image tarballs are one zstd frame written by ``zstd -T0 -16 -f --long=25``
(rancher/rke2 scripts/package-images). zstd's output is a function of the input, the
parameters and the library version (and not of the number of worker threads), so a
delta can carry an archive as its decompressed content and compress it again, *if*
this zstd reproduces upstream's bytes. :func:`find_parameters` tries RKE2's
parameters (and zstd's defaults) against the upstream file, stopping at the first
byte that differs; the delta records what reproduced the bytes, and the other side
checks the result against upstream's sha256 all the same.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

import zstandard

from mk8s.bundle.delta.model import Zstd

CHUNK = 1 << 20
MAGIC = b"\x28\xb5\x2f\xfd"


def library() -> str:
    """The zstd library version this mk8s compresses with, e.g. ``1.5.7``."""
    return ".".join(str(n) for n in zstandard.ZSTD_VERSION)


def candidates(checksum: bool, content_size: bool) -> list[Zstd]:
    """Parameters to try, most likely first: RKE2's (rancher/rke2 scripts/package-images:
    ``zstd -T0 -16 --long=25``), then zstd's command-line defaults (level 3, and 19)."""
    out = []
    for level, window, ldm, mt in (
        (16, 25, True, True),
        (16, 25, True, False),
        (3, 0, False, False),
        (19, 0, False, False),
        (3, 0, False, True),
    ):
        out.append(Zstd(level, window, ldm, mt, checksum, content_size, library()))
    return out


def compressor(z: Zstd) -> zstandard.ZstdCompressor:
    """A compressor set as the zstd command line sets itself for ``z``: the level, and
    only the parameters given on top of it (the rest follow the level and input size)."""
    kwargs: dict[str, int] = {}
    if z.window_log:
        kwargs["window_log"] = z.window_log
    if z.long_distance:
        kwargs["enable_ldm"] = 1
    params = zstandard.ZstdCompressionParameters(
        compression_level=z.level,
        threads=max(1, os.cpu_count() or 1) if z.multithreaded else 0,
        write_checksum=int(z.checksum),
        write_content_size=int(z.content_size),
        write_dict_id=0,
        **kwargs,
    )
    return zstandard.ZstdCompressor(compression_params=params)


def frame_info(f: BinaryIO) -> tuple[int, bool, bool] | None:
    """(length, checksum flag, content-size flag) of the zstd frame ``f`` starts with,
    or None when it does not start with one (or it is cut short). Reads only headers:
    block contents are skipped by their declared sizes."""
    f.seek(0)
    head = f.read(6)
    if len(head) < 5 or head[:4] != MAGIC:
        return None
    fhd = head[4]
    single = bool(fhd & 0x20)
    fcs_flag = fhd >> 6
    fcs = (1 if single else 0) if fcs_flag == 0 else (2, 4, 8)[fcs_flag - 1]
    pos = 5 + (0 if single else 1) + (0, 1, 2, 4)[fhd & 0x03] + fcs
    size = os.fstat(f.fileno()).st_size
    while True:
        f.seek(pos)
        raw = f.read(3)
        if len(raw) < 3:
            return None
        header = int.from_bytes(raw, "little")
        btype, bsize = (header >> 1) & 3, header >> 3
        if btype == 3:
            return None
        pos += 3 + (1 if btype == 1 else bsize)
        if header & 1:
            break
    pos += 4 if fhd & 0x04 else 0
    return (pos, bool(fhd & 0x04), fcs_flag != 0 or single) if pos <= size else None


def content(f: BinaryIO) -> zstandard.ZstdDecompressionReader:
    """The decompressed bytes of the zstd frame ``f`` starts with (a bounded reader)."""
    f.seek(0)
    return zstandard.ZstdDecompressor().stream_reader(
        f, read_size=CHUNK, read_across_frames=False, closefd=False
    )


class _Differs(Exception):
    pass


class _Compare:
    """A write-only sink that fails at the first byte that differs from ``ref``."""

    def __init__(self, ref: BinaryIO, length: int) -> None:
        self.ref = ref
        self.left = length

    def write(self, data: bytes | memoryview) -> int:
        n = len(data)
        if n > self.left or self.ref.read(n) != bytes(data):
            raise _Differs
        self.left -= n
        return n

    def flush(self) -> None:
        pass


def reproduces(path: Path, z: Zstd, content_size: int, frame_length: int) -> bool:
    """Whether compressing the content of ``path``'s first frame with ``z`` gives that
    frame's bytes exactly (stops at the first difference)."""
    with open(path, "rb") as src, open(path, "rb") as ref:
        cmp = _Compare(ref, frame_length)
        try:
            w = compressor(z).stream_writer(cmp, size=content_size, closefd=False)  # type: ignore[arg-type]
            with w:
                reader = content(src)
                while chunk := reader.read(CHUNK):
                    w.write(chunk)
        except (_Differs, zstandard.ZstdError):  # closing a frame cut short fails too
            return False
        return cmp.left == 0


def find_parameters(path: Path, content_size: int) -> tuple[Zstd, int] | None:
    """The first candidate that reproduces ``path``'s zstd frame, with the frame's
    length; None when none does (or ``path`` is not zstd)."""
    with open(path, "rb") as f:
        info = frame_info(f)
    if info is None:
        return None
    length, checksum, has_size = info
    for z in candidates(checksum, has_size):
        if reproduces(path, z, content_size, length):
            return z, length
    return None


def compress(
    z: Zstd, content_size: int, pieces: Iterable[bytes], out: Callable[[bytes], object]
) -> None:
    """Compress ``pieces`` (exactly ``content_size`` bytes) with ``z`` into ``out``."""

    class _Sink:
        def write(self, data: bytes | memoryview) -> int:
            out(bytes(data))
            return len(data)

        def flush(self) -> None:
            pass

    # Not a ``with`` block: on the way out of one, a failed piece (a blob that is not
    # its sha256, a full disk) would make the writer end a frame that came up short, and
    # zstd's "Src size is incorrect" would hide the failure itself.
    w = compressor(z).stream_writer(_Sink(), size=content_size, closefd=False)  # type: ignore[arg-type]
    for piece in pieces:
        w.write(piece)
    w.close()  # type: ignore[no-untyped-call]  # ends the frame


#: A raw block holds at most this much (zstd's block size limit and the window below).
RAW_BLOCK = 1 << 17
# Frame header of a raw-block frame: an 8-byte content size, no checksum, no dictionary,
# and a 128 KiB window (Window_Descriptor 0x38: exponent 7), which every raw block fits.
_RAW_FHD = bytes([0xC0])
_RAW_WINDOW = bytes([0x38])


def store(content_size: int, pieces: Iterable[bytes], out: Callable[[bytes], object]) -> None:
    """Write ``pieces`` (exactly ``content_size`` bytes) as one zstd frame of raw blocks:
    the same bytes from any zstd version (no compression happens), read by every zstd
    decoder. For archives whose upstream compression this zstd cannot reproduce."""
    out(MAGIC + _RAW_FHD + _RAW_WINDOW + content_size.to_bytes(8, "little"))
    left = content_size
    buf = bytearray()
    for piece in pieces:
        buf += piece
        while len(buf) >= RAW_BLOCK and left > RAW_BLOCK:  # not the last block yet
            _raw_block(bytes(buf[:RAW_BLOCK]), last=False, out=out)
            del buf[:RAW_BLOCK]
            left -= RAW_BLOCK
    if len(buf) != left:
        raise ValueError(f"{content_size} bytes announced, {content_size - left + len(buf)} given")
    _raw_block(bytes(buf), last=True, out=out)


def stored_size(content_size: int) -> int:
    """The size of :func:`store`'s frame for ``content_size`` bytes."""
    blocks = max(1, -(-content_size // RAW_BLOCK))
    return len(MAGIC) + 2 + 8 + 3 * blocks + content_size


def _raw_block(data: bytes, *, last: bool, out: Callable[[bytes], object]) -> None:
    out((int(last) | len(data) << 3).to_bytes(3, "little") + data)


__all__ = [
    "compress",
    "content",
    "find_parameters",
    "frame_info",
    "library",
    "store",
    "stored_size",
]
