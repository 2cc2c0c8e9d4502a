"""Rolling upgrade end to end on test hosts: 3 servers + 2 agents from v1.28 to v1.29,
the refusals that change nothing, a failed node that stops the upgrade and a re-run
that finishes it, and a re-run after success that changes nothing."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.hosts import HostSet, hostset_for_tests
from tests.support.world import World, audit, bundle_for, deploy, mk8s, write_cluster

pytestmark = pytest.mark.hosts

NAMES = ["cp1", "cp2", "cp3", "w1", "w2"]
ROLES = {"cp1": "server", "cp2": "server", "cp3": "server", "w1": "agent", "w2": "agent"}


@pytest.fixture(scope="module")
def bundles(world: World) -> dict[str, Path]:
    return {
        "1.28": world.bundle,
        "1.29": bundle_for(world.up, world.dir, world.key, "v1.29.x"),
        "1.30": bundle_for(world.up, world.dir, world.key, "v1.30.x"),
    }


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HostSet, Path]]:
    d = tmp_path_factory.mktemp("upgrade")
    with hostset_for_tests(5, d / "hosts", names=NAMES) as hs:
        write_cluster(d / "cluster.yaml", hs, [(n, ROLES[n]) for n in NAMES])
        yield hs, d


def versions(hs: HostSet) -> dict[str, str]:
    r = hs.by_name("cp1").run(
        "/var/lib/rancher/rke2/bin/kubectl --kubeconfig /etc/rancher/rke2/rke2.yaml get nodes -o json"
    )
    assert r.returncode == 0, r.stderr
    return {
        i["metadata"]["name"]: i["status"]["nodeInfo"]["kubeletVersion"]
        for i in json.loads(r.stdout)["items"]
    }


def ready(hs: HostSet) -> dict[str, bool]:
    r = hs.by_name("cp1").run(
        "/var/lib/rancher/rke2/bin/kubectl --kubeconfig /etc/rancher/rke2/rke2.yaml get nodes -o json"
    )
    out = {}
    for i in json.loads(r.stdout)["items"]:
        conds = {c["type"]: c["status"] for c in i["status"]["conditions"]}
        out[i["metadata"]["name"]] = conds.get("Ready") == "True"
    return out


def test_first_deploy_at_1_28(
    cluster: tuple[HostSet, Path],
    bundles: dict[str, Path],
    world: World,
) -> None:
    hs, d = cluster
    r = deploy(d, bundles["1.28"], world.pub)
    assert r.returncode == 0, r.stdout + r.stderr
    assert set(versions(hs).values()) == {"v1.28.15+rke2r1"}


def test_skipping_a_minor_is_refused_and_changes_nothing(
    cluster: tuple[HostSet, Path],
    bundles: dict[str, Path],
    world: World,
) -> None:
    hs, d = cluster
    before = len(audit(d))
    r = deploy(d, bundles["1.30"], world.pub)
    assert r.returncode == 1, r.stderr
    assert "skips a minor" in r.stderr and "v1.29.x bundle first" in r.stderr
    assert not [x for x in audit(d)[before:] if "install.sh" in str(x.get("command", ""))]
    assert set(versions(hs).values()) == {"v1.28.15+rke2r1"}


def test_a_node_down_is_refused(
    cluster: tuple[HostSet, Path],
    bundles: dict[str, Path],
    world: World,
) -> None:
    hs, d = cluster
    hs.by_name("w2").run("systemctl stop rke2-agent", timeout=60)
    deadline = time.monotonic() + 60
    while ready(hs).get("w2") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not ready(hs).get("w2")
    try:
        r = deploy(d, bundles["1.29"], world.pub, "--wait", "20")
        assert r.returncode == 1, r.stderr
        assert "w2" in r.stderr and "not Ready" in r.stderr and "nothing was changed" in r.stderr
        assert set(versions(hs).values()) == {"v1.28.15+rke2r1"}
    finally:
        hs.by_name("w2").run("systemctl start rke2-agent", timeout=120)


def test_dry_run_prints_the_upgrade_plan(
    cluster: tuple[HostSet, Path],
    bundles: dict[str, Path],
    world: World,
) -> None:
    _hs, d = cluster
    r = deploy(d, bundles["1.29"], world.pub, "--dry-run")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "upgrade from v1.28.15+rke2r1 to v1.29.10+rke2r1" in out
    assert "etcd-snapshot save --name mk8s-pre-v1.29.10-rke2r1" in out
    assert out.index("drain cp1") < out.index("drain cp2") < out.index("drain w1")


def test_a_failed_agent_stops_the_upgrade_and_a_rerun_finishes_it(
    cluster: tuple[HostSet, Path],
    bundles: dict[str, Path],
    world: World,
) -> None:
    hs, d = cluster
    bid = json.loads(mk8s("bundle", "inspect", str(bundles["1.29"]), "--json", cwd=d).stdout)[
        "bundleId"
    ]
    # w1's install directory is a file: install.sh cannot be set up there.
    blocker = f"/var/lib/mk8s/{bid}/install-amd64"
    hs.by_name("w1").run(f"mkdir -p /var/lib/mk8s/{bid} && touch {blocker}")
    before = len(audit(d))
    r = deploy(d, bundles["1.29"], world.pub)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "w1" in r.stdout + r.stderr
    v = versions(hs)
    assert {v[n] for n in ("cp1", "cp2", "cp3")} == {"v1.29.10+rke2r1"}
    assert v["w1"] == v["w2"] == "v1.28.15+rke2r1"  # w2 was never touched
    new = audit(d)[before:]
    restarts = [
        (x["node"], x["command"]) for x in new if "systemctl restart" in str(x.get("command", ""))
    ]
    assert [n for n, _ in restarts] == ["cp1", "cp2", "cp3"]  # servers one at a time, in order
    home = d / ".mk8s" / "demo" / "snapshots"
    snaps = [p for p in home.iterdir() if p.name != "index.json"]
    assert len(snaps) == 1 and snaps[0].name.startswith("mk8s-pre-v1.29.10-rke2r1-cp1-")
    index = json.loads((home / "index.json").read_text())["snapshots"]
    assert [(r["file"], r["kind"]) for r in index] == [(snaps[0].name, "pre-upgrade")]
    assert oct(snaps[0].stat().st_mode & 0o777) == "0o600"
    assert any(x.get("step") == "snapshot" and x.get("sha256") for x in new)
    hs.by_name("w1").run(f"rm -f {blocker}")
    r = deploy(d, bundles["1.29"], world.pub)
    assert r.returncode == 0, r.stdout + r.stderr
    assert set(versions(hs).values()) == {"v1.29.10+rke2r1"}
    for n in NAMES:
        images = sorted(
            p.name for p in hs.by_name(n).path("/var/lib/rancher/rke2/agent/images").iterdir()
        )
        assert images == ["rke2-images.linux-amd64.tar.zst"], (n, images)
    get = (
        hs.by_name("cp1")
        .run("/var/lib/rancher/rke2/bin/kubectl --kubeconfig /etc/rancher/rke2/rke2.yaml get nodes")
        .stdout
    )
    assert "SchedulingDisabled" not in get
    st = mk8s("status", "-f", "cluster.yaml", cwd=d)
    assert st.returncode == 0 and "MIXED" not in st.stdout


def test_a_rerun_after_the_upgrade_changes_nothing(
    cluster: tuple[HostSet, Path],
    bundles: dict[str, Path],
    world: World,
) -> None:
    _hs, d = cluster
    before = len(audit(d))
    r = deploy(d, bundles["1.29"], world.pub)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "uploaded 0 B" in r.stdout
    changed = [
        str(x.get("command", ""))
        for x in audit(d)[before:]
        if any(
            w in str(x.get("command", ""))
            for w in (
                "systemctl restart",
                "systemctl start",
                "install.sh",
                "cordon",
                "drain",
                "etcd-snapshot",
            )
        )
    ]
    assert changed == []


def test_downgrade_is_refused(
    cluster: tuple[HostSet, Path],
    bundles: dict[str, Path],
    world: World,
) -> None:
    hs, d = cluster
    r = deploy(d, bundles["1.28"], world.pub)
    assert r.returncode == 1, r.stderr
    assert "never downgraded" in r.stderr
    assert set(versions(hs).values()) == {"v1.29.10+rke2r1"}
