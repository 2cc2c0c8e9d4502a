"""A real etcd under the RKE2 stand-in (issue 24, item 5), on real test hosts as root.

Three servers form one etcd cluster (a learner at a time, promoted by the leader); the
API objects the real kubectl creates live in it, so a ConfigMap written through one
server is read through another, and without quorum nothing is written.  Snapshots are
real etcd snapshots (``rke2 etcd-snapshot save|ls|delete``); ``rke2 server
--cluster-reset --cluster-reset-restore-path`` brings a snapshot's state back and the
other servers rejoin once their old ``server/db`` is gone; deleting a server's Node
removes its etcd member; ``rke2 certificate rotate`` makes new leaf certificates under
the same CAs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.hosts import Host, HostSet, hostset_for_tests
from tests.support.standin_nodes import (
    ETCDCTL,
    RESET,
    configure,
    etcd_members,
    install,
    make_artifacts,
    ssh,
    start,
    wait_ready,
)

pytestmark = pytest.mark.hosts

DB = "/var/lib/rancher/rke2/server/db"
TLS = "/var/lib/rancher/rke2/server/tls"
SNAPSHOTS = f"{DB}/snapshots"
RKE2 = "/usr/local/bin/rke2"
KC = "/etc/rancher/rke2/rke2.yaml"
RESET_MSG = "Managed etcd cluster membership has been reset, restart without --cluster-reset"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_artifacts(tmp_path_factory.mktemp("artifacts"))


@pytest.fixture(scope="module")
def hs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostSet]:
    with hostset_for_tests(
        3, tmp_path_factory.mktemp("standin-etcd"), names=["cp1", "cp2", "cp3"]
    ) as hs:
        yield hs


@pytest.fixture(scope="module")
def kubectl_bin() -> str:
    found = shutil.which("kubectl")
    if not found:
        pytest.fail("a real kubectl is needed (apt-get install kubernetes-client)", pytrace=False)
    return found


@pytest.fixture
def servers(hs: HostSet, artifacts: Path) -> list[Host]:
    """A fresh cluster of three servers for every test (the hosts are the module's)."""
    for h in hs.hosts:
        if not h.running:
            h.start()
        h.run(RESET, check=True)
    cp1, cp2, cp3 = hs.hosts
    install(cp1, artifacts)
    configure(cp1, "server", token="s3cret")
    start(cp1, "server")
    for h in (cp2, cp3):
        install(h, artifacts)
        configure(h, "server", token="s3cret", server=f"https://{cp1.address}:9345")
        start(h, "server")
    return hs.hosts


members = etcd_members


def wait_members(h: Host, n: int, timeout: float = 20) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        got = members(h)
        voting = len(got) == n and not any(m.get("isLearner") for m in got)
        if voting or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def kubeconfig(h: Host, dest: Path) -> Path:
    """The node's admin kubeconfig pointed at its address (what an operator uses)."""
    text = h.path(KC).read_text().replace("https://127.0.0.1:6443", f"https://{h.address}:6443")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(text)
    dest.chmod(0o600)
    return dest


def kubectl(
    kubectl_bin: str, kc: Path, *args: str, ok: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(kc.parent), "LANG": "C.UTF-8"}
    p = subprocess.run(
        [kubectl_bin, "--kubeconfig", str(kc), "--request-timeout=10s", *args],
        capture_output=True, text=True, timeout=60, env=env, input=stdin,
    )  # fmt: skip
    if ok and p.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: exit {p.returncode}\n{p.stdout}{p.stderr}")
    return p


def configmap_value(kubectl_bin: str, kc: Path, name: str) -> str | None:
    p = kubectl(kubectl_bin, kc, "get", "configmap", name, "-o", "json", ok=False)
    if p.returncode != 0:
        assert "NotFound" in p.stderr, p.stderr
        return None
    return str(json.loads(p.stdout)["data"]["k"])


def snapshot(h: Host, name: str) -> str:
    """``rke2 etcd-snapshot save --name NAME``; the file it wrote."""
    p = ssh(h, f"{RKE2} etcd-snapshot save --name {name}")
    m = re.search(rf"Saving etcd snapshot to ({SNAPSHOTS}/{name}-{h.name}-\d+)", p.stderr)
    assert m, p.stderr
    return m.group(1)


# ---- one etcd cluster -------------------------------------------------------------------
def test_three_servers_form_one_etcd_cluster(servers: list[Host]) -> None:
    cp1, cp2, _ = servers
    got = wait_members(cp2, 3)
    assert [m["name"].rsplit("-", 1)[0] for m in got] == ["cp1", "cp2", "cp3"]
    assert not any(m.get("isLearner") for m in got)
    for h, m in zip(servers, got, strict=True):
        assert m["peerURLs"] == [f"https://{h.address}:2380"]
        assert m["clientURLs"] == [f"https://{h.address}:2379"]
        assert re.fullmatch(rf"{h.name}-[0-9a-f]{{8}}", m["name"])
        # the member restarts as itself: its name and data are on disk, 0700
        assert h.path(f"{DB}/etcd/name").read_text() == m["name"]
        assert h.path(f"{DB}/etcd/member/wal").is_dir()
        assert h.path(f"{DB}/etcd").stat().st_mode & 0o777 == 0o700
        # the Node carries its member's name and address (k3s metadata controller)
        node = json.loads(ssh(cp1, f"{KC_CMD} get node {h.name} -o json").stdout)
        ann = node["metadata"]["annotations"]
        assert ann["etcd.rke2.cattle.io/node-name"] == m["name"]
        assert ann["etcd.rke2.cattle.io/node-address"] == h.address
    # etcd speaks mutual TLS only: no client certificate, no answer
    p = cp1.run("etcdctl --endpoints https://127.0.0.1:2379 --insecure-skip-tls-verify "
                "--dial-timeout=2s --command-timeout=3s member list")  # fmt: skip
    assert p.returncode != 0
    # a restart keeps the member (same name, no new member)
    ssh(cp2, "systemctl restart rke2-server")
    assert [m["name"] for m in wait_members(cp1, 3)] == [m["name"] for m in got]


KC_CMD = f"/var/lib/rancher/rke2/bin/kubectl --kubeconfig {KC}"


def test_objects_written_through_one_server_are_read_through_another(
    servers: list[Host], kubectl_bin: str, tmp_path: Path
) -> None:
    _, cp2, _ = servers
    kc1, kc2, kc3 = (kubeconfig(h, tmp_path / h.name / "kc") for h in servers)
    out = kubectl(kubectl_bin, kc1, "create", "configmap", "app", "--from-literal=k=v1").stdout
    assert out.strip() == "configmap/app created"
    assert configmap_value(kubectl_bin, kc3, "app") == "v1"
    # it is in etcd, under kube-apiserver's key
    p = cp2.run(f"{ETCDCTL} get /registry/configmaps/default/app --print-value-only")
    assert json.loads(p.stdout)["data"] == {"k": "v1"}
    # namespaces and secrets too; a second create is a conflict
    kubectl(kubectl_bin, kc2, "create", "namespace", "team")
    kubectl(kubectl_bin, kc2, "-n", "team", "create", "secret", "generic", "s",
            "--from-literal=password=hunter2")  # fmt: skip
    secret = json.loads(kubectl(kubectl_bin, kc3, "-n", "team", "get", "secret", "s",
                                "-o", "json").stdout)  # fmt: skip
    assert secret["data"] == {"password": "aHVudGVyMg=="} and secret["type"] == "Opaque"
    p = kubectl(kubectl_bin, kc3, "create", "configmap", "app", "--from-literal=k=x", ok=False)
    assert p.returncode != 0 and 'configmaps "app" already exists' in p.stderr
    p = kubectl(kubectl_bin, kc3, "-n", "nope", "create", "configmap", "x", ok=False)
    assert p.returncode != 0 and 'namespaces "nope" not found' in p.stderr
    # kubectl get lists them (Table); apply changes one; delete removes it everywhere
    rows = kubectl(kubectl_bin, kc1, "get", "configmaps").stdout.splitlines()
    assert rows[0].split() == ["NAME", "DATA", "AGE"] and rows[1].split()[:2] == ["app", "1"]
    manifest = json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": "app"}, "data": {"k": "v2"}})  # fmt: skip
    # (the stand-in serves no OpenAPI document: kubectl validates nothing client-side)
    kubectl(kubectl_bin, kc2, "replace", "--validate=false", "-f", "-", stdin=manifest)
    assert configmap_value(kubectl_bin, kc1, "app") == "v2"
    kubectl(kubectl_bin, kc3, "delete", "configmap", "app")
    assert configmap_value(kubectl_bin, kc1, "app") is None
    assert cp2.run(f"{ETCDCTL} get /registry/configmaps/default/app").stdout == ""


def test_writes_fail_without_quorum(servers: list[Host], kubectl_bin: str, tmp_path: Path) -> None:
    cp1, cp2, cp3 = servers
    kc1 = kubeconfig(cp1, tmp_path / "kc")
    kubectl(kubectl_bin, kc1, "create", "configmap", "one", "--from-literal=k=1")
    ssh(cp3, "systemctl stop rke2-server")
    kubectl(kubectl_bin, kc1, "create", "configmap", "two", "--from-literal=k=2")  # 2 of 3
    ssh(cp2, "systemctl stop rke2-server")
    p = kubectl(kubectl_bin, kc1, "create", "configmap", "three", "--from-literal=k=3", ok=False)
    assert p.returncode != 0, p.stdout
    assert ssh(cp1, f"{KC_CMD} get --raw /readyz", ok=False).returncode != 0
    ssh(cp2, "systemctl start rke2-server")  # quorum again: writes work
    kubectl(kubectl_bin, kc1, "create", "configmap", "three", "--from-literal=k=3")
    assert configmap_value(kubectl_bin, kc1, "three") == "3"


# ---- snapshots and cluster reset ---------------------------------------------------------
def test_snapshot_save_ls_delete(servers: list[Host]) -> None:
    cp1 = servers[0]
    path = snapshot(cp1, "keep")
    f = cp1.path(path)
    assert f.stat().st_mode & 0o777 == 0o600
    # a real etcd snapshot: etcdctl reads it (hash, revision, keys)
    status = json.loads(cp1.run(f"etcdctl snapshot status {path} -w json", check=True).stdout)
    assert status["totalKey"] > 0
    other = snapshot(cp1, "drop")
    rows = ssh(cp1, f"{RKE2} etcd-snapshot ls").stdout.splitlines()
    assert rows[0].split() == ["Name", "Location", "Size", "Created"]
    listed = {r.split()[0]: r.split() for r in rows[1:]}
    base = os.path.basename(path)
    assert listed[base][1] == f"file://{path}" and int(listed[base][2]) == f.stat().st_size
    assert listed[base][3] == time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(base.rsplit("-", 1)[1]))
    )
    p = ssh(cp1, f"{RKE2} etcd-snapshot delete {os.path.basename(other)} nothere")
    assert f"Snapshot {os.path.basename(other)} deleted." in p.stderr
    assert "Snapshot nothere not found." in p.stderr
    assert not cp1.path(other).exists() and f.exists()
    # a snapshot dir other than the default must exist; an agent-less node has no etcd
    p = ssh(cp1, f"{RKE2} etcd-snapshot save --dir /root/snaps", ok=False)
    assert p.returncode != 0 and "/root/snaps" in p.stderr
    ssh(cp1, "mkdir /root/snaps")
    assert (
        "/root/snaps/on-demand-cp1-"
        in ssh(cp1, f"{RKE2} etcd-snapshot save --dir /root/snaps").stderr
    )


