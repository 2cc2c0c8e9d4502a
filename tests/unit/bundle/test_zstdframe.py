"""The zstd frame walker, pinned byte by byte: every header form, block type and limit.

Frames are built by hand (the walker reads only headers, so block contents can be any
bytes) and, where zstd itself must agree, by the real compressor. Each test fails on a
mutant of the check it names (see `make mutate`).
"""

from __future__ import annotations

import pytest
import zstandard

from mk8s.bundle.format.zstdframe import FrameWalker, ZstdFrameError

MAGIC = b"\x28\xb5\x2f\xfd"
RAW, RLE, COMPRESSED, RESERVED = 0, 1, 2, 3


def block(kind: int, size: int, content: bytes | None = None, *, last: bool = False) -> bytes:
    """A block header plus its content (RLE: one byte; others: ``size`` bytes)."""
    header = int(last) | kind << 1 | size << 3
    if content is None:
        content = b"\x5a" if kind == RLE else bytes((i * 7) % 256 for i in range(size))
    return header.to_bytes(3, "little") + content


def frame(fhd: int, header_rest: int, blocks: bytes, *, checksum: bool = False) -> bytes:
    return MAGIC + bytes([fhd]) + b"\x11" * header_rest + blocks + (b"CSUM" if checksum else b"")


BLOCKS = (
    block(RAW, 5)
    + block(RLE, 1000)
    + block(COMPRESSED, 7)
    + block(RLE, 1)
    + block(RAW, 0, last=True)
)

# (frame header descriptor, bytes of window descriptor + dictionary id + content size)
HEADERS = {
    "window only": (0x00, 1),
    "single segment, 1-byte size": (0x20, 1),
    "2-byte size": (0x40, 1 + 2),
    "4-byte size": (0x80, 1 + 4),
    "8-byte size": (0xC0, 1 + 8),
    "single segment, 8-byte size": (0xE0, 8),
    "1-byte dictionary id": (0x01, 1 + 1),
    "2-byte dictionary id": (0x02, 1 + 2),
    "4-byte dictionary id": (0x03, 1 + 4),
    "dictionary id and 2-byte size": (0x41, 1 + 1 + 2),
    "single segment, dictionary id, 4-byte size": (0xA3, 4 + 4),
    "unused bit 0x10 set": (0x10, 1),
}


def walk(*chunks: bytes) -> FrameWalker:
    w = FrameWalker()
    for c in chunks:
        w.feed(c)
    return w


@pytest.mark.parametrize("checksum", [False, True], ids=["no-checksum", "checksum"])
@pytest.mark.parametrize("name", list(HEADERS))
def test_every_header_form_is_walked_to_its_exact_end(name: str, checksum: bool) -> None:
    fhd, rest = HEADERS[name]
    data = frame(fhd | (0x04 if checksum else 0), rest, BLOCKS, checksum=checksum)
    for split in range(len(data) + 1):
        w = walk(data[:split], data[split:])
        w.finish()
        assert w.done and w.consumed == len(data)
    # A frame one byte short is never complete, wherever it was cut.
    for cut in range(1, len(data)):
        w = walk(data[:cut])
        assert not w.done
        with pytest.raises(ZstdFrameError) as e:
            w.finish()
        assert str(e.value) == "the zstd stream is truncated (the file is incomplete)"
    # One byte more is refused, and the message counts the extra bytes.
    with pytest.raises(ZstdFrameError) as e:
        walk(data + b"abc")
    assert str(e.value) == "3 unexpected bytes follow the end of the zstd stream"
    with pytest.raises(ZstdFrameError) as e:
        walk(data, b"\0")
    assert str(e.value) == "1 unexpected bytes follow the end of the zstd stream"


def test_byte_by_byte_feeding() -> None:
    data = frame(0x24, 1, BLOCKS, checksum=True)
    w = FrameWalker()
    for i in range(len(data)):
        assert not w.done
        w.feed(data[i : i + 1])
    assert w.done and w.consumed == len(data)
    w.finish()


