"""mk8s/bundle/provenance/inventory.py: what the inventory reads of a bundle's files, within bounds."""

from __future__ import annotations

from pathlib import Path

from mk8s.bundle.format.manifest import Artifact
from mk8s.bundle.provenance import inventory
from tests.support import hostile
from tests.support.charts import tgz


def _file(name: str, kind: str = "file") -> Artifact:
    return Artifact(name=name, kind=kind, path=f"artifacts/{name}", size=1, sha256="0" * 64)


def test_contents_of_an_unreadable_chart_are_a_note(tmp_path: Path) -> None:
    p = tmp_path / "c.tgz"
    p.write_bytes(tgz({"c/Chart.yaml": hostile.nested_yaml(2000)}).getvalue())
    found = inventory.read_contents(_file("c.tgz", "chart"), p)
    assert found == inventory.Contents(
        (), (), "not a readable chart: Chart.yaml is nested deeper than 64 levels (line 1)"
    )
    assert inventory.read_contents(_file("c.tgz"), p) is None  # a file: just a file
