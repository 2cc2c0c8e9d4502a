"""mk8s/deploy/builders/addons.py: how a server gets the bundle's workloads. helm-controller
keeps one release per HelmChart *name* and deletes nothing when a file leaves
server/manifests, so mk8s names a chart's HelmChart after the chart (a new version
replaces the one release) and uninstalls on purpose a chart the bundle dropped; the
HelmChart script is run for real under sh; a partial image index is refused where the
nodes cannot use it."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from mk8s.bundle import workload_sources as workloads
from mk8s.bundle.format.manifest import Artifact, ArtifactKind, Lock
from mk8s.deploy.builders import facts, plan
from mk8s.deploy.builders.addons import (
    dropped_charts,
    place_workloads,
    placed_name,
    placed_path,
    resource_name,
    uninstall_dropped,
)
from mk8s.deploy.command import Command
from tests.support.charts import chart_art, chart_tgz, make_chart, workload_art, workloads_context
from tests.support.clusters import FRESH_BARE as FRESH
from tests.support.clusters import REGISTRY, images_cluster, images_manifest

DIR = facts.SERVER_MANIFESTS_DIR


def words(cmd: Command) -> list[str]:
    """The arguments of a Command.argv, in order."""
    return [p for p in cmd.pieces if isinstance(p, str)]


def with_placed(*paths: str) -> facts.NodeFacts:
    return facts.NodeFacts(**{**FRESH.__dict__, "placed": frozenset(paths)})


def test_the_release_is_the_chart_name_never_its_version(tmp_path: Path) -> None:
    a = chart_art(chart_tgz(tmp_path / "web-1.4.0.tgz", "web", "1.4.0"))
    b = chart_art(chart_tgz(tmp_path / "web-1.5.0.tgz", "web", "1.5.0"))
    assert placed_name(placed_path(a)) == placed_name(placed_path(b)) == ("chart", "web")
    assert placed_path(a) != placed_path(b)  # other bytes, other file
    assert workloads.release_name("My_App.v2") == "my-app-v2"
    assert len(workloads.release_name("x" * 90)) == workloads.MAX_RELEASE


def test_a_new_version_replaces_the_one_release_and_nothing_else(tmp_path: Path) -> None:
    old = chart_art(chart_tgz(tmp_path / "web-1.4.0.tgz", "web", "1.4.0"))
    new = chart_art(chart_tgz(tmp_path / "web-1.5.0.tgz", "web", "1.5.0"))
    api = chart_art(chart_tgz(tmp_path / "web-api-2.0.0.tgz", "web-api", "2.0.0"))
    ctx = workloads_context(tmp_path, (new, api))
    f = with_placed(placed_path(old), placed_path(api))
    (cmd,) = place_workloads(ctx, ctx.cluster.bootstrap, f)
    argv = words(cmd)
    assert argv[4] == "web" and argv[6] == placed_path(new)
    assert argv[-1] == placed_path(old)  # the old version's file goes
    assert placed_path(api) not in argv  # web-api is another release: left alone
    assert uninstall_dropped(ctx, ctx.cluster.bootstrap, f) == []  # an upgrade: nothing


def test_a_dropped_chart_is_uninstalled_on_purpose(tmp_path: Path) -> None:
    """A chart the bundle no longer carries (and a chart placed under its versioned
    name by an older mk8s) is deleted as a HelmChart through kubectl, then its file goes;
    kubectl failing leaves the file, so the next run tries again."""
    web = chart_art(chart_tgz(tmp_path / "web-1.5.0.tgz", "web", "1.5.0"))
    ctx = workloads_context(tmp_path, (web,))
    legacy = f"{DIR}/mk8s-chart-web-1-4-0-{'a' * 12}.yaml"
    gone = f"{DIR}/mk8s-chart-gone-{'b' * 12}.yaml"
    manifest = f"{DIR}/mk8s-manifest-extra-{'c' * 12}.yaml"
    f = with_placed(placed_path(web), legacy, gone, manifest)
    assert dropped_charts(ctx, f) == {"gone": [gone], "web-1-4-0": [legacy]}
    cmds = uninstall_dropped(ctx, ctx.cluster.bootstrap, f)
    assert [c.description for c in cmds] == [
        "uninstall chart gone: the bundle no longer carries it",
        "uninstall chart web-1-4-0: the bundle no longer carries it",
    ]
    # Run one for real: a kubectl that records its arguments, the file in a temp dir.
    log = tmp_path / "kubectl.log"
    kubectl = tmp_path / "kubectl"
    kubectl.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {log}\nexit "${{RC:-0}}"\n')
    kubectl.chmod(0o755)
    placed = tmp_path / "mk8s-chart-gone.yaml"
    argv = words(cmds[0])
    assert argv[:2] == ["sh", "-c"] and argv[3] == facts.KUBECTL
    run = ["sh", "-c", argv[2], str(kubectl), *argv[4:8], str(placed)]
    placed.write_text("x")
    failed = subprocess.run(run, env={**os.environ, "RC": "1"}, capture_output=True)
    assert failed.returncode == 1 and placed.exists()
    ok = subprocess.run(run, capture_output=True)
    assert ok.returncode == 0 and not placed.exists()
    assert log.read_text().split() == [
        "--kubeconfig",
        facts.KUBECONFIG_PATH,
        "delete",
        "helmchart",
        "--namespace",
        "kube-system",
        "gone",
        "--ignore-not-found",
        "--timeout=300s",
    ]


def test_the_dry_run_says_which_charts_it_uninstalls(tmp_path: Path) -> None:
    """After a deploy recorded the charts it placed (the journal), a dry run of a bundle
    without one of them plans its uninstall, contacting no node."""
    import sys

    from mk8s.bundle.format import keys
    from tests.support.upstream import ExampleUpstream

    keys.write_key_pair(keys.generate_private_key(), tmp_path / "k", b"pw")
    web = chart_tgz(tmp_path / "web-1.5.0.tgz", "web", "1.5.0")
    with ExampleUpstream(image_size=4096) as up:
        env = {**os.environ, **up.env, "MK8S_KEY_PASSPHRASE": "pw"}
        r = subprocess.run(
            [sys.executable, "-m", "mk8s", "bundle", "create", "--rke2", "v1.28.x", "--key",
             "k.key", "--cache", "cache", "-o", "b.tar.zst", "--chart", str(web)],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
    (tmp_path / "cluster.yaml").write_text(
        "apiVersion: mk8s/v1alpha1\nkind: Cluster\nmetadata: {name: demo}\nspec:\n"
        "  nodes:\n    - {address: 10.0.0.1, name: cp1, role: server}\n"
    )
    state = tmp_path / ".mk8s" / "demo"
    state.mkdir(parents=True, mode=0o700)
    (tmp_path / ".mk8s").chmod(0o700)
    web_file = placed_path(chart_art(web))
    api_file = f"{DIR}/mk8s-chart-api-{'a' * 12}.yaml"
    journal = {
        "nodes": {"cp1": {"state": "ready", "version": "v1.28.15+rke2r1", "role": "server"}},
        "placed": {"cp1": [web_file, api_file]},
    }
    (state / "journal.json").write_text(json.dumps(journal))
    r = subprocess.run(
        [sys.executable, "-m", "mk8s", "deploy", "-f", "cluster.yaml", "--bundle", "b.tar.zst",
         "--key", "k.pub", "--dry-run"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "# cp1: uninstall chart api: the bundle no longer carries it" in r.stdout
    (line,) = [ln for ln in r.stdout.splitlines() if "delete helmchart" in ln and "$ " in ln]
    assert "kube-system api 300s" in line and api_file in line and web_file not in line
    assert "mk8s web" not in r.stdout  # web is in place already: not written again


# -- charts become HelmCharts on a server ------------------------------------------------
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


# -- a partial image index where it cannot work ------------------------------------------
def _image(platforms: tuple[str, ...]) -> Artifact:
    name = "r_acme_multi_3.0_0123456789ab.oci.tar"
    return Artifact(
        name=name,
        kind=ArtifactKind.IMAGE,
        path=f"artifacts/oci/{name}",
        size=1,
        sha256="a" * 64,
        url=f"oci://r.test/acme/multi:3.0@sha256:{'b' * 64}",
        platforms=platforms,
    )


@pytest.mark.parametrize(
    "images,tag,platforms,problem",
    [
        (REGISTRY, "v1.28.15+rke2r1", ("linux/amd64",), "registry stores an image index only"),
        (REGISTRY, "v1.28.15+rke2r1", (), None),
        ("{distribution: all}", "v1.28.15+rke2r1", ("linux/amd64",), None),
        ("{distribution: all}", "v1.28.10+rke2r1", ("linux/amd64",), "cannot import"),
        ("{distribution: servers}", "v1.27.14+rke2r1", ("linux/amd64",), "cannot import"),
    ],
)
def test_preflight_refuses_a_partial_index_where_it_cannot_work(
    tmp_path: Path, images: str, tag: str, platforms: tuple[str, ...], problem: str | None
) -> None:
    base = images_manifest(tag)
    manifest = Lock(
        release=base.release,
        resolved_at=base.resolved_at,
        artifacts=(*base.artifacts, _image(platforms)),
        kind=base.kind,
        created_by=base.created_by,
    )
    c = images_cluster(tmp_path, images)
    got = [p for p in plan.preflight(c, manifest, {"cp1": FRESH, "w1": FRESH}) if "index" in p]
    if problem is None:
        assert got == []
    else:
        (line,) = got
        assert problem in line and "--all-platforms" in line and "r.test/acme/multi" in line
