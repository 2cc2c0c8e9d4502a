"""A patch upgrade deployed from a delta on test hosts (a server and an agent).

The cluster runs v1.28.14 from its full bundle; ``deploy --bundle DELTA --base OLD``
upgrades it to v1.28.15 and places upstream's own files; deploying the full v1.28.15
bundle afterwards uploads and changes nothing (the delta left exactly what the full
bundle would have); a missing or wrong base is exit 3 before any node is contacted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.deltas import IMAGES, NEW, OLD, World, world
from tests.support.hosts import HostSet, hostset_for_tests
from tests.support.world import audit, deploy, write_cluster

pytestmark = pytest.mark.hosts

NODES = [("d1", "server"), ("d2", "agent")]
IMAGES_DIR = "/var/lib/rancher/rke2/agent/images"


@pytest.fixture(scope="module")
def w(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with world(tmp_path_factory.mktemp("delta-hosts"), image_size=2 << 20) as w:
        yield w


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HostSet, Path]]:
    d = tmp_path_factory.mktemp("delta-cluster")
    with hostset_for_tests(2, d / "hosts", names=[n for n, _ in NODES]) as hs:
        write_cluster(d / "cluster.yaml", hs, NODES, name="delta")
        yield hs, d


def versions(hs: HostSet, server: str = "d1") -> dict[str, str]:
    r = hs.by_name(server).run(
        "/var/lib/rancher/rke2/bin/kubectl --kubeconfig /etc/rancher/rke2/rke2.yaml get nodes -o json"
    )
    assert r.returncode == 0, r.stderr
    return {
        i["metadata"]["name"]: i["status"]["nodeInfo"]["kubeletVersion"]
        for i in json.loads(r.stdout)["items"]
    }


def placed(hs: HostSet, node: str) -> dict[str, str]:
    r = hs.by_name(node).run(f"cd {IMAGES_DIR} && sha256sum *")
    assert r.returncode == 0, r.stderr
    return {name: digest for digest, name in (ln.split() for ln in r.stdout.splitlines())}


def test_first_deploy_from_the_full_base(cluster: tuple[HostSet, Path], w: World) -> None:
    hs, d = cluster
    r = deploy(d, w.bundles["old.tar.zst"], w.pub)
    assert r.returncode == 0, r.stdout + r.stderr
    assert set(versions(hs).values()) == {OLD}


def test_a_delta_without_its_base_touches_no_node(
    cluster: tuple[HostSet, Path], w: World, tmp_path: Path
) -> None:
    hs, d = cluster
    before = len(audit(d, "delta"))
    for extra in ((), ("--base", str(w.bundles["new.tar.zst"]))):
        r = deploy(d, w.bundles["delta.tar.zst"], w.pub, *extra)
        assert r.returncode == 3, r.stdout + r.stderr
        assert "old.tar.zst" in r.stderr and OLD in r.stderr, r.stderr
    assert len(audit(d, "delta")) == before
    assert set(versions(hs).values()) == {OLD}


def test_the_delta_upgrades_the_cluster_with_upstreams_files(
    cluster: tuple[HostSet, Path], w: World
) -> None:
    hs, d = cluster
    r = deploy(d, w.bundles["delta.tar.zst"], w.pub, "--base", str(w.bundles["old.tar.zst"]))
    assert r.returncode == 0, r.stdout + r.stderr
    assert set(versions(hs).values()) == {NEW}
    want = hashlib.sha256(w.up.asset_bytes(NEW, IMAGES)).hexdigest()
    for node, _ in NODES:
        assert placed(hs, node) == {IMAGES: want}, node


def test_the_full_bundle_after_the_delta_changes_nothing(
    cluster: tuple[HostSet, Path], w: World
) -> None:
    """Everything the delta placed is what the full bundle places, where it places it."""
    hs, d = cluster
    before = len(audit(d, "delta"))
    r = deploy(d, w.bundles["new.tar.zst"], w.pub)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "uploaded 0 B" in r.stdout, r.stdout
    new = audit(d, "delta")[before:]
    assert not [x for x in new if x.get("file")]
    commands = [str(x.get("command", "")) for x in new if x.get("step") != "facts"]
    words = ("systemctl restart", "systemctl start", "INSTALL_RKE2_", "drain")
    assert not [c for c in commands if any(w in c for w in words)], commands
    assert set(versions(hs).values()) == {NEW}


# -- a release another zstd built: the archive is placed as a raw-block zstd frame --------
@pytest.fixture(scope="module")
def fallback(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with world(tmp_path_factory.mktemp("delta-fb"), image_size=2 << 20, zstd_level=12) as w:
        yield w


def test_a_delta_of_a_release_another_zstd_built_upgrades_too(
    tmp_path_factory: pytest.TempPathFactory, fallback: World
) -> None:
    """The stand-in accepts the re-packed archive by its content, as RKE2 imports any
    tarball holding its release's images."""
    d = tmp_path_factory.mktemp("delta-fb-cluster")
    w = fallback
    with hostset_for_tests(1, d / "hosts", names=["f1"]) as hs:
        write_cluster(d / "cluster.yaml", hs, [("f1", "server")], name="delta")
        r = deploy(d, w.bundles["old.tar.zst"], w.pub)
        assert r.returncode == 0, r.stdout + r.stderr
        r = deploy(d, w.bundles["delta.tar.zst"], w.pub, "--base", str(w.bundles["old.tar.zst"]))
        assert r.returncode == 0, r.stdout + r.stderr
        assert versions(hs, "f1") == {"f1": NEW}
        files = placed(hs, "f1")
        assert set(files) == {IMAGES} and files[IMAGES] != w.up.asset_sha256(NEW, IMAGES)
