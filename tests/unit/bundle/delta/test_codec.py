"""zstd reproduction: which compressed bytes a delta may rebuild, and which it may not."""

from __future__ import annotations

import errno
import io
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from mk8s.bundle.delta import codec
from mk8s.bundle.delta.model import Zstd
from mk8s.errors import BundleRejected

DATA = random.Random(7).randbytes(300_000) + b"ustar\0" * 40_000  # some of it compresses


def _write(path: Path, params: zstandard.ZstdCompressionParameters, tail: bytes = b"") -> Path:
    buf = io.BytesIO()
    with zstandard.ZstdCompressor(compression_params=params).stream_writer(
        buf, size=len(DATA), closefd=False
    ) as w:
        w.write(DATA)
    path.write_bytes(buf.getvalue() + tail)
    return path


def test_rke2s_parameters_are_found_and_the_tail_is_left_alone(tmp_path: Path) -> None:
    # rancher/rke2 scripts/package-images: zstd -T0 -16 -f --long=25
    params = zstandard.ZstdCompressionParameters(
        compression_level=16, window_log=25, enable_ldm=1, threads=2, write_checksum=1,
        write_content_size=1,
    )  # fmt: skip
    path = _write(tmp_path / "a.zst", params, tail=b"\x50\x2a\x4d\x18" + bytes(4))
    found = codec.find_parameters(path, len(DATA))
    assert found is not None
    z, length = found
    assert (z.level, z.window_log, z.long_distance, z.multithreaded) == (16, 25, True, True)
    assert length == path.stat().st_size - 8
    out = bytearray()
    codec.compress(z, len(DATA), [DATA[:1000], DATA[1000:]], out.extend)
    assert bytes(out) == path.read_bytes()[:length]


def test_bytes_no_candidate_makes_are_not_rebuilt(tmp_path: Path) -> None:
    """Another level: every candidate differs at some byte (and stops there, cleanly)."""
    params = zstandard.ZstdCompressionParameters(compression_level=12, write_checksum=1)
    assert codec.find_parameters(_write(tmp_path / "b.zst", params), len(DATA)) is None
    plain = tmp_path / "plain.tar"
    plain.write_bytes(DATA)
    assert codec.find_parameters(plain, len(DATA)) is None


def _failing_pieces(error: BaseException) -> Iterator[bytes]:
    yield DATA[:100_000]
    raise error


@pytest.mark.parametrize(
    "error",
    [
        BundleRejected("rebuilding x: blobs/sha256/... is not blob sha256:...", "get it again"),
        OSError(errno.ENOSPC, "No space left on device"),
    ],
)
def test_a_failure_while_rebuilding_is_not_masked_by_zstd(error: BaseException) -> None:
    # extract rebuilds an archive by compressing its pieces as they are read: a piece
    # that fails its check (or a full disk) must surface as itself, not as zstd's
    # complaint that the frame it was told to expect came up short
    z = Zstd(3, 0, False, False, True, True, codec.library())
    written: list[bytes] = []
    with pytest.raises(type(error)) as got:
        codec.compress(z, len(DATA), _failing_pieces(error), written.append)
    assert got.value is error
