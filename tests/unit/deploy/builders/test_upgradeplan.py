"""The rolling upgrade as values: who is upgraded, what is refused, each node's steps."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from mk8s.bundle.format.manifest import Lock
from mk8s.deploy.builders import facts
from mk8s.deploy.builders import upgradeplan as upgrade
from mk8s.deploy.builders.context import Context
from mk8s.deploy.cluster import Cluster, UpgradeOptions, load_cluster
from mk8s.deploy.command import Secret
from mk8s.deploy.steps import WaitReady
from tests.support.clusters import release_manifest


def _manifest(tag: str) -> Lock:
    return release_manifest(tag, requested="v1.29.x", salted=True)


def _cluster(tmp_path: Path, options: str = "") -> Cluster:
    p = tmp_path / "c.yaml"
    p.write_text(f"""apiVersion: mk8s/v1alpha1
kind: Cluster
metadata: {{name: up}}
spec:
  nodes:
    - {{address: 10.0.0.1, name: cp1, role: server}}
    - {{address: 10.0.0.2, name: cp2, role: server}}
    - {{address: 10.0.0.3, name: w1, role: agent}}
    - {{address: 10.0.0.4, name: w2, role: agent}}
    - {{address: 10.0.0.5, name: w3, role: agent}}
{options}""")
    return load_cluster(p, check_files=False)


def _facts(version: str | None, images: tuple[str, ...] = ()) -> facts.NodeFacts:
    return facts.NodeFacts(
        arch="amd64",
        uname_m="x86_64",
        os="",
        hostname="",
        root=True,
        sudo=True,
        rke2_version=f"rke2 version {version} (x)" if version else None,
        rke2_prefix="/opt/rke2" if version else None,
        server_active=bool(version),
        agent_active=bool(version),
        hashes={f"{facts.IMAGES_DIR}/{n}": "0" * 64 for n in images},
    )


OLD, NEW = "v1.28.15+rke2r1", "v1.29.10+rke2r2"


def test_older_nodes_are_upgraded_servers_first_new_nodes_join_later(tmp_path: Path) -> None:
    c = _cluster(tmp_path)
    f = {n.name: _facts(OLD) for n in c.nodes}
    f["w2"] = _facts(NEW)  # already upgraded by an earlier, interrupted run
    f["w3"] = _facts(None)  # a new node
    p = upgrade.plan_upgrade(c, _manifest(NEW), f)
    assert p.nodes == ("cp1", "cp2", "w1") and p.needed
    assert upgrade.refusals(p) == []
    same = upgrade.plan_upgrade(c, _manifest(OLD), {n.name: _facts(OLD) for n in c.nodes})
    assert not same.needed and upgrade.refusals(same) == []


@pytest.mark.parametrize(
    "versions,target,match",
    [
        ({"w1": "v1.29.10+rke2r3"}, NEW, "newer than the bundle"),
        ({"cp2": "v1.30.1+rke2r1"}, NEW, "never downgraded"),
        ({}, "v1.30.6+rke2r1", "deploy a v1.29.x bundle first"),
        ({"w1": "v1.27.9+rke2r1"}, NEW, "deploy a v1.28.x bundle first"),
        ({}, "v2.0.0+rke2r1", "skips a minor"),
    ],
)
def test_refusals(tmp_path: Path, versions: dict[str, str], target: str, match: str) -> None:
    c = _cluster(tmp_path)
    f = {n.name: _facts(versions.get(n.name, OLD)) for n in c.nodes}
    problems = upgrade.refusals(upgrade.plan_upgrade(c, _manifest(target), f))
    assert any(match in p for p in problems), problems


@pytest.mark.parametrize(
    "value,agents,size", [("10%", 3, 1), ("50%", 5, 2), ("100%", 4, 4), ("2", 9, 2), ("1", 1, 1)]
)
def test_batch_size(value: str, agents: int, size: int) -> None:
    assert UpgradeOptions(max_unavailable=value).batch_size(agents) == size


def test_node_steps_in_order_with_drain_and_old_images_removed(tmp_path: Path) -> None:
    c = _cluster(
        tmp_path, "  options: {upgrade: {drain: true, drainTimeout: 42, maxUnavailable: 2}}\n"
    )
    ctx = Context(c, _manifest(NEW), "0123456789abcdef", Secret("t"))
    w1 = c.node("w1")
    f = _facts(
        OLD, images=("rke2-images.linux-amd64.tar.zst", "rke2-images-old.linux-amd64.tar.zst")
    )
    steps = upgrade.node_steps(ctx, w1, f, ready_timeout=30)
    assert [s.name for s in steps] == ["cordon", "install", "wait", "uncordon"]
    assert steps[0].node == "cp1" and steps[-1].node == "cp1"  # kubectl runs on a server
    shown = [c.display() for s in steps for c in s.commands]
    # kubectl drain cordons first: one command, not a cordon and then a drain
    assert [c.description for c in steps[0].commands] == ["cordon and drain w1 (at most 42s)"]
    assert "drain w1" in shown[0] and "--timeout=42s" in shown[0]
    install = [x for x in shown if "install.sh" in x]
    assert install and "INSTALL_RKE2_ARTIFACT_PATH" in install[0]
    rm = [x for x in shown if x.startswith("rm -f")]
    # mk8s placed neither file (no record of it): the upgrade removes nothing
    assert rm == []
    old = "rke2-images-old.linux-amd64.tar.zst"
    f = replace(f, placed_images={old: "0" * 64})
    shown = [
        c.display() for s in upgrade.node_steps(ctx, w1, f, ready_timeout=30) for c in s.commands
    ]
    rm = [x for x in shown if x.startswith("rm -f")]
    assert rm == [f"rm -f {facts.IMAGES_DIR}/{old} {facts.PLACED_IMAGES}/{old}"]
    assert any("systemctl restart --no-block rke2-agent" in x for x in shown)  # wait bounds it
    wait = steps[2].actions[0]
    assert isinstance(wait, WaitReady) and wait.version == NEW
    assert shown.index(install[0]) < shown.index(rm[0])
    no_drain = _cluster(tmp_path, "  options: {upgrade: {drain: false}}\n")
    ctx2 = Context(no_drain, _manifest(NEW), "0123456789abcdef", Secret("t"))
    first = upgrade.node_steps(ctx2, no_drain.node("cp2"), f, ready_timeout=30)[0]
    assert first.node == "cp2" and [c.display().split()[-2] for c in first.commands] == ["cordon"]


def test_snapshot_command_uses_the_prefix_and_names_the_target() -> None:
    cmd = upgrade.snapshot_command(_facts(OLD), NEW)
    shown = cmd.display()
    assert shown.startswith("/opt/rke2/bin/rke2 etcd-snapshot save --name mk8s-pre-v1.29.10-rke2r2")
    assert upgrade.SNAPSHOT_DIR in shown