def test_block_content_spanning_chunks_is_skipped_exactly() -> None:
    # A raw block of 300 bytes, fed in 7-byte pieces: the skip crosses many chunks and
    # must end exactly where the next block header starts.
    data = frame(0x00, 1, block(RAW, 300) + block(RLE, 5) + block(RAW, 3, last=True))
    w = FrameWalker()
    for i in range(0, len(data), 7):
        w.feed(data[i : i + 7])
    assert w.done and w.consumed == len(data)
    # The same frame with a header that starts mid-chunk after a skip.
    w = walk(data[:20], data[20:330], data[330:])
    assert w.done


def test_rle_block_has_one_content_byte_whatever_its_size() -> None:
    data = frame(0x00, 1, block(RLE, 100_000, last=True))
    assert len(data) == 4 + 1 + 1 + 3 + 1
    w = walk(data)
    assert w.done
    w.finish()


def test_empty_last_block_ends_the_frame_at_once() -> None:
    data = frame(0x20, 1, block(RAW, 0, last=True))
    w = walk(data)
    assert w.done and w.consumed == len(data)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\x28\xb5\x2f\xfe" + b"\0" * 10, "not a zstd file (bad magic number)"),
        (MAGIC + b"\x08" + b"\0" * 10, "zstd frame header has a reserved bit set"),
        (MAGIC + b"\x09" + b"\0" * 10, "zstd frame header has a reserved bit set"),
        (
            MAGIC + b"\x00\x11" + block(RESERVED, 4),
            "zstd stream holds a reserved block type (corrupt)",
        ),
        (
            MAGIC + b"\x00\x11" + block(RAW, 2) + block(RESERVED, 0, last=True),
            "zstd stream holds a reserved block type (corrupt)",
        ),
    ],
    ids=["magic", "reserved-bit", "reserved-bit-with-dict-id", "reserved-block", "reserved-later"],
)
def test_invalid_headers_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(ZstdFrameError) as e:
        walk(data)
    assert str(e.value) == message


def test_empty_and_one_byte_inputs() -> None:
    w = FrameWalker()
    with pytest.raises(ZstdFrameError) as e:
        w.finish()
    assert str(e.value) == "the file is empty"
    w = walk(MAGIC[:1])
    assert w.consumed == 1
    with pytest.raises(ZstdFrameError) as e:
        w.finish()
    assert str(e.value) == "the zstd stream is truncated (the file is incomplete)"


def test_consumed_counts_every_byte_fed() -> None:
    data = frame(0x00, 1, BLOCKS)
    w = walk(data[:3], data[3:10], data[10:])
    assert w.consumed == len(data)


def _block_types(data: bytes) -> list[int]:
    """Block types of a real zstd frame, read by this test independently of the walker."""
    fhd = data[4]
    single = fhd & 0x20
    fcs = (1 if single else 0) if fhd >> 6 == 0 else (2, 4, 8)[(fhd >> 6) - 1]
    pos = 5 + (0 if single else 1) + (0, 1, 2, 4)[fhd & 3] + fcs
    types = []
    while True:
        h = int.from_bytes(data[pos : pos + 3], "little")
        kind, size = (h >> 1) & 3, h >> 3
        types.append(kind)
        pos += 3 + (1 if kind == RLE else size)
        if h & 1:
            return types


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"write_checksum": True},
        {"write_content_size": False},
        {"write_checksum": True, "write_content_size": True, "level": 19},
    ],
    ids=["default", "checksum", "no-size", "level19"],
)
def test_real_frames_with_rle_raw_and_compressed_blocks(options: dict[str, object]) -> None:
    data = (
        b"\0" * 300_000
        + bytes(range(256)) * 700
        + b"text that compresses well\n" * 20_000
        + bytes.fromhex("deadbeef") * 3
        + b"\xff" * 200_000
    )
    import random

    data += random.Random(5).randbytes(150_000)
    compressed = zstandard.ZstdCompressor(**options).compress(data)  # type: ignore[arg-type]
    types = set(_block_types(compressed))
    assert {RAW, RLE, COMPRESSED} <= types, types
    for size in (1, 4096, len(compressed)):
        w = FrameWalker()
        for i in range(0, len(compressed), size):
            w.feed(compressed[i : i + size])
        w.finish()
        assert w.done and w.consumed == len(compressed)
    assert zstandard.ZstdDecompressor().decompress(compressed, max_output_size=len(data)) == data
