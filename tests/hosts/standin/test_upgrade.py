"""Upgrades of the stand-in on test hosts: the example upstream serves several minors of
the stand-in release (tests/standin/test_example_upstream.py), and the stand-in refuses
what RKE2 and Kubernetes refuse.

Nodes are driven by hand, without mk8s, the way RKE2's air-gap upgrade goes: the new
release's install.sh with its artifacts (which puts the new images into agent/images),
then ``systemctl restart``; servers first, one at a time, then agents.  The refusals:
a downgrade on restart; a server more than one minor away from another running server
(or skipping a minor itself); an agent newer than the oldest running server; a node
whose agent/images lacks the images of the release it now runs.  Also
``rke2 etcd-snapshot save`` and kubectl cordon / drain / uncordon.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from tests.support.hosts import Host
from tests.support.standin_nodes import (
    ARCH,
    ART,
    IMAGES,
    KUBECTL,
    configure,
    install,
    ssh,
    start,
    wait_ready,
    why_agent_waits,
    why_start_failed,
)
from tests.support.standin_upgrade import (
    SNAPSHOTS,
    cluster,
    table,
    url,
    versions,
    wait_version,
)
from tests.support.upstream import NEW, OLD, R2, R3, SKIP


def upgrade(kubectl_on: Host, h: Host, role: str, release: Path, tag: str) -> None:
    """One node's turn, as RKE2's air-gap upgrade documents it."""
    ssh(kubectl_on, f"{KUBECTL} cordon {h.name}")
    ssh(
        kubectl_on,
        f"{KUBECTL} drain {h.name} --ignore-daemonsets --delete-emptydir-data --force"
        " --timeout=60s",
    )
    install(h, release)  # puts the new rke2-images.linux-ARCH.tar.zst into agent/images
    ssh(h, f"systemctl restart rke2-{role}")
    wait_version(kubectl_on, h.name, tag)
    ssh(kubectl_on, f"{KUBECTL} uncordon {h.name}")


@pytest.mark.hosts
def test_rolling_upgrade_by_hand(nodes: dict[str, Host], releases: dict[str, Path]) -> None:
    cp1, cp2, w1 = nodes["cp1"], nodes["cp2"], nodes["w1"]
    cluster(nodes, releases, OLD)
    assert versions(cp1) == {"cp1": OLD, "cp2": OLD, "w1": OLD}
    upgrade(cp1, cp1, "server", releases[NEW], NEW)
    # a mixed cluster: each node shows its own version
    assert versions(cp2) == {"cp1": NEW, "cp2": OLD, "w1": OLD}
    assert table(cp2)["cp1"][4] == NEW and table(cp2)["cp2"][4] == OLD
    upgrade(cp2, cp2, "server", releases[NEW], NEW)
    upgrade(cp1, w1, "agent", releases[NEW], NEW)
    assert versions(cp1) == {"cp1": NEW, "cp2": NEW, "w1": NEW}
    rows = table(cp2)
    assert {n: (r[1], r[4]) for n, r in rows.items()} == dict.fromkeys(rows, ("Ready", NEW))
    for h in (cp1, cp2, w1):
        assert ssh(h, "/usr/local/bin/rke2 --version").stdout.startswith(f"rke2 version {NEW}")
    assert json.loads(ssh(cp1, f"{KUBECTL} get --raw /version").stdout)["gitVersion"] == NEW
    log = ssh(cp1, "journalctl -u rke2-server").stdout
    assert f"Upgrading this node from {OLD} to {NEW}" in log
    # the node only ran genuine images of its release
    assert "is not an image tarball of" not in log


@pytest.mark.hosts
def test_downgrade_on_restart_is_refused(nodes: dict[str, Host], releases: dict[str, Path]) -> None:
    cp1 = nodes["cp1"]
    install(cp1, releases[R3])
    configure(cp1, "server", token="t")
    start(cp1, "server")
    # a respin is newer than the one before it: r3 -> r2 is a downgrade
    install(cp1, releases[R2])
    p = ssh(cp1, "systemctl restart rke2-server", ok=False)
    assert p.returncode != 0
    assert f"refusing to start {R2}: this node last ran {R3}" in p.stderr
    assert "downgrading RKE2 is not supported" in p.stderr
    assert ssh(cp1, "systemctl is-active rke2-server", ok=False).stdout.strip() == "failed"
    # a newer patch, then the next minor, are upgrades
    install(cp1, releases[OLD])
    ssh(cp1, "systemctl restart rke2-server")
    install(cp1, releases[NEW])
    ssh(cp1, "systemctl restart rke2-server")
    wait_version(cp1, "cp1", NEW)
    # and back to the older minor is refused; the node stays down until NEW is back
    install(cp1, releases[OLD])
    p = ssh(cp1, "systemctl restart rke2-server", ok=False)
    assert p.returncode != 0 and f"this node last ran {NEW}" in p.stderr
    install(cp1, releases[NEW])
    ssh(cp1, "systemctl restart rke2-server")
    wait_version(cp1, "cp1", NEW)


@pytest.mark.hosts
def test_agent_downgrade_is_refused(nodes: dict[str, Host], releases: dict[str, Path]) -> None:
    cp1, w1 = nodes["cp1"], nodes["w1"]
    install(cp1, releases[NEW])
    configure(cp1, "server", token="t")
    start(cp1, "server")
    install(w1, releases[NEW])
    configure(w1, "agent", server=url(cp1), token="t")
    start(w1, "agent")
    wait_version(cp1, "w1", NEW)
    install(w1, releases[OLD])
    ssh(w1, "systemctl stop rke2-agent")
    why = why_start_failed(w1, "agent")
    assert f"refusing to start {OLD}: this node last ran {NEW}" in why


@pytest.mark.hosts
def test_server_two_minors_apart_is_refused(
    nodes: dict[str, Host], releases: dict[str, Path]
) -> None:
    cp1, cp2 = nodes["cp1"], nodes["cp2"]
    install(cp1, releases[OLD])
    configure(cp1, "server", token="t")
    start(cp1, "server")
    # a new server at v1.30 joining a running v1.28 server
    install(cp2, releases[SKIP])
    configure(cp2, "server", server=url(cp1), token="t")
    p = start(cp2, "server", ok=False)
    assert p.returncode != 0
    assert f"version skew: server cp1 runs {OLD}, this server {SKIP}" in p.stderr
    assert "within one minor version" in p.stderr
    assert set(versions(cp1)) == {"cp1"}
    # at v1.28 it joins; straight to v1.30 on restart skips a minor: refused
    install(cp2, releases[OLD])
    start(cp2, "server")
    install(cp2, releases[SKIP])
    p = ssh(cp2, "systemctl restart rke2-server", ok=False)
    assert p.returncode != 0 and "skipping a minor version is not supported" in p.stderr
    # v1.29 next to v1.28 is fine; then v1.30 while cp1 still runs v1.28 is refused
    install(cp2, releases[NEW])
    ssh(cp2, "systemctl restart rke2-server")
    wait_version(cp1, "cp2", NEW)
    install(cp2, releases[SKIP])
    p = ssh(cp2, "systemctl restart rke2-server", ok=False)
    assert p.returncode != 0
    assert f"refusing to start kube-apiserver {SKIP}: version skew: server cp1 runs {OLD}" in (
        p.stderr
    )
    # with cp2 down, cp1 is one of two etcd members: no quorum, no API (etcd's own rule)
    assert ssh(cp1, f"{KUBECTL} get nodes", ok=False).returncode != 0
    install(cp2, releases[NEW])
    ssh(cp2, "systemctl restart rke2-server")
    assert versions(cp1) == {"cp1": OLD, "cp2": NEW}


@pytest.mark.hosts
def test_agent_newer_than_the_servers_is_refused(
    nodes: dict[str, Host], releases: dict[str, Path]
) -> None:
    cp1, cp2, w1 = nodes["cp1"], nodes["cp2"], nodes["w1"]
    for h in (cp1, cp2):
        install(h, releases[OLD])
    configure(cp1, "server", token="t")
    start(cp1, "server")
    configure(cp2, "server", server=url(cp1), token="t")
    start(cp2, "server")
    install(w1, releases[NEW])
    configure(w1, "agent", server=url(cp1), token="t")
    why = why_agent_waits(w1)  # refused by the server: the agent retries its join
    assert f"kubelet {NEW} is newer than kube-apiserver {OLD}" in why
    assert "w1" not in versions(cp1)
    # one server upgraded is not enough: the oldest running server counts
    install(cp1, releases[NEW])
    ssh(cp1, "systemctl restart rke2-server")
    wait_version(cp2, "cp1", NEW)
    why = why_agent_waits(w1)
    assert f"kubelet {NEW} is newer than kube-apiserver {OLD} on server cp2" in why
    # servers first, then the agent
    install(cp2, releases[NEW])
    ssh(cp2, "systemctl restart rke2-server")
    wait_version(cp1, "cp2", NEW)
    ssh(w1, "systemctl reset-failed rke2-agent; systemctl start rke2-agent")
    wait_version(cp1, "w1", NEW)


@pytest.mark.hosts
def test_only_old_images_after_install_of_the_new_release_is_refused(
    nodes: dict[str, Host], releases: dict[str, Path], tmp_path: Path
) -> None:
    cp1 = nodes["cp1"]
    install(cp1, releases[OLD])
    configure(cp1, "server", token="t")
    start(cp1, "server")
    # the new release without its image tarball: agent/images keeps v1.28's images,
    # under the very name v1.29's would have
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in releases[NEW].iterdir():
        if f.name != IMAGES:
            (bare / f.name).write_bytes(f.read_bytes())
    ssh(cp1, f"rm -rf {ART}")  # only the files of this release
    install(cp1, bare)
    images = cp1.path(f"/var/lib/rancher/rke2/agent/images/{IMAGES}")
    assert images.read_bytes() == (releases[OLD] / IMAGES).read_bytes()
    p = ssh(cp1, "systemctl restart rke2-server", ok=False)
    assert p.returncode != 0
    assert f"airgap images of {NEW} missing" in p.stderr
    assert f"{IMAGES} (sha256 " in p.stderr and "not " + NEW + "'s images" in p.stderr
    log = ssh(cp1, "journalctl -u rke2-server").stdout
    assert f"it needs {IMAGES} (sha256" in log and f"rke2-images-core.linux-{ARCH}" in log
    # v1.29's images next to v1.28's: starts (the old ones are only warned about)
    ssh(
        cp1,
        f"mv /var/lib/rancher/rke2/agent/images/{IMAGES} /var/lib/rancher/rke2/agent/images/old-{IMAGES}",
    )
    install(cp1, releases[NEW])
    ssh(cp1, "systemctl restart rke2-server")
    wait_version(cp1, "cp1", NEW)
    log = ssh(cp1, "journalctl -u rke2-server").stdout
    assert f"old-{IMAGES} is not an image tarball of {NEW}" in log


@pytest.mark.hosts
def test_etcd_snapshot_save(nodes: dict[str, Host], releases: dict[str, Path]) -> None:
    cp1, w1 = nodes["cp1"], nodes["w1"]
    for h in (cp1, w1):
        install(h, releases[OLD])
    configure(cp1, "server", token="t")
    start(cp1, "server")
    configure(w1, "agent", server=url(cp1), token="t")
    start(w1, "agent")
    wait_ready(cp1, {"cp1", "w1"})
    name = "mk8s-pre-" + NEW.replace("+", "-")
    t0 = int(time.time())
    p = ssh(cp1, f"/usr/local/bin/rke2 etcd-snapshot save --name {name}")
    # what mk8s runs after it: the newest file named NAME*
    path = ssh(cp1, f"ls -t {SNAPSHOTS}/{name}* | head -n 1").stdout.strip()
    m = re.fullmatch(rf"{SNAPSHOTS}/{re.escape(name)}-cp1-(\d+)", path)
    assert m and t0 <= int(m.group(1)) <= time.time() + 1, path
    assert f"Snapshot {name}-cp1-{m.group(1)} saved." in p.stderr
    assert f"Saving etcd snapshot to {path}" in p.stderr
    snap = cp1.path(path)
    assert snap.stat().st_mode & 0o777 == 0o600
    # a real etcd snapshot (etcdctl reads it) of the cluster's Nodes
    assert cp1.run(f"etcdctl snapshot status {path}").returncode == 0
    content = snap.read_bytes()
    assert b"/registry/minions/cp1" in content and b"/registry/minions/w1" in content
    assert f'"version": "{OLD}"'.encode() in content
    # default name, and --dir
    p = ssh(cp1, "/usr/local/bin/rke2 etcd-snapshot save")
    assert re.search(r"Snapshot on-demand-cp1-\d+ saved\.", p.stderr)
    p = ssh(cp1, "/usr/local/bin/rke2 etcd-snapshot save --name x --dir /root/snaps", ok=False)
    assert p.returncode != 0 and "/root/snaps" in p.stderr  # only the default dir is made
    ssh(
        cp1,
        "mkdir /root/snaps && /usr/local/bin/rke2 etcd-snapshot save --name x --dir /root/snaps",
    )
    assert any(f.name.startswith("x-cp1-") for f in cp1.path("/root/snaps").iterdir())
    assert name in ssh(cp1, "/usr/local/bin/rke2 etcd-snapshot ls").stdout
    # refused: an agent has no etcd; a bad flag; a server that is not running
    p = ssh(w1, f"/usr/local/bin/rke2 etcd-snapshot save --name {name}", ok=False)
    assert p.returncode != 0 and "not an etcd server" in p.stderr
    assert not w1.path(SNAPSHOTS).exists()
    p = ssh(cp1, "/usr/local/bin/rke2 etcd-snapshot save", user="nosudo", ok=False)
    assert p.returncode != 0 and "Permission denied" in p.stderr
    p = ssh(cp1, "/usr/local/bin/rke2 etcd-snapshot save --nme x", ok=False)
    assert p.returncode != 0 and "flag provided but not defined: --nme" in p.stderr
    p = ssh(cp1, "/usr/local/bin/rke2 etcd-snapshot save --name ../x", ok=False)
    assert p.returncode != 0 and "invalid snapshot name" in p.stderr
    ssh(cp1, "systemctl stop rke2-server")
    p = ssh(cp1, "/usr/local/bin/rke2 etcd-snapshot save --name late", ok=False)
    assert p.returncode != 0 and "is rke2-server running?" in p.stderr
    assert not list(cp1.path(SNAPSHOTS).glob("late-*"))


@pytest.mark.hosts
def test_cordon_drain_uncordon_show_in_get_nodes(
    nodes: dict[str, Host], releases: dict[str, Path]
) -> None:
    cp1, cp2, w1 = nodes["cp1"], nodes["cp2"], nodes["w1"]
    cluster(nodes, releases, OLD)
    p = ssh(
        cp1,
        f"{KUBECTL} drain w1 --ignore-daemonsets --delete-emptydir-data --force --timeout=300s",
    )
    assert p.stdout.splitlines() == ["node/w1 cordoned", "node/w1 drained"]
    assert table(cp2)["w1"][1] == "Ready,SchedulingDisabled"  # replicated to the other server
    obj = json.loads(ssh(cp1, f"{KUBECTL} get node w1 -o json").stdout)
    assert obj["spec"]["unschedulable"] is True
    ssh(cp1, f"{KUBECTL} cordon cp2")
    assert table(cp1)["cp2"][1] == "Ready,SchedulingDisabled"
    assert ssh(cp1, f"{KUBECTL} cordon cp2").stdout.strip() == "node/cp2 already cordoned"
    # a cordon outlives a restart (the Node object does)
    ssh(w1, "systemctl restart rke2-agent")
    ssh(cp2, "systemctl restart rke2-server")
    assert table(cp1)["w1"][1] == table(cp1)["cp2"][1] == "Ready,SchedulingDisabled"
    for n in ("w1", "cp2"):
        assert ssh(cp2, f"{KUBECTL} uncordon {n}").stdout.strip() == f"node/{n} uncordoned"
    assert {r[1] for r in table(cp1).values()} == {"Ready"}
    # refusals: a node that does not exist; flags kubectl would not take
    p = ssh(cp1, f"{KUBECTL} drain nope --ignore-daemonsets --timeout=10s", ok=False)
    assert p.returncode != 0 and 'Error from server (NotFound): nodes "nope" not found' in p.stderr
    p = ssh(cp1, f"{KUBECTL} cordon nope", ok=False)
    assert p.returncode != 0 and "NotFound" in p.stderr
    p = ssh(cp1, f"{KUBECTL} drain w1 --timeout=300", ok=False)
    assert p.returncode != 0 and 'time: missing unit in duration "300"' in p.stderr
    p = ssh(cp1, f"{KUBECTL} drain w1 --delete-local-dta", ok=False)
    assert p.returncode != 0 and "unknown flag: --delete-local-dta" in p.stderr
    p = ssh(cp1, f"{KUBECTL} get nodes --ignore-daemonsets", ok=False)
    assert p.returncode != 0 and "unknown flag: --ignore-daemonsets" in p.stderr
    assert {r[1] for r in table(cp1).values()} == {"Ready"}  # nothing was cordoned by those
