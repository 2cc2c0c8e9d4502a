"""RKE2's contract end to end (issue #22, part A): the real CLI, real sshd test hosts,
and the stand-in, which refuses what real RKE2 refuses (each rule cites its upstream
file in tests/support/standin/rke2.py).

Three hosts serve every test; each test wipes them and writes its own cluster.yaml.
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from mk8s.bundle import create
from mk8s.bundle.format import keys
from mk8s.bundle.lock import LockSettings, lock_release
from mk8s.bundle.upstream import settings as upstream
from tests.support.hosts import Host, HostSet, hostset_for_tests
from tests.support.upstream import ExampleUpstream
from tests.support.world import mk8s

pytestmark = pytest.mark.hosts

KUBECTL = "/var/lib/rancher/rke2/bin/kubectl --kubeconfig /etc/rancher/rke2/rke2.yaml"
# Mounts a test puts over the node's /proc/sys files and /sys/fs (see _sysctl, _selinux).
WIPE = (
    "for u in /usr/local/bin/rke2-uninstall.sh; do [ -x $u ] && RKE2_DATA_DIR=/var/lib/rke2data"
    " $u >/dev/null 2>&1; [ -x $u ] && $u >/dev/null 2>&1; done;"
    " for m in $(awk '$2 ~ /^\\/proc\\/sys\\/|^\\/sys\\/fs$/ {print $2}' /proc/mounts); do"
    " umount $m; done;"
    " rm -rf /var/lib/mk8s /var/lib/rancher /etc/rancher /var/lib/rke2data /var/lib/rke2snaps"
    " /etc/rke2-admin /etc/rke2-reg /usr/local/bin/rpm /etc/default/rke2-*;"
    " userdel etcd >/dev/null 2>&1; groupdel etcd >/dev/null 2>&1; true"
)


@dataclass
class Bundles:
    canal: Path
    cilium: Path
    pub: Path


def _bundle(up: ExampleUpstream, d: Path, key: keys.PrivateKey, cni: str) -> Path:
    settings = upstream.UpstreamSettings(
        api_url=up.api_url, release_url=up.release_url, raw_url=up.raw_url, backoff=0.05
    )
    lock = lock_release(
        LockSettings(spec="v1.28.x", upstream=settings, cni=cni, cache_dir=d / "cache")
    )
    created = create.create_bundle(
        lock,
        create.CreateSettings(
            upstream=settings,
            signature=lambda b: keys.sign(key, b),
            out=d / f"{cni}.tar.zst",
            lock_out=d / f"{cni}.lock",
            cache_dir=d / "cache",
        ),
    )
    return created.bundle.path


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bundles]:
    d = tmp_path_factory.mktemp("bundles")
    key = keys.generate_private_key()
    pub = keys.write_key_pair(key, d / "mk8s", None).public
    with ExampleUpstream(image_size=64 << 10) as up:
        yield Bundles(_bundle(up, d, key, "canal"), _bundle(up, d, key, "cilium"), pub)


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostSet]:
    d = tmp_path_factory.mktemp("contract-hosts")
    with hostset_for_tests(3, d / "hosts", names=["h1", "h2", "h3"]) as hs:
        yield hs


@pytest.fixture
def hs(hosts: HostSet) -> HostSet:
    """The three hosts with no RKE2, no mk8s files and none of a test's mounts."""
    for h in hosts.hosts:
        if not h.running:
            h.start()
        h.run(WIPE, check=True)
    return hosts


def cluster_file(
    d: Path, hs: HostSet, nodes: list[tuple[int, str, str]], rke2: str = "", token: str = ""
) -> Path:
    """cluster.yaml for (host index, name, role); ``rke2`` is YAML under spec.rke2."""
    lines = "\n".join(
        f"    - {{address: {hs[i].address}, name: {name}, role: {role}}}" for i, name, role in nodes
    )
    tok = f"    token: {{file: {token}}}\n" if token else ""
    p = d / "cluster.yaml"
    p.write_text(
        "apiVersion: mk8s/v1alpha1\nkind: Cluster\nmetadata: {name: demo}\nspec:\n"
        f"  rke2:\n    tlsSan: [k8s.example.internal]\n{tok}{rke2}"
        f"  ssh:\n    user: root\n    identityFile: {hs.identity_file}\n"
        f"    knownHosts: {hs.known_hosts}\n  nodes:\n{lines}\n"
    )
    return p


