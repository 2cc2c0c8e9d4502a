"""mk8s/deploy/rke2config.py: options that move RKE2's paths (data-dir, write-kubeconfig,
private-registry, etcd-snapshot-dir) are honoured by every file mk8s touches."""

from __future__ import annotations

from pathlib import Path

from mk8s.deploy.builders import facts, kubectl, plan
from mk8s.deploy.builders import upgradeplan as upgrade
from tests.support.clusters import (
    contract_cluster,
    debian_node,
    member_context,
)

# -- options that move paths are honoured everywhere ---------------------------------
MOVED = (
    "    config: {data-dir: /data/rke2, private-registry: /etc/mk8s/reg.yaml}\n"
    "    serverConfig: {write-kubeconfig: /root/admin.yaml, etcd-snapshot-dir: /backup/snaps}\n"
    "    registries: {mirrors: {docker.io: {}}}\n"
)


def test_moved_paths_are_used_for_every_file_mk8s_touches(tmp_path: Path) -> None:
    c = contract_cluster(tmp_path, rke2=MOVED)
    cp1, w1 = c.node("cp1"), c.node("w1")
    sp, ap = c.paths(cp1), c.paths(w1)
    assert (sp.images_dir, sp.manifests_dir, sp.node_token) == (
        "/data/rke2/agent/images",
        "/data/rke2/server/manifests",
        "/data/rke2/server/node-token",
    )
    assert (sp.kubectl, sp.kubeconfig, sp.registries, sp.snapshot_dir) == (
        "/data/rke2/bin/kubectl",
        "/root/admin.yaml",
        "/etc/mk8s/reg.yaml",
        "/backup/snaps",
    )
    assert ap.kubeconfig == "/etc/rancher/rke2/rke2.yaml" and ap.data_dir == "/data/rke2"
    shown = " ".join(
        x.display() for x in plan.install_step(member_context(c), cp1, debian_node()).commands
    )
    assert "/data/rke2/agent/images/rke2-images.linux-amd64.tar.zst" in shown
    assert "/etc/mk8s/reg.yaml" in shown and "/var/lib/rancher" not in shown
    gather = facts.gather("/var/lib/mk8s/b1d", c.rke2.prefixes, sp).display()
    assert "/data/rke2/server/db" in gather and "/data/rke2/agent/images" in gather
    assert kubectl.kubeconfig_command(sp).display() == "cat /root/admin.yaml"
    assert (
        kubectl.nodes_command(sp)
        .display()
        .startswith("/data/rke2/bin/kubectl --kubeconfig /root/admin.yaml get nodes")
    )
    assert "RKE2_DATA_DIR=/data/rke2 exec" in kubectl.uninstall_command(ap).display()
    assert "RKE2_DATA_DIR" not in kubectl.uninstall_command(c.paths(cp1).__class__()).display()
    snap = upgrade.snapshot_command(debian_node(), "v1.29.1+rke2r1", sp).display()
    assert "/backup/snaps/mk8s-pre-v1.29.1-rke2r1" in snap
