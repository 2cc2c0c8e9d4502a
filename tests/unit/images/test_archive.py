"""mk8s/images/archive.py: image archives read as tar streams, within an unpacked budget."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
import zstandard

from mk8s.bundle.provenance import inventory
from mk8s.errors import ImageArchiveError
from mk8s.images.archive import scan_archive


def test_image_archives_unpack_to_a_budget(tmp_path: Path) -> None:
    p = tmp_path / "a.tar.zst"
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for i in range(4):
            info = tarfile.TarInfo(f"blob{i}")
            info.size = 100_000
            tf.addfile(info, io.BytesIO(b"\0" * 100_000))
    data = tar.getvalue()
    p.write_bytes(zstandard.ZstdCompressor().compress(data))
    assert len(scan_archive(p, max_unpacked=len(data)).members) == 4
    with pytest.raises(ImageArchiveError, match=f"unpacks to more than {len(data) - 1} bytes"):
        scan_archive(p, max_unpacked=len(data) - 1)
    with pytest.raises(ImageArchiveError, match="member blob0 claims 100000 bytes, more than"):
        scan_archive(p, max_unpacked=99_999)
    assert inventory.image_budget(p) == 256 << 20
    big = tmp_path / "big"
    with open(big, "wb") as f:
        f.truncate(32 << 20)
    assert inventory.image_budget(big) == 16 * (32 << 20)