def deploy(d: Path, bundle: Path, pub: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return mk8s(
        "deploy", "-f", "cluster.yaml", "--bundle", str(bundle), "--key", str(pub), *extra, cwd=d
    )


def nodes_on(h: Host, kubectl: str = KUBECTL) -> dict[str, bool]:
    r = h.run(f"{kubectl} get nodes -o json")
    assert r.returncode == 0, r.stderr
    return {
        i["metadata"]["name"]: any(
            c["type"] == "Ready" and c["status"] == "True" for c in i["status"]["conditions"]
        )
        for i in json.loads(r.stdout)["items"]
    }


def config_of(h: Host) -> dict[str, object]:
    loaded = yaml.safe_load(h.path("/etc/rancher/rke2/config.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def audit(d: Path) -> list[dict[str, object]]:
    text = (d / ".mk8s" / "demo" / "audit.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def untouched(*hs: Host) -> bool:
    return not any(h.path("/etc/rancher/rke2/config.yaml").exists() for h in hs)


# -- 1. a reset of the first server, then a deploy: one cluster ---------------------------
def test_reset_first_server_then_deploy_leaves_one_cluster(
    tmp_path: Path, hs: HostSet, bundles: Bundles
) -> None:
    cluster_file(tmp_path, hs, [(0, "cp1", "server"), (1, "cp2", "server"), (2, "w1", "agent")])
    r = deploy(tmp_path, bundles.canal, bundles.pub)
    assert r.returncode == 0, r.stdout + r.stderr
    r = mk8s("reset", "-f", "cluster.yaml", "--node", "cp1", "--yes", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert not hs[0].path("/var/lib/rancher/rke2/server/db").exists()
    r = deploy(tmp_path, bundles.canal, bundles.pub, "--wait", "60")
    assert r.returncode == 0, r.stdout + r.stderr
    # One cluster: the same CA on both servers, each lists every node Ready, and the
    # kubeconfig written trusts that CA.
    ca = [h.path("/var/lib/rancher/rke2/server/tls/server-ca.crt").read_text() for h in hs[:2]]
    assert ca[0] == ca[1], "the first server started a cluster of its own"
    everyone = {"cp1": True, "cp2": True, "w1": True}
    assert nodes_on(hs[0]) == everyone and nodes_on(hs[1]) == everyone
    kc = yaml.safe_load((tmp_path / "demo.kubeconfig").read_text())
    assert (
        base64.b64decode(kc["clusters"][0]["cluster"]["certificate-authority-data"]).decode()
        == ca[0]
    )
    assert config_of(hs[0])["server"] == f"https://{hs[1].address}:9345"
    assert "cp1: has no datastore; it joins the running cluster through cp2" in r.stderr
    # And it stays converged: the next run restarts nothing.
    before = len(audit(tmp_path))
    r = deploy(tmp_path, bundles.canal, bundles.pub)
    assert r.returncode == 0, r.stdout + r.stderr
    sent = [str(x.get("command", "")) for x in audit(tmp_path)[before:]]
    assert not [c for c in sent if "systemctl start" in c or "systemctl restart" in c]


# -- 2. node names ----------------------------------------------------------------------
def test_upper_case_names_register_lower_cased_and_are_waited_for(
    tmp_path: Path, hs: HostSet, bundles: Bundles
) -> None:
    cluster_file(tmp_path, hs, [(0, "CP1", "server"), (1, "Worker-1", "agent")])
    r = deploy(tmp_path, bundles.canal, bundles.pub, "--wait", "30")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "'CP1' registers as 'cp1'" in r.stderr
    assert nodes_on(hs[0]) == {"cp1": True, "worker-1": True}
    r = mk8s("status", "-f", "cluster.yaml", cwd=tmp_path)
    assert r.returncode == 0 and "worker-1" in r.stdout, r.stdout + r.stderr


def test_a_name_kubernetes_refuses(tmp_path: Path, hs: HostSet, bundles: Bundles) -> None:
    cluster_file(tmp_path, hs, [(0, "cp_1", "server")])
    r = deploy(tmp_path, bundles.canal, bundles.pub)
    assert r.returncode == 2 and "spec.nodes[0].name" in r.stderr and "cp-1" in r.stderr
    assert "Traceback" not in r.stderr and untouched(hs[0])


# -- 3. the bundle's CNI --------------------------------------------------------------
def test_a_cilium_bundle_runs_cilium(tmp_path: Path, hs: HostSet, bundles: Bundles) -> None:
    cluster_file(tmp_path, hs, [(0, "cp1", "server"), (1, "w1", "agent")])
    r = deploy(tmp_path, bundles.cilium, bundles.pub, "--wait", "30")
    assert r.returncode == 0, r.stdout + r.stderr
    assert config_of(hs[0])["cni"] == "cilium" and "cni" not in config_of(hs[1])
    assert nodes_on(hs[0]) == {"cp1": True, "w1": True}


# -- 4. the token form ---------------------------------------------------------------------
def test_a_full_token_cannot_bootstrap_a_new_cluster(
    tmp_path: Path, hs: HostSet, bundles: Bundles
) -> None:
    full = "K10" + "ab" * 32 + "::server:s3cret"
    (tmp_path / "token").write_text(full + "\n")
    cluster_file(tmp_path, hs, [(0, "cp1", "server")], token="./token")
    r = deploy(tmp_path, bundles.canal, bundles.pub)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "full K10" in r.stderr and "secret part" in r.stderr and "Traceback" not in r.stderr
    assert untouched(hs[0])
    (tmp_path / "token").write_text("s3cret\n")
    r = deploy(tmp_path, bundles.canal, bundles.pub)
    assert r.returncode == 0, r.stdout + r.stderr


# -- 6. options that move paths --------------------------------------------------------
MOVED = """    config: {data-dir: /var/lib/rke2data, private-registry: /etc/rke2-reg/registries.yaml}
    serverConfig:
      write-kubeconfig: /etc/rke2-admin/admin.yaml
      etcd-snapshot-dir: /var/lib/rke2snaps
    registries: {mirrors: {docker.io: {}}}
"""


def test_moved_paths_are_honoured(tmp_path: Path, hs: HostSet, bundles: Bundles) -> None:
    cluster_file(tmp_path, hs, [(0, "cp1", "server"), (1, "w1", "agent")], rke2=MOVED)
    r = deploy(tmp_path, bundles.canal, bundles.pub, "--wait", "30")
    assert r.returncode == 0, r.stdout + r.stderr
    cp1, w1 = hs[0], hs[1]
    for h in (cp1, w1):
        assert h.path("/var/lib/rke2data/agent/images/rke2-images.linux-amd64.tar.zst").exists()
        assert h.path("/etc/rke2-reg/registries.yaml").exists()
        assert not h.path("/var/lib/rancher/rke2").exists()
        assert not h.path("/etc/rancher/rke2/registries.yaml").exists()
    assert cp1.path("/etc/rke2-admin/admin.yaml").exists()
    kubectl = "/var/lib/rke2data/bin/kubectl --kubeconfig /etc/rke2-admin/admin.yaml"
    assert nodes_on(cp1, kubectl) == {"cp1": True, "w1": True}
    assert (tmp_path / "demo.kubeconfig").exists()
    r = mk8s("status", "-f", "cluster.yaml", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    r = mk8s("kubeconfig", "-f", "cluster.yaml", "-o", "again.kubeconfig", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    # A snapshot lands in etcd-snapshot-dir (rke2 etcd-snapshot reads config.yaml); RKE2
    # creates only its default dir (k3s-io/k3s pkg/etcd/snapshot.go snapshotDir): this one
    # is made by hand (mk8s does not make it yet).
    cp1.run("mkdir -m 0700 /var/lib/rke2snaps", check=True)
    snap = cp1.run("/usr/local/bin/rke2 etcd-snapshot save --name probe")
    assert snap.returncode == 0, snap.stderr
    assert [p.name.split("-")[0] for p in cp1.path("/var/lib/rke2snaps").iterdir()] == ["probe"]
    # Converged: a re-run uploads and restarts nothing.
    before = len(audit(tmp_path))
    r = deploy(tmp_path, bundles.canal, bundles.pub)
    assert r.returncode == 0 and "uploaded 0 B" in r.stdout, r.stdout + r.stderr
    sent = [str(x.get("command", "")) for x in audit(tmp_path)[before:]]
    assert not [c for c in sent if "systemctl start" in c or "systemctl restart" in c]
    # reset removes the moved data-dir too (rke2-uninstall.sh is told RKE2_DATA_DIR).
    r = mk8s("reset", "-f", "cluster.yaml", "--yes", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert not cp1.path("/var/lib/rke2data").exists() and not w1.path("/var/lib/rke2data").exists()


# -- 7. SELinux and profile: cis -----------------------------------------------------------
FAKE_RPM = """#!/bin/sh
# An RPM database holding rke2-selinux only (the test hosts are Debian).
for a in "$@"; do case "$a" in rke2-selinux) echo rke2-selinux-0.17-1.el9.noarch; exit 0;; esac; done
echo "package $* is not installed"; exit 1
"""


def _selinux_enforcing(h: Host) -> None:
    """SELinux enforcing, as the node's own /sys/fs/selinux/enforce says (a tmpfs over
    /sys/fs in the node's mount namespace only)."""
    h.run("mount -t tmpfs mk8s-test-selinux /sys/fs && mkdir /sys/fs/selinux"
          " && echo 1 > /sys/fs/selinux/enforce", check=True)  # fmt: skip


def _sysctl(h: Host, key: str, value: int) -> None:
    """This node reads ``value`` from /proc/sys/KEY (a bind mount in its namespace)."""
    f = f"/run/mk8s-test-{key}"
    proc = "/proc/sys/" + key.replace(".", "/")
    h.run(f"echo {value} > {f} && mount --bind {f} {proc}", check=True)


def test_selinux_and_cis_hosts_are_prepared_first(
    tmp_path: Path, hs: HostSet, bundles: Bundles
) -> None:
    s1, a1 = hs[0], hs[1]
    nodes = [(0, "s1", "server"), (1, "a1", "agent")]
    _selinux_enforcing(s1)
    cluster_file(tmp_path, hs, nodes)
    r = deploy(tmp_path, bundles.canal, bundles.pub)
    assert r.returncode == 2, r.stdout + r.stderr  # the cluster file's part: selinux: true
    assert "s1: SELinux is enforcing but the rke2-selinux RPM is not installed" in r.stderr
    assert "add selinux: true" in r.stderr and "a1:" not in r.stderr
    assert untouched(s1, a1)
    cluster_file(tmp_path, hs, nodes, rke2="    config: {selinux: true}\n")
    r = deploy(tmp_path, bundles.canal, bundles.pub)
    assert r.returncode == 1 and "rke2-selinux RPM" in r.stderr, r.stdout + r.stderr
    assert untouched(s1, a1)
    s1.run("cat > /usr/local/bin/rpm && chmod 0755 /usr/local/bin/rpm", input=FAKE_RPM)
    r = deploy(tmp_path, bundles.canal, bundles.pub, "--wait", "30")
    assert r.returncode == 0, r.stdout + r.stderr
    # profile: cis: the etcd user (servers) and the CIS kernel parameters (all nodes).
    cis = "    config: {selinux: true, profile: cis}\n"
    cluster_file(tmp_path, hs, nodes, rke2=cis)
    r = deploy(tmp_path, bundles.canal, bundles.pub)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "s1: profile: cis needs an etcd user and group" in r.stderr
    assert "a1: profile: cis needs an etcd user" not in r.stderr
    assert "s1: profile: cis needs the CIS kernel parameters" in r.stderr
    assert "a1: profile: cis needs the CIS kernel parameters" in r.stderr
    assert "profile" not in config_of(s1) and "profile" not in config_of(a1)
    s1.run("useradd -r -c 'etcd user' -s /sbin/nologin -M -U etcd", check=True)
    for h in (s1, a1):
        for key, value in {"vm.panic_on_oom": 0, "vm.overcommit_memory": 1}.items():
            _sysctl(h, key, value)
        _sysctl(h, "kernel.panic", 10)
        _sysctl(h, "kernel.panic_on_oops", 1)
    r = deploy(tmp_path, bundles.canal, bundles.pub, "--wait", "30")
    assert r.returncode == 0, r.stdout + r.stderr
    assert config_of(s1)["profile"] == "cis" and nodes_on(s1) == {"s1": True, "a1": True}
