"""Disaster recovery end to end: every server of a cluster is lost; three fresh hosts
with new addresses get the cluster back from the snapshot, the token and the bundle
alone, run by mk8s from another directory (a new operator machine) that holds nothing
but those and a cluster.yaml naming the new hosts.

[rancher/rke2-docs docs/datastore/backup_restore.md, "Restoring To New Hosts".]
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.support.hosts import hostset_for_tests
from tests.support.lifecycle import (
    KC,
    configmap,
    etcd_members,
    mk8s,
    ready_versions,
    records,
    restore_argv,
    set_configmap,
)
from tests.support.world import World, deploy, write_cluster

pytestmark = pytest.mark.hosts

NAMES = ["cp1", "cp2", "cp3"]
TAG = "v1.28.15+rke2r1"


def test_three_new_hosts_restore_the_cluster_from_the_snapshot_token_and_bundle(
    tmp_path: Path,
    world: World,
) -> None:
    old_dir, new_dir, media = tmp_path / "old", tmp_path / "new", tmp_path / "media"
    for d in (old_dir, new_dir, media):
        d.mkdir()
    with hostset_for_tests(3, tmp_path / "hosts-old", names=NAMES) as old:
        write_cluster(old_dir / "cluster.yaml", old, [(n, "server") for n in NAMES])
        r = deploy(old_dir, world.bundle, world.pub)
        assert r.returncode == 0, r.stdout + r.stderr
        set_configmap(old_dir / "demo.kubeconfig", "kept", "v")
        r = mk8s("backup", "-f", "cluster.yaml", cwd=old_dir)
        assert r.returncode == 0, r.stdout + r.stderr
        rec = records(old_dir)[-1]
        ns = old.by_name("cp1").run(f"{KC} get --raw /api/v1/namespaces/kube-system")
        uid = json.loads(ns.stdout)["metadata"]["uid"]
        set_configmap(old_dir / "demo.kubeconfig", "lost", "x")  # after the snapshot
        old_addresses = {h.address for h in old.hosts}
        # what the operator carried away: the snapshot with its index, the token
        home = old_dir / ".mk8s" / "demo" / "snapshots"
        shutil.copy(home / rec["file"], media / rec["file"])
        shutil.copy(home / "index.json", media / "index.json")
        shutil.copy(old_dir / ".mk8s" / "demo" / "token", new_dir / "token")
    # every old server is gone; three fresh hosts, other addresses
    with hostset_for_tests(3, tmp_path / "hosts-new", names=NAMES) as new:
        assert not old_addresses & {h.address for h in new.hosts}
        write_cluster(
            new_dir / "cluster.yaml",
            new,
            [(n, "server") for n in NAMES],
            extra_rke2="    token: {file: ./token}",
        )
        snap = media / rec["file"]
        dry = mk8s(*restore_argv(snap, world.bundle, world.pub, "--dry-run"), cwd=new_dir)
        assert dry.returncode == 0, dry.stdout + dry.stderr
        assert "--cluster-reset-restore-path=" in dry.stdout and "install.sh" in dry.stdout
        r = mk8s(*restore_argv(snap, world.bundle, world.pub, "--yes"), cwd=new_dir)
        assert r.returncode == 0, r.stdout + r.stderr
        kc = new_dir / "demo.kubeconfig"
        assert new.by_name("cp1").address in kc.read_text()
        assert configmap(kc, "kept") == "v" and configmap(kc, "lost") is None
        assert ready_versions(new, "cp3") == {n: (True, TAG) for n in NAMES}
        members = etcd_members(new, "cp2")
        assert len(members) == 3 and not any(m.get("isLearner") for m in members)
        peers = {u.split("//")[1].split(":")[0] for m in members for u in m["peerURLs"]}
        assert peers == {h.address for h in new.hosts}
        ns = new.by_name("cp2").run(f"{KC} get --raw /api/v1/namespaces/kube-system")
        assert json.loads(ns.stdout)["metadata"]["uid"] == uid == rec["clusterId"]
        # the cluster is mk8s's again: a deploy of the same bundle changes nothing
        again = deploy(new_dir, world.bundle, world.pub)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "uploaded 0 B" in again.stdout