def test_cluster_reset_restores_a_snapshot_and_the_others_rejoin(
    servers: list[Host], kubectl_bin: str, tmp_path: Path
) -> None:
    cp1, cp2, cp3 = servers
    kc1 = kubeconfig(cp1, tmp_path / "kc")
    kubectl(kubectl_bin, kc1, "create", "configmap", "before", "--from-literal=k=b")
    path = snapshot(cp1, "pre")
    kubectl(kubectl_bin, kc1, "create", "configmap", "after", "--from-literal=k=a")
    for h in servers:  # RKE2 stops on every server first
        ssh(h, "systemctl stop rke2-server")
    old_name = cp1.path(f"{DB}/etcd/name").read_text()
    p = ssh(cp1, f"{RKE2} server --cluster-reset --cluster-reset-restore-path={path}")
    assert RESET_MSG in p.stderr and "delete ${datadir}/server/db on each peer" in p.stderr
    assert cp1.path(f"{DB}/reset-flag").exists()
    assert [d.name for d in cp1.path(DB).iterdir() if d.name.startswith("etcd-old-")]
    assert cp1.path(f"{DB}/etcd/name").read_text() != old_name
    # a second reset without a snapshot is refused while the flag is there
    p = ssh(cp1, f"{RKE2} server --cluster-reset", ok=False)
    assert p.returncode != 0 and "reset-flag" in p.stderr
    start(cp1, "server")
    assert not cp1.path(f"{DB}/reset-flag").exists()
    assert configmap_value(kubectl_bin, kc1, "before") == "b"
    assert configmap_value(kubectl_bin, kc1, "after") is None
    assert [m["name"] for m in members(cp1)] == [cp1.path(f"{DB}/etcd/name").read_text()]
    # a server with its old server/db does not rejoin ...
    p = start(cp2, "server", ok=False)
    assert p.returncode != 0 and "server/db" in p.stderr, p.stderr
    assert len(members(cp1)) == 1
    # ... once it is removed, it does (and the next one after it)
    for h in (cp2, cp3):
        ssh(h, f"rm -rf {DB}")
        start(h, "server")
    got = wait_members(cp1, 3)
    assert len(got) == 3 and not any(m.get("isLearner") for m in got)
    assert configmap_value(kubectl_bin, kubeconfig(cp3, tmp_path / "kc3"), "before") == "b"
    assert wait_ready(cp2, {"cp1", "cp2", "cp3"}) == {"cp1": True, "cp2": True, "cp3": True}


