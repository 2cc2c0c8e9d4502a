"""Workloads as values: chart and manifest validation, artifact names, and how a
server gets them (the HelmChart script run for real under sh)."""

from __future__ import annotations

import base64
import hashlib
import io
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from mk8s.bundle import workloads
from mk8s.bundle.manifest import Artifact, ArtifactKind, Lock, Release, artifact_path
from mk8s.deploy.builders import facts
from mk8s.deploy.builders.addons import place_workloads, placed_path, resource_name
from mk8s.deploy.builders.context import Context
from mk8s.deploy.cluster import load_cluster
from mk8s.deploy.command import Secret
from mk8s.errors import InputError


def make_chart(
    path: Path, chart_yaml: str | None = "apiVersion: v2\nname: hello\nversion: 0.1.0\n"
) -> Path:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        files = {"hello/values.yaml": b"replicas: 1\n"}
        if chart_yaml is not None:
            files["hello/Chart.yaml"] = chart_yaml.encode()
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(raw.getvalue())
    return path


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


def _ctx(tmp_path: Path, arts: tuple[Artifact, ...]) -> Context:
    p = tmp_path / "c.yaml"
    p.write_text("""apiVersion: mk8s/v1alpha1
kind: Cluster
metadata: {name: w}
spec:
  nodes:
    - {address: 10.0.0.1, name: cp1, role: server}
""")
    base = Artifact(
        name="install.sh",
        kind=ArtifactKind.INSTALL_SCRIPT,
        path="artifacts/install.sh",
        size=1,
        sha256="0" * 64,
    )
    lock = Lock(
        release=Release(requested="v1.28.x", tag="v1.28.15+rke2r1", arch=("amd64",)),
        resolved_at="2026-01-01T00:00:00Z",
        artifacts=(base, *arts),
    ).as_manifest("0.1.0")
    return Context(load_cluster(p, check_files=False), lock, "0123456789abcdef", Secret("t"))


def _art(path: Path, kind: ArtifactKind) -> Artifact:
    data = path.read_bytes()
    return Artifact(
        name=path.name,
        kind=kind,
        path=artifact_path(path.name, kind),
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        url=path.as_uri(),
        chart=workloads.check_chart(path) if kind == ArtifactKind.CHART else None,
    )


def test_charts_become_helmcharts_and_reruns_change_nothing(tmp_path: Path) -> None:
    chart = make_chart(tmp_path / "hello-0.1.0.tgz")
    man = tmp_path / "extra.yaml"
    man.write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: extra}\n")
    c_art, m_art = _art(chart, ArtifactKind.CHART), _art(man, ArtifactKind.MANIFEST)
    ctx = _ctx(tmp_path, (c_art, m_art))
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
