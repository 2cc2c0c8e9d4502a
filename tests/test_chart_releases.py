"""Charts as Helm releases: helm-controller keeps one release per HelmChart *name* and
deletes nothing when a file leaves server/manifests, and it stores a chart's base64 in
one ConfigMap (1 MiB). So mk8s names a chart's HelmChart after the chart (a new version
replaces the one release), uninstalls on purpose a chart the bundle dropped, and
refuses at create a chart that could never install."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import subprocess
import tarfile
from pathlib import Path

import pytest

from mk8s.bundle import workloads
from mk8s.bundle.manifest import Artifact, ArtifactKind, Lock, artifact_path
from mk8s.deploy.builders import facts
from mk8s.deploy.builders.addons import (
    dropped_charts,
    place_workloads,
    placed_name,
    placed_path,
    uninstall_dropped,
)
from mk8s.deploy.command import Command
from mk8s.errors import InputError, LockError
from tests.test_workloads import _ctx

FRESH = facts.NodeFacts(arch="amd64", uname_m="x86_64", os="", hostname="", root=True, sudo=True)
DIR = facts.SERVER_MANIFESTS_DIR


def chart_tgz(path: Path, name: str, version: str, payload: int = 0) -> Path:
    """A chart archive ``name/Chart.yaml`` (+ ``payload`` incompressible bytes)."""
    raw = io.BytesIO()
    files = {f"{name}/Chart.yaml": f"apiVersion: v2\nname: {name}\nversion: {version}\n".encode()}
    if payload:
        files[f"{name}/files/blob"] = random.Random(name).randbytes(payload)
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for member, data in files.items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(raw.getvalue())
    return path


def chart_art(path: Path) -> Artifact:
    data = path.read_bytes()
    return Artifact(
        name=path.name,
        kind=ArtifactKind.CHART,
        path=artifact_path(path.name, ArtifactKind.CHART),
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        url=path.as_uri(),
        chart=workloads.check_chart(path),
    )


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
    ctx = _ctx(tmp_path, (new, api))
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
    ctx = _ctx(tmp_path, (web,))
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


def test_two_versions_of_one_chart_cannot_share_a_bundle(tmp_path: Path) -> None:
    paths = [
        chart_tgz(tmp_path / "web-1.4.0.tgz", "web", "1.4.0"),
        chart_tgz(tmp_path / "Web-2.0.0.tgz", "Web", "2.0.0"),
    ]
    with pytest.raises(InputError, match="both install as Helm release 'web'"):
        workloads.pin_charts(paths, chart_art)


def test_a_chart_over_the_configmap_limit_is_refused(tmp_path: Path) -> None:
    workloads.too_big("x", workloads.MAX_CHART_BYTES, "chart x")  # 768 KiB: base64 is 1 MiB
    with pytest.raises(InputError, match=r"1048576 bytes, so a chart over 786432 bytes"):
        workloads.too_big("x", workloads.MAX_CHART_BYTES + 1, "chart x")
    big = chart_tgz(tmp_path / "big-1.0.0.tgz", "big", "1.0.0", payload=800 << 10)
    with pytest.raises(InputError, match="never installs") as e:
        workloads.check_chart(big)
    assert e.value.fix and "smaller" in e.value.fix
    # A lock may pin one too (an older mk8s, an edited lock): create refuses it as well.
    art = Artifact(
        name="big.tgz",
        kind=ArtifactKind.CHART,
        path="artifacts/charts/big.tgz",
        size=big.stat().st_size,
        sha256="0" * 64,
    )
    with pytest.raises(InputError, match="chart big.tgz is"):
        workloads.check_releases([art])


def test_bundle_create_refuses_a_chart_too_big_to_install(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    big = chart_tgz(tmp_path / "big-1.0.0.tgz", "big", "1.0.0", payload=800 << 10)
    r = run_cli("bundle", "create", "--rke2", "v1.28.x", "--unsigned", "--chart", str(big))
    assert r.code == 2, r.err
    (line,) = r.err.strip().splitlines()
    assert "1048576" in line and "768 KiB" in line and "helm-controller" in line
    assert "Traceback" not in r.err and not list(tmp_path.glob("*.tar.zst"))


def test_the_manifest_carries_chart_and_platforms(tmp_path: Path) -> None:
    web = chart_art(chart_tgz(tmp_path / "web-1.5.0.tgz", "web", "1.5.0"))
    ctx = _ctx(tmp_path, (web,))
    back = Lock.from_bytes(ctx.manifest.to_bytes())
    (chart,) = back.find(kind=ArtifactKind.CHART)
    assert chart.chart == ("web", "1.5.0")
    doc = json.loads(ctx.manifest.to_bytes())
    (entry,) = [a for a in doc["artifacts"] if a["kind"] == "chart"]
    assert entry["chart"] == {"name": "web", "version": "1.5.0"}
    bad = [
        ({"kind": "file", "chart": {"name": "web", "version": "1"}}, "chart"),
        ({"chart": {"name": "a b", "version": "1"}}, "chart"),
        ({"platforms": ["linux/amd64"]}, "platforms"),
    ]
    for change, word in bad:
        broken = json.loads(json.dumps(doc))
        (target,) = [a for a in broken["artifacts"] if a["kind"] == "chart"]
        target.update(change)
        if target["kind"] == "file":
            target["path"] = "artifacts/files/" + target["name"]
        with pytest.raises(LockError, match=word):
            Lock.from_bytes(json.dumps(broken).encode())
        with pytest.raises(LockError, match=word):
            Lock.from_bytes(json.dumps(broken).encode(), validate=False)


def test_the_dry_run_says_which_charts_it_uninstalls(tmp_path: Path) -> None:
    """After a deploy recorded the charts it placed (the journal), a dry run of a bundle
    without one of them plans its uninstall, contacting no node."""
    import sys

    from mk8s.bundle import keys
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
