"""mk8s/bundle/provenance/chartarchive.py: a chart archive is read to its Chart.yaml within bounds, pinned
at their edges (at a bound is fine, one past it is refused, with the message that names
it), and what bundle create needs of a chart (what helm lint needs). The CLI over the
hostile cases is tests/unit/cli/test_hostile_files.py."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import pytest

from mk8s.bundle.provenance import chartarchive as charts
from tests.support import hostile
from tests.support.charts import tgz

META = b"apiVersion: v2\nname: web\nversion: 1.4.0\nappVersion: '2.0'\n"


def test_a_chart_is_read_to_its_chart_yaml() -> None:
    meta = charts.read_chart(tgz({"web/values.yaml": b"a: 1\n", "web/Chart.yaml": META}))
    assert meta == charts.ChartMeta("v2", "web", "1.4.0", "2.0")
    # a subchart's Chart.yaml is not the chart's
    with pytest.raises(charts.ChartProblem, match="has no NAME/Chart.yaml"):
        charts.read_chart(tgz({"web/charts/db/Chart.yaml": META}), whole=True)


def test_the_unpacked_budget_is_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tgz({"web/Chart.yaml": META, "web/big.bin": b"x" * 4096})
    unpacked = len(gzip.decompress(archive.getvalue()))  # every byte counts, padding too
    monkeypatch.setattr(charts, "MAX_UNPACKED", unpacked)
    archive.seek(0)
    assert charts.read_chart(archive, whole=True).name == "web"
    monkeypatch.setattr(charts, "MAX_UNPACKED", unpacked - 1)
    archive.seek(0)
    with pytest.raises(charts.ChartProblem, match=f"unpacks to more than {unpacked - 1} bytes"):
        charts.read_chart(archive, whole=True)


def test_a_member_claiming_more_than_the_budget_is_refused_unread(tmp_path: Path) -> None:
    bomb = hostile.zero_member_chart(tmp_path / "b.tgz", 64 * hostile.GIB)
    with open(bomb, "rb") as f:
        with pytest.raises(charts.ChartProblem) as e:
            charts.read_chart(f)
        assert f.tell() < 1 << 20  # stopped at the member's header
    assert str(e.value) == f"member bomb/zeros.bin alone unpacks to more than {64 << 20} bytes"


def test_chart_yaml_size_and_member_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(charts, "MAX_CHART_YAML", len(META))
    assert charts.read_chart(tgz({"web/Chart.yaml": META})).name == "web"
    monkeypatch.setattr(charts, "MAX_CHART_YAML", len(META) - 1)
    with pytest.raises(charts.ChartProblem, match=r"web/Chart.yaml is over \d+ bytes"):
        charts.read_chart(tgz({"web/Chart.yaml": META}))
    monkeypatch.setattr(charts, "MAX_CHART_YAML", len(META))
    monkeypatch.setattr(charts, "MAX_MEMBERS", 2)
    ok = {"web/a": b"", "web/Chart.yaml": META}
    assert charts.read_chart(tgz(ok), whole=True).name == "web"
    with pytest.raises(charts.ChartProblem, match="has more than 2 members"):
        charts.read_chart(tgz({**ok, "web/b": b""}), whole=True)


def test_whole_reads_past_chart_yaml_and_checks_gzip() -> None:
    good = tgz({"web/Chart.yaml": META}).getvalue()
    damaged = io.BytesIO(good[:-8] + b"\0" * 8)  # gzip's CRC and length
    assert charts.read_chart(io.BytesIO(damaged.getvalue())).name == "web"
    with pytest.raises(charts.ChartProblem, match="not a gzip-compressed tar: BadGzipFile"):
        charts.read_chart(damaged, whole=True)


@pytest.mark.parametrize(
    ("meta", "strict", "lenient"),
    [
        (b"name: web\nversion: 1\n", "lacks apiVersion", "1"),
        (b"apiVersion: v2\nname: web\nversion: 1.0\n", "lacks apiVersion", "1.0"),
        (b"apiVersion: v2\nversion: '1'\n", "lacks apiVersion", None),
        (b"- a\n", "not a mapping", None),
        (hostile.nested_yaml(2000), "nested deeper than 64 levels", None),
    ],
)
def test_create_needs_what_helm_lint_needs(meta: bytes, strict: str, lenient: str | None) -> None:
    with pytest.raises(charts.ChartProblem, match=strict):
        charts.read_chart(tgz({"web/Chart.yaml": meta}), whole=True)
    if lenient is None:
        with pytest.raises(charts.ChartProblem):
            charts.read_chart(tgz({"web/Chart.yaml": meta}))
    else:
        assert charts.read_chart(tgz({"web/Chart.yaml": meta})).version == lenient