def test_a_snapshot_and_the_token_restore_the_cluster_on_a_fresh_host(
    servers: list[Host], artifacts: Path, kubectl_bin: str, tmp_path: Path
) -> None:
    """Restoring a snapshot to new nodes (rke2-docs backup_restore.md): the snapshot
    carries the cluster's CAs, read with the token; the restored server has the old
    cluster's CA and objects."""
    cp1, _, cp3 = servers
    kubectl(kubectl_bin, kubeconfig(cp1, tmp_path / "kc1"), "create", "configmap", "kept",
            "--from-literal=k=v")  # fmt: skip
    path = snapshot(cp1, "move")
    ca = cp1.path(f"{TLS}/server-ca.crt").read_text()
    for h in servers:
        ssh(h, "systemctl stop rke2-server")
    cp3.run(RESET, check=True)  # a fresh host: no data dir, no token, no CAs
    install(cp3, artifacts)
    cp3.put(cp1.path(path), "/root/snap")
    configure(cp3, "server", token="wrong")
    reset = f"{RKE2} server --cluster-reset --cluster-reset-restore-path=/root/snap"
    p = ssh(cp3, reset, ok=False)
    assert p.returncode != 0 and "encrypted with different token" in p.stderr
    ssh(cp3, f"{reset} --token s3cret")  # the flag wins over config.yaml
    configure(cp3, "server", token="s3cret")
    start(cp3, "server")
    assert cp3.path(f"{TLS}/server-ca.crt").read_text() == ca  # the snapshot's CA
    assert configmap_value(kubectl_bin, kubeconfig(cp3, tmp_path / "kc3"), "kept") == "v"
    assert [m["name"].rsplit("-", 1)[0] for m in members(cp3)] == ["cp3"]


