"""Rollback of an upgrade end to end: deploy v1.28, upgrade to v1.29 (deploy takes a
pre-upgrade snapshot and records it in the snapshot index), then ``mk8s restore`` of
that snapshot with the v1.28 bundle: every node back on v1.28 (the one downgrade mk8s
allows), the API serving the pre-upgrade state.

[rancher/rke2-docs docs/upgrades/roll-back.md]
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.hosts import HostSet, hostset_for_tests
from tests.support.lifecycle import (
    configmap,
    mk8s,
    ready_versions,
    records,
    restore_argv,
    set_configmap,
)
from tests.support.world import World, bundle_for, deploy, write_cluster

pytestmark = pytest.mark.hosts

NAMES = ["cp1", "cp2", "cp3", "w1"]
ROLES = {"cp1": "server", "cp2": "server", "cp3": "server", "w1": "agent"}
OLD, NEW = "v1.28.15+rke2r1", "v1.29.10+rke2r1"


@pytest.fixture(scope="module")
def upgraded(
    tmp_path_factory: pytest.TempPathFactory,
    world: World,
) -> Iterator[tuple[HostSet, Path, Path]]:
    """v1.28 deployed with ConfigMap "before", then upgraded to v1.29; (hosts, dir, the
    v1.29 bundle)."""
    d = tmp_path_factory.mktemp("rollback")
    new = bundle_for(world.up, world.dir, world.key, "v1.29.x")
    with hostset_for_tests(4, d / "hosts", names=NAMES) as hs:
        write_cluster(d / "cluster.yaml", hs, [(n, ROLES[n]) for n in NAMES])
        r = deploy(d, world.bundle, world.pub)
        assert r.returncode == 0, r.stdout + r.stderr
        set_configmap(d / "demo.kubeconfig", "before", "v1")
        r = deploy(d, new, world.pub)
        assert r.returncode == 0, r.stdout + r.stderr
        assert ready_versions(hs, "cp1") == {n: (True, NEW) for n in NAMES}
        yield hs, d, new


def test_the_pre_upgrade_snapshot_is_in_the_index(
    upgraded: tuple[HostSet, Path, Path],
) -> None:
    _hs, d, _new = upgraded
    (rec,) = [r for r in records(d) if r["kind"] == "pre-upgrade"]
    assert rec["rke2Version"] == OLD and rec["name"] == "mk8s-pre-v1.29.10-rke2r1"
    assert rec["file"].startswith("mk8s-pre-v1.29.10-rke2r1-cp1-") and rec["clusterId"]
    f = d / ".mk8s" / "demo" / "snapshots" / rec["file"]
    assert f.stat().st_mode & 0o777 == 0o600 and f.stat().st_size == rec["size"]


def test_restoring_it_with_the_new_bundle_is_refused(
    upgraded: tuple[HostSet, Path, Path],
    world: World,
) -> None:
    hs, d, new = upgraded
    (rec,) = [r for r in records(d) if r["kind"] == "pre-upgrade"]
    snap = d / ".mk8s" / "demo" / "snapshots" / rec["file"]
    r = mk8s(*restore_argv(snap, new, world.pub, "--yes"), cwd=d)
    assert r.returncode == 2 and f"was taken on {OLD}" in r.stderr, r.stderr
    assert ready_versions(hs, "cp1") == {n: (True, NEW) for n in NAMES}


def test_rollback_is_a_restore_of_the_pre_upgrade_snapshot_with_the_old_bundle(
    upgraded: tuple[HostSet, Path, Path],
    world: World,
) -> None:
    hs, d, _new = upgraded
    kc = d / "demo.kubeconfig"
    set_configmap(kc, "after", "on-1.29")
    set_configmap(kc, "before", "v2")
    (rec,) = [r for r in records(d) if r["kind"] == "pre-upgrade"]
    snap = d / ".mk8s" / "demo" / "snapshots" / rec["file"]
    r = mk8s(*restore_argv(snap, world.bundle, world.pub, "--yes"), cwd=d)
    assert r.returncode == 0, r.stdout + r.stderr
    assert ready_versions(hs, "cp2") == {n: (True, OLD) for n in NAMES}
    for n in NAMES:
        out = hs.by_name(n).run("/usr/local/bin/rke2 --version").stdout
        assert out.startswith(f"rke2 version {OLD}"), (n, out)
        images = sorted(
            p.name for p in hs.by_name(n).path("/var/lib/rancher/rke2/agent/images").iterdir()
        )
        assert images == ["rke2-images.linux-amd64.tar.zst"], (n, images)
    assert configmap(kc, "after") is None and configmap(kc, "before") == "v1"
    st = mk8s("status", "-f", "cluster.yaml", cwd=d)
    assert st.returncode == 0 and "MIXED" not in st.stdout and NEW not in st.stdout, st.stdout
    # the cluster is v1.28 again for deploy too: the same bundle changes nothing
    again = deploy(d, world.bundle, world.pub)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "uploaded 0 B" in again.stdout
