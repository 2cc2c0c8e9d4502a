"""mk8s/images/inspect.py: listing the images of an archive, within bounds (index depth,
manifest count)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mk8s.errors import ImageArchiveError
from tests.support import hostile


def test_indexes_nest_at_most_eight_deep(tmp_path: Path) -> None:
    from mk8s.images.inspect import read_archive

    kind, images = read_archive(hostile.index_chain_layout(tmp_path / "8.tar", 8))
    assert kind == "oci" and len(images[0].manifests) == 7
    with pytest.raises(ImageArchiveError, match="nests indexes deeper than 8 levels"):
        read_archive(hostile.index_chain_layout(tmp_path / "9.tar", 9))
    # the same index listed 40,000 times is walked once
    _, images = read_archive(hostile.index_chain_layout(tmp_path / "w.tar", 2, width=40_000))
    assert len(images[0].manifests) == 1
    # distinct manifests are counted: 999 below the top index pass, one more does not
    layout = hostile.index_chain_layout(tmp_path / "d.tar", 2, width=999, distinct=True)
    _, images = read_archive(layout)
    assert len(images[0].manifests) == 999
    with pytest.raises(ImageArchiveError, match="reaches more than 1000 manifests"):
        layout = hostile.index_chain_layout(tmp_path / "d2.tar", 2, width=1000, distinct=True)
        read_archive(layout)