def test_cluster_reset_refusals(servers: list[Host]) -> None:
    cp1 = servers[0]
    path = snapshot(cp1, "x")
    p = ssh(cp1, f"{RKE2} server --cluster-reset --cluster-reset-restore-path={path}", ok=False)
    assert p.returncode != 0 and "stop rke2-server first" in p.stderr  # it is running
    ssh(cp1, "systemctl stop rke2-server")
    p = ssh(cp1, f"{RKE2} server --cluster-reset-restore-path={path}", ok=False)
    assert "--cluster-reset required with --cluster-reset-restore-path" in p.stderr
    p = ssh(cp1, f"{RKE2} server --cluster-reset --cluster-reset-restore-path=/nope", ok=False)
    assert "snapshot path does not exist: /nope" in p.stderr
    p = ssh(cp1, f"{RKE2} server --cluster-reset --cluster-reset-restore-path={path} "
                 "--token other", ok=False)  # fmt: skip
    assert p.returncode != 0 and "encrypted with different token" in p.stderr


# ---- member removal ------------------------------------------------------------------------
def test_deleting_a_server_node_removes_its_etcd_member(servers: list[Host]) -> None:
    cp1, _, cp3 = servers
    ssh(cp1, f"{KC_CMD} delete node cp3")
    got = wait_members(cp1, 2)
    assert [m["name"].rsplit("-", 1)[0] for m in got] == ["cp1", "cp2"]
    # the removed member's etcd stops, and rke2-server with it
    deadline = time.monotonic() + 20
    while ssh(cp3, "systemctl is-active rke2-server", ok=False).stdout.strip() == "active":
        assert time.monotonic() < deadline, "rke2-server on cp3 kept running"
        time.sleep(0.2)
    journal = ssh(cp3, "journalctl -u rke2-server").stdout
    assert "permanently removed from the cluster" in journal
    p = start(cp3, "server", ok=False)  # its data is that of a removed member
    assert p.returncode != 0 and "server/db" in p.stderr
    ssh(cp3, f"rm -rf {DB}")
    start(cp3, "server")
    assert len(wait_members(cp1, 3)) == 3
    # a server whose db is removed while its member is still in the cluster is refused
    ssh(cp3, f"systemctl stop rke2-server && rm -rf {DB}")
    p = start(cp3, "server", ok=False)
    assert p.returncode != 0 and "duplicate node name found" in p.stderr
    assert len(members(cp1)) == 3


