"""A rollback by hand on the stand-in (CONTRACT VS6): the one downgrade it takes is
rancher/rke2-docs docs/upgrades/roll-back.md's: every node stopped (rke2-killall.sh),
the older RKE2 installed, the first server's datastore restored from a snapshot taken on
that older release (``--cluster-reset --cluster-reset-restore-path``), the other servers
rejoining without their ``server/db``, then the agents. A plain downgrade stays refused
(VS2), a snapshot newer than the binary is refused, and so is a node that rolls back
while its servers still run the newer release.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.hosts import Host
from tests.support.standin_nodes import KUBECTL, install, ssh, start, why_start_failed
from tests.support.standin_upgrade import cluster, url, versions, wait_version
from tests.support.upstream import NEW, OLD

pytestmark = pytest.mark.hosts

DB = "/var/lib/rancher/rke2/server/db"
RKE2 = "/usr/local/bin/rke2"
KILLALL = "/usr/local/bin/rke2-killall.sh"


def snapshot(h: Host, name: str) -> str:
    p = ssh(h, f"{RKE2} etcd-snapshot save --name {name}")
    m = re.search(rf"Saving etcd snapshot to ({DB}/snapshots/{name}-{h.name}-\d+)", p.stderr)
    assert m, p.stderr
    return m.group(1)


def upgrade_all(nodes: dict[str, Host], releases: dict[str, Path]) -> None:
    for name, role in (("cp1", "server"), ("cp2", "server"), ("w1", "agent")):
        install(nodes[name], releases[NEW])
        ssh(nodes[name], f"systemctl restart rke2-{role}")
        wait_version(nodes["cp1"], name, NEW)


def test_a_rollback_with_the_old_snapshot_is_taken(
    nodes: dict[str, Host],
    releases: dict[str, Path],
) -> None:
    cp1, cp2, w1 = nodes["cp1"], nodes["cp2"], nodes["w1"]
    cluster(nodes, releases, OLD)
    pre = snapshot(cp1, "pre")
    upgrade_all(nodes, releases)
    assert versions(cp1) == {"cp1": NEW, "cp2": NEW, "w1": NEW}
    for h in (cp1, cp2, w1):
        ssh(h, KILLALL)
        install(h, releases[OLD])
    # the older binary on a datastore the newer release wrote: still refused (VS2)
    why = why_start_failed(cp1, "server")
    assert f"refusing to start {OLD}: this node last ran {NEW}" in why
    assert "not restored from a snapshot" in why
    ssh(cp1, f"{RKE2} server --cluster-reset --cluster-reset-restore-path={pre}")
    start(cp1, "server")
    assert (
        f"Rolling this node back from {NEW} to {OLD}"
        in ssh(cp1, "journalctl -u rke2-server").stdout
    )
    ssh(cp2, f"rm -rf {DB}")
    start(cp2, "server")
    start(w1, "agent")
    for n in ("cp1", "cp2", "w1"):
        wait_version(cp1, n, OLD)
    # the record of the restore goes with the reset flag at that start
    assert not cp1.path(f"{DB}/reset-flag").exists()
    assert not cp1.path(f"{DB}/mk8s-standin-restored-release").exists()


def test_a_snapshot_newer_than_the_binary_is_refused(
    nodes: dict[str, Host],
    releases: dict[str, Path],
) -> None:
    cp1, cp2, w1 = nodes["cp1"], nodes["cp2"], nodes["w1"]
    cluster(nodes, releases, OLD)
    upgrade_all(nodes, releases)
    post = snapshot(cp1, "post")
    for h in (cp1, cp2, w1):
        ssh(h, KILLALL)
    install(cp1, releases[OLD])
    ssh(cp1, f"{RKE2} server --cluster-reset --cluster-reset-restore-path={post}")
    why = why_start_failed(cp1, "server")
    assert f"the datastore was restored from a snapshot taken on {NEW}" in why
    assert cp1.path(f"{DB}/mk8s-standin-restored-release").read_text().strip() == NEW


def test_a_node_that_rolls_back_before_its_servers_is_refused(
    nodes: dict[str, Host],
    releases: dict[str, Path],
) -> None:
    cp1, cp2 = nodes["cp1"], nodes["cp2"]
    cluster(nodes, releases, OLD)
    upgrade_all(nodes, releases)
    # cp2 leaves the cluster (its etcd member with its Node, while both run: quorum),
    # then comes back without a datastore at the older release while cp1 runs NEW
    ssh(cp1, f"{KUBECTL} delete node cp2")
    ssh(cp2, f"{KILLALL} && rm -rf {DB}")
    install(cp2, releases[OLD])
    why = why_start_failed(cp2, "server")
    assert f"refusing to start {OLD}: this node last ran {NEW}" in why
    assert f"its servers run {NEW}" in why
    assert url(cp1) in ssh(cp2, "cat /etc/rancher/rke2/config.yaml").stdout
