"""mk8s backup and restore end to end: the real CLI, real sshd test hosts, the RKE2
stand-in with a real etcd under its servers, and the real kubectl.

One module-scoped cluster (3 servers + 1 agent) lives through: a backup (copied home,
recorded), objects changed after it, refusals that change nothing (a tampered
snapshot, one without a record, a bundle of another version, no --yes), a restore
(later objects gone, earlier ones back), and a restore cut by Ctrl-C that the same
command finishes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mk8s.deploy.lifecycle import index
from tests.support.hosts import HostSet, hostset_for_tests
from tests.support.lifecycle import (
    audit_commands,
    configmap,
    etcd_members,
    mk8s,
    ready_versions,
    records,
    restore_argv,
    set_configmap,
)
from tests.support.world import World, bundle_for, deploy, plan_commands, write_cluster

pytestmark = pytest.mark.hosts

NAMES = ["cp1", "cp2", "cp3", "w1"]
ROLES = {"cp1": "server", "cp2": "server", "cp3": "server", "w1": "agent"}
TAG = "v1.28.15+rke2r1"


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
    world: World,
) -> Iterator[tuple[HostSet, Path]]:
    d = tmp_path_factory.mktemp("backup-restore")
    with hostset_for_tests(4, d / "hosts", names=NAMES) as hs:
        # a login user with sudo, as hardened sites have: RKE2's snapshots are root's
        write_cluster(d / "cluster.yaml", hs, [(n, ROLES[n]) for n in NAMES], user=hs.sudo_user)
        r = deploy(d, world.bundle, world.pub)
        assert r.returncode == 0, r.stdout + r.stderr
        yield hs, d


@pytest.fixture(scope="module")
def backed_up(cluster: tuple[HostSet, Path]) -> Path:
    """ConfigMap "before" (k=v1), then a backup: the snapshot file."""
    _hs, d = cluster
    set_configmap(d / "demo.kubeconfig", "before", "v1")
    r = mk8s("backup", "-f", "cluster.yaml", "--name", "nightly", cwd=d)
    assert r.returncode == 0, r.stdout + r.stderr
    rec = records(d)[-1]
    return d / ".mk8s" / "demo" / "snapshots" / rec["file"]


def untouched(hs: HostSet, d: Path, audit_before: int) -> None:
    """Nothing reached a node: no new remote command, every node still Ready."""
    assert len(audit_commands(d)) == audit_before
    assert all(ok for ok, _ in ready_versions(hs, "cp1").values())


def test_backup_copies_the_snapshot_home_and_records_it(
    cluster: tuple[HostSet, Path], backed_up: Path
) -> None:
    hs, d = cluster
    assert backed_up.stat().st_mode & 0o777 == 0o600
    assert backed_up.name.startswith("nightly-cp1-")
    rec = records(d)[-1]
    data = backed_up.read_bytes()
    assert rec["sha256"] == hashlib.sha256(data).hexdigest() and rec["size"] == len(data)
    assert rec["rke2Version"] == TAG and rec["node"] == "cp1" and rec["kind"] == "backup"
    token = (d / ".mk8s" / "demo" / "token").read_text().strip()
    assert rec["tokenId"] == index.token_id(token) and token not in str(rec)
    ns = hs.by_name("cp1").run(
        "/var/lib/rancher/rke2/bin/kubectl --kubeconfig /etc/rancher/rke2/rke2.yaml"
        " get --raw /api/v1/namespaces/kube-system"
    )
    assert rec["clusterId"] == json.loads(ns.stdout)["metadata"]["uid"]
    journal = json.loads((d / ".mk8s/demo/journal.json").read_text())
    assert rec["bundleId"] == journal["nodes"]["cp1"]["bundle"]
    assert (d / ".mk8s/demo/snapshots/index.json").stat().st_mode & 0o777 == 0o600
    # the server keeps its own copy, as RKE2 does
    kept = hs.by_name("cp1").path(f"/var/lib/rancher/rke2/server/db/snapshots/{backed_up.name}")
    assert kept.read_bytes() == data
    # streamed over SFTP from a copy the login user could read, removed afterwards
    copies = hs.by_name("cp1").path("/var/lib/mk8s/snapshot-copy")
    assert copies.is_dir() and list(copies.iterdir()) == []
    assert any(
        n == "cp1" and f"install -m 0600 -o {hs.sudo_user}" in c for n, c in audit_commands(d)
    )


def test_backup_list_shows_both_sides(cluster: tuple[HostSet, Path], backed_up: Path) -> None:
    _hs, d = cluster
    r = mk8s("backup", "-f", "cluster.yaml", "--list", cwd=d)
    assert r.returncode == 0, r.stdout + r.stderr
    here, there = r.stdout.split("on the servers:")
    assert backed_up.name in here and TAG in here
    for server in ("cp1", "cp2", "cp3"):
        assert server in there
    assert backed_up.name in there  # cp1 lists it (rke2 etcd-snapshot ls)


def test_a_bad_backup_name_is_refused_before_anything_connects(
    cluster: tuple[HostSet, Path],
) -> None:
    _hs, d = cluster
    before = len(audit_commands(d))
    r = mk8s("backup", "-f", "cluster.yaml", "--name", "../x", cwd=d)
    assert r.returncode == 2 and "snapshot name" in r.stderr, r.stderr
    assert len(audit_commands(d)) == before


def test_a_tampered_snapshot_is_refused_and_nothing_changes(
    cluster: tuple[HostSet, Path],
    backed_up: Path,
    world: World,
    tmp_path: Path,
) -> None:
    hs, d = cluster
    before = len(audit_commands(d))
    copy = tmp_path / backed_up.name
    shutil.copy(backed_up, copy)
    shutil.copy(backed_up.parent / "index.json", tmp_path / "index.json")
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0x01
    copy.write_bytes(bytes(data))
    r = mk8s(*restore_argv(copy, world.bundle, world.pub, "--yes"), cwd=d)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "does not match its record" in r.stderr and "Traceback" not in r.stderr
    untouched(hs, d, before)
    # a file mk8s never recorded is refused the same way
    (tmp_path / "index.json").unlink()
    stray = tmp_path / "stray"
    stray.write_bytes(b"not a snapshot mk8s took")
    r = mk8s(*restore_argv(stray, world.bundle, world.pub, "--yes"), cwd=d)
    assert r.returncode == 3 and "has no record" in r.stderr, r.stderr
    # and the dry run refuses it too
    r = mk8s(*restore_argv(copy, world.bundle, world.pub, "--dry-run"), cwd=d)
    assert r.returncode == 3, r.stderr
    untouched(hs, d, before)


def test_a_bundle_of_another_version_is_refused_and_nothing_changes(
    cluster: tuple[HostSet, Path],
    backed_up: Path,
    world: World,
) -> None:
    hs, d = cluster
    other = bundle_for(world.up, world.dir, world.key, "v1.29.x")
    before = len(audit_commands(d))
    r = mk8s(*restore_argv(backed_up, other, world.pub, "--yes"), cwd=d)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "v1.29" in r.stderr and f"was taken on {TAG}" in r.stderr
    untouched(hs, d, before)


def test_no_yes_without_a_terminal_is_refused(
    cluster: tuple[HostSet, Path],
    backed_up: Path,
    world: World,
) -> None:
    hs, d = cluster
    before = len(audit_commands(d))
    r = mk8s(*restore_argv(backed_up, world.bundle, world.pub), cwd=d)
    assert r.returncode == 2 and "--yes" in r.stderr, r.stderr
    untouched(hs, d, before)


def test_restore_brings_the_snapshot_state_back(
    cluster: tuple[HostSet, Path],
    backed_up: Path,
    world: World,
) -> None:
    hs, d = cluster
    kc = d / "demo.kubeconfig"
    set_configmap(kc, "after", "new")
    set_configmap(kc, "before", "v2")
    assert configmap(kc, "before") == "v2"
    dry = mk8s(*restore_argv(backed_up, world.bundle, world.pub, "--dry-run"), cwd=d)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    start = len(audit_commands(d))
    assert start > 0 and dry.stdout.index("rke2-killall.sh") < dry.stdout.index("--cluster-reset")
    r = mk8s(*restore_argv(backed_up, world.bundle, world.pub, "--yes"), cwd=d)
    assert r.returncode == 0, r.stdout + r.stderr
    # the dry run printed every command the restore sent (one plan for both)
    planned = set().union(*plan_commands(dry.stdout).values())
    sent = audit_commands(d)[start:]
    assert len(sent) > 20
    assert not [(n, c[:100]) for n, c in sent if c not in planned]
    assert configmap(kc, "after") is None
    assert configmap(kc, "before") == "v1"
    assert ready_versions(hs, "cp2") == {n: (True, TAG) for n in NAMES}
    members = etcd_members(hs, "cp1")
    assert len(members) == 3 and not any(m.get("isLearner") for m in members)
    sent = [c for _, c in audit_commands(d)]
    reset = [c for c in sent if "--cluster-reset" in c]
    assert len(reset) == 1 and "--cluster-reset-restore-path=" in reset[0]
    assert any("rke2-killall.sh" in c for c in sent)
    assert not any("systemctl stop" in c for c in sent)  # killall stops etcd too (SC5)
    # the snapshot copy is not left on the first server
    assert not [p for p in hs.by_name("cp1").path("/var/lib/mk8s").rglob("mk8s-restore/*")]


def _wait_audit(d: Path, needle: str, start: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(needle in c for _, c in audit_commands(d)[start:]):
            return
        time.sleep(0.05)
    raise AssertionError(f"{needle!r} never reached the audit log")


def test_ctrl_c_during_restore_then_the_same_command_finishes_it(
    cluster: tuple[HostSet, Path],
    backed_up: Path,
    world: World,
) -> None:
    hs, d = cluster
    kc = d / "demo.kubeconfig"
    set_configmap(kc, "later", "x")
    argv = [
        sys.executable,
        "-m",
        "mk8s",
        *restore_argv(backed_up, world.bundle, world.pub, "--yes"),
    ]
    start = len(audit_commands(d))
    p = subprocess.Popen(
        argv, cwd=d, env=dict(os.environ), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        # cut it while the other servers rejoin: the first is reset, the others are not
        _wait_audit(d, "db-mk8s-", start)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, out + err
    assert "run the same command again" in err and "Traceback" not in err
    # cp2's start goes on without mk8s: let it join (a voting member the next run must
    # not stop, or the first server loses etcd's quorum)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = hs.by_name("cp2").run("systemctl is-active rke2-server").stdout.strip()
        if state == "active":
            break
        time.sleep(0.5)
    r = mk8s(*restore_argv(backed_up, world.bundle, world.pub, "--yes", "--wait", "240"), cwd=d)
    tail = "\n".join(f"{n}: {c[:160]}" for n, c in audit_commands(d)[-25:])
    assert r.returncode == 0, r.stdout + r.stderr + tail
    assert "resuming the restore" in r.stderr
    resumed = [c for _, c in audit_commands(d)[start:]]
    assert len([c for c in resumed if "--cluster-reset" in c]) == 1  # not reset twice
    assert configmap(kc, "later") is None and configmap(kc, "before") == "v1"
    assert ready_versions(hs, "cp1") == {n: (True, TAG) for n in NAMES}
    members = etcd_members(hs, "cp3")
    assert len(members) == 3 and not any(m.get("isLearner") for m in members)