# ---- certificates ---------------------------------------------------------------------------
def cert(h: Host, name: str, *fields: str) -> str:
    p = h.run(f"openssl x509 -in {TLS}/{name} -noout {' '.join(fields)}", check=True)
    return p.stdout.strip()


def test_certificate_rotate_keeps_the_cas(
    hs: HostSet, artifacts: Path, kubectl_bin: str, tmp_path: Path
) -> None:
    cp1 = hs.hosts[0]
    for h in hs.hosts:
        if not h.running:
            h.start()
        h.run(RESET, check=True)
    install(cp1, artifacts)
    configure(cp1, "server", token="t")
    start(cp1, "server")
    serial = cert(cp1, "serving-kube-apiserver.crt", "-serial")
    ca = cp1.path(f"{TLS}/server-ca.crt").read_text()
    ssh(cp1, "systemctl restart rke2-server")  # a restart keeps certificates with time left
    assert cert(cp1, "serving-kube-apiserver.crt", "-serial") == serial
    p = ssh(cp1, f"{RKE2} certificate rotate")
    assert "please restart rke2 server or agent to rotate certificates" in p.stderr
    backup = re.search(r"Successfully backed up certificates to (\S+),", p.stderr)
    assert backup and cp1.path(f"{backup.group(1)}/serving-kube-apiserver.crt").exists()
    assert not cp1.path(f"{TLS}/serving-kube-apiserver.crt").exists()
    assert not cp1.path(f"{TLS}/etcd/client.key").exists()
    assert (
        cp1.path(f"{TLS}/server-ca.key").exists() and cp1.path(f"{TLS}/etcd/peer-ca.key").exists()
    )
    ssh(cp1, "systemctl restart rke2-server")
    assert cert(cp1, "serving-kube-apiserver.crt", "-serial") != serial
    assert cp1.path(f"{TLS}/server-ca.crt").read_text() == ca
    end = cert(cp1, "serving-kube-apiserver.crt", "-enddate").split("=", 1)[1]
    left = time.mktime(time.strptime(end, "%b %d %H:%M:%S %Y %Z")) - time.time()
    assert 364 * 86400 < left < 366 * 86400
    kc = kubeconfig(cp1, tmp_path / "kc")
    assert "cp1" in kubectl(kubectl_bin, kc, "get", "nodes").stdout


def test_a_node_can_be_made_with_expired_certificates(hs: HostSet, artifacts: Path) -> None:
    """MK8S_STANDIN_CERT_SECONDS <= 0 (test knob): every leaf is issued already expired,
    so nothing on the node can talk TLS to it; without the knob the next start renews."""
    cp1 = hs.hosts[0]
    for h in hs.hosts:
        if not h.running:
            h.start()
        h.run(RESET, check=True)
    install(cp1, artifacts)
    configure(cp1, "server", token="t")
    ssh(cp1, "echo MK8S_STANDIN_CERT_SECONDS=-60 >> /etc/default/rke2-server")
    p = start(cp1, "server", ok=False)
    assert p.returncode != 0
    assert cp1.run(f"openssl x509 -in {TLS}/etcd/client.crt -noout -checkend 0").returncode == 1
    assert cp1.run(f"openssl x509 -in {TLS}/serving-kube-apiserver.crt -noout -checkend 0"
                   ).returncode == 1  # fmt: skip
    ssh(cp1, "sed -i /MK8S_STANDIN_CERT_SECONDS/d /etc/default/rke2-server")
    start(cp1, "server")  # expired certificates are renewed at start (certificates.md)
    assert cp1.run(f"openssl x509 -in {TLS}/serving-kube-apiserver.crt -noout -checkend 86400"
                   ).returncode == 0  # fmt: skip
