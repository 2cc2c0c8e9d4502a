"""Safe removal end to end on test hosts (3 servers + 1 agent, the RKE2 stand-in with its
real etcd): ``reset --node`` of a server whose removal would cost etcd its quorum is
refused (exit 2) and changes nothing; with quorum the server's etcd member goes with
it and the cluster stays healthy; a deploy names the cluster's nodes that cluster.yaml
no longer lists and leaves them alone."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.hosts import HostSet, hostset_for_tests
from tests.support.standin_nodes import etcd_members
from tests.support.world import World, audit, deploy, mk8s, write_cluster

pytestmark = pytest.mark.hosts

NAMES = ["cp1", "cp2", "cp3", "w1"]
ROLES = {"cp1": "server", "cp2": "server", "cp3": "server", "w1": "agent"}
KUBECTL = "/var/lib/rancher/rke2/bin/kubectl --kubeconfig /etc/rancher/rke2/rke2.yaml"


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
    world: World,
) -> Iterator[tuple[HostSet, Path]]:
    d = tmp_path_factory.mktemp("removal")
    with hostset_for_tests(4, d / "hosts", names=NAMES) as hs:
        write_cluster(d / "cluster.yaml", hs, [(n, ROLES[n]) for n in NAMES])
        r = deploy(d, world.bundle, world.pub)
        assert r.returncode == 0, r.stdout + r.stderr
        yield hs, d


def member_nodes(hs: HostSet) -> list[str]:
    return [m["name"].rsplit("-", 1)[0] for m in etcd_members(hs.by_name("cp1"))]


def sent(d: Path, since: int) -> list[tuple[str, str]]:
    return [(str(x["node"]), str(x["command"])) for x in audit(d)[since:] if "command" in x]


def ready(hs: HostSet) -> dict[str, bool]:
    r = hs.by_name("cp1").run(f"{KUBECTL} get nodes -o json", check=True)
    return {
        i["metadata"]["name"]: any(
            c["type"] == "Ready" and c["status"] == "True" for c in i["status"]["conditions"]
        )
        for i in json.loads(r.stdout)["items"]
    }


def test_removing_a_server_without_quorum_is_refused(cluster: tuple[HostSet, Path]) -> None:
    hs, d = cluster
    cp3 = hs.by_name("cp3")
    cp3.run("systemctl stop rke2-server", check=True, timeout=120)
    try:
        start = len(audit(d))
        r = mk8s("reset", "-f", "cluster.yaml", "--node", "cp2", "--yes", cwd=d)
        assert r.returncode == 2, r.stdout + r.stderr
        assert "refusing to remove cp2" in r.stderr and "quorum" in r.stderr
        assert "mk8s reset --node cp3 --yes" in r.stderr and "Traceback" not in r.stderr
        # nothing changed: no delete, no uninstall; cp2 runs, etcd has its three members
        assert not [c for _, c in sent(d, start) if "delete" in c or "uninstall" in c]
        assert hs.by_name("cp2").run("systemctl is-active rke2-server").stdout.strip() == "active"
        assert member_nodes(hs) == ["cp1", "cp2", "cp3"]
    finally:
        cp3.run("systemctl start rke2-server", timeout=300)
    deadline = time.monotonic() + 60
    while not ready(hs).get("cp3"):
        assert time.monotonic() < deadline, "cp3 did not come back"
        time.sleep(0.5)


def test_removing_a_server_with_quorum_removes_its_member(cluster: tuple[HostSet, Path]) -> None:
    hs, d = cluster
    time.sleep(5)  # etcd removes a member once the others were connected for 5 s
    r = mk8s("reset", "-f", "cluster.yaml", "--node", "cp3", "--yes", cwd=d)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "etcd keeps quorum without it (2 of 2 members up)" in r.stderr
    assert "cp3: its etcd member is removed" in r.stderr
    assert member_nodes(hs) == ["cp1", "cp2"]
    assert not hs.by_name("cp3").path("/var/lib/rancher/rke2/server/db").exists()
    assert ready(hs) == {"cp1": True, "cp2": True, "w1": True}
    # the cluster is healthy: the real kubectl writes through it
    kubectl = shutil.which("kubectl")
    assert kubectl, "a real kubectl is needed"
    p = subprocess.run(
        [kubectl, "--kubeconfig", str(d / "demo.kubeconfig"), "create", "configmap",
         "after-removal", "--from-literal=k=v"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr


def test_deploy_names_the_nodes_cluster_yaml_no_longer_lists(
    cluster: tuple[HostSet, Path],
    world: World,
) -> None:
    hs, d = cluster
    write_cluster(d / "cluster.yaml", hs, [("cp1", "server")])
    start = len(audit(d))
    r = deploy(d, world.bundle, world.pub)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 node(s) that cluster.yaml does not list, left alone" in r.stderr
    assert "cp2 (server, etcd member)" in r.stderr and "w1" in r.stderr
    # left alone: not a command on them, still members and Ready
    assert {n for n, _ in sent(d, start)} == {"cp1"}
    assert member_nodes(hs) == ["cp1", "cp2"]
    assert ready(hs) == {"cp1": True, "cp2": True, "w1": True}
