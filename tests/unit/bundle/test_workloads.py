"""Workloads as values: chart and manifest validation, artifact names, and how a
server gets them (the HelmChart script run for real under sh)."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest
import yaml

from mk8s.bundle import workloads
from mk8s.bundle.manifest import ArtifactKind
from mk8s.deploy import facts
from mk8s.deploy.workloads import place_workloads, placed_path, resource_name
from mk8s.errors import InputError
from tests.support.charts import make_chart, workload_art, workloads_context


def test_chart_validation(tmp_path: Path) -> None:
    assert workloads.check_chart(make_chart(tmp_path / "hello-0.1.0.tgz")) == ("hello", "0.1.0")
    with pytest.raises(InputError, match="no NAME/Chart.yaml"):
        workloads.check_chart(make_chart(tmp_path / "a.tgz", None))
    with pytest.raises(InputError, match="lacks apiVersion, name or version"):
        workloads.check_chart(make_chart(tmp_path / "b.tgz", "name: x\n"))
    (tmp_path / "c.tgz").write_bytes(b"not gzip")
    with pytest.raises(InputError, match="not a chart archive"):
        workloads.check_chart(tmp_path / "c.tgz")


@pytest.mark.parametrize(
    "text,match",
    [
        ("apiVersion: v1\nkind: ConfigMap\n---\napiVersion: v1\nkind: Namespace\n", None),
        ("apiVersion: v1\n", "lacks apiVersion or kind"),
        ("- a\n- b\n", "lacks apiVersion or kind"),
        ("key: [unclosed\n", "not valid YAML"),
        ("", "holds no document"),
        ("---\n---\n", "holds no document"),
        ("apiVersion: null\nkind: ConfigMap\n", "document 1 lacks apiVersion or kind"),
        ("apiVersion: v1\nkind: ConfigMap\n---\napiVersion: v1\nkind: 5\n", "document 2 lacks"),
        ("apiVersion: v1\nkind: ''\n", "lacks apiVersion or kind"),
        ("apiVersion: v1\nkind: [x]\n", "lacks apiVersion or kind"),
        ("a: " + "[" * 65 + "]" * 65 + "\n", "nested deeper than 64 levels"),
    ],
)
def test_manifest_validation(tmp_path: Path, text: str, match: str | None) -> None:
    p = tmp_path / "m.yaml"
    p.write_text(text)
    if match is None:
        assert workloads.check_manifest(p) == 2
    else:
        with pytest.raises(InputError, match=match):
            workloads.check_manifest(p)


def test_image_names_are_safe_and_unique() -> None:
    d1 = "sha256:" + "a" * 64
    d2 = "sha256:" + "b" * 64
    n1 = workloads.image_name("ghcr.io", "org/app", "1.2.3", d1)
    n2 = workloads.image_name("ghcr.io", "org/app", "1.2.3", d2)
    assert n1 != n2 and n1.endswith("_aaaaaaaaaaaa.oci.tar")
    long = workloads.image_name("r.example:5000", "a/" * 60 + "x", "t" * 40, d1)
    assert len(long) <= 80 and set(long) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._+-"
    )


def test_charts_become_helmcharts_and_reruns_change_nothing(tmp_path: Path) -> None:
    chart = make_chart(tmp_path / "hello-0.1.0.tgz")
    man = tmp_path / "extra.yaml"
    man.write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: extra}\n")
    c_art, m_art = workload_art(chart, ArtifactKind.CHART), workload_art(man, ArtifactKind.MANIFEST)
    ctx = workloads_context(tmp_path, (c_art, m_art))
    assert resource_name(c_art) == "hello"  # the chart's name: its Helm release
    fresh = facts.NodeFacts(
        arch="amd64", uname_m="x86_64", os="", hostname="", root=True, sudo=True
    )
    old = placed_path(c_art).rsplit("-", 1)[0] + "-000000000000.yaml"
    cmds = place_workloads(
        ctx,
        ctx.cluster.bootstrap,
        facts.NodeFacts(**{**fresh.__dict__, "placed": frozenset({old})}),
    )
    assert len(cmds) == 2
    # Run the chart command for real, with the staged file and the target moved locally.
    root = tmp_path / "node"
    staged = root / "staged.tgz"
    staged.parent.mkdir()
    staged.write_bytes(chart.read_bytes())
    dest = root / "manifests" / "out.yaml"
    stale = root / "stale.yaml"
    stale.write_text("old")
    argv = cmds[0].pieces
    script = argv[4]
    assert isinstance(script, str)
    r = subprocess.run(
        ["sh", "-c", script, "mk8s", "hello", str(staged), str(dest), str(stale)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    doc = yaml.safe_load(dest.read_text())
    assert doc["kind"] == "HelmChart" and doc["metadata"]["name"] == "hello"
    assert base64.b64decode(doc["spec"]["chartContent"]) == chart.read_bytes()
    assert not stale.exists()
    assert old in cmds[0].display()
    done = frozenset({placed_path(c_art), placed_path(m_art)})
    assert (
        place_workloads(
            ctx, ctx.cluster.bootstrap, facts.NodeFacts(**{**fresh.__dict__, "placed": done})
        )
        == []
    )
