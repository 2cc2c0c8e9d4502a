"""Certificates end to end on test hosts (3 servers + 1 agent, the RKE2 stand-in with
its real etcd): ``mk8s certs`` names a node within 30 days and exits 1, ``status``
shows the earliest expiry; ``mk8s certs rotate`` (its dry run first: the same plan)
gives every node new certificates under the same CAs, servers one at a time, then the
agent, and every node is Ready; a cluster whose certificates expired while it was
powered off comes back with it (the servers stopped, rotated and started together)."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import certclock
from tests.support.hosts import Host, HostSet, hostset_for_tests
from tests.support.world import World, audit, deploy, mk8s, plan_commands, write_cluster

pytestmark = pytest.mark.hosts

NAMES = ["cp1", "cp2", "cp3", "w1"]
ROLES = {"cp1": "server", "cp2": "server", "cp3": "server", "w1": "agent"}
TLS = "/var/lib/rancher/rke2/server/tls"
AGENT = "/var/lib/rancher/rke2/agent"
KUBECTL = "/var/lib/rancher/rke2/bin/kubectl --kubeconfig /etc/rancher/rke2/rke2.yaml"
TEN_DAYS = 10 * 86400


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
    world: World,
) -> Iterator[tuple[HostSet, Path]]:
    d = tmp_path_factory.mktemp("certs")
    with hostset_for_tests(4, d / "hosts", names=NAMES) as hs:
        write_cluster(d / "cluster.yaml", hs, [(n, ROLES[n]) for n in NAMES])
        # cp2's RKE2 issues certificates that live ten days (the stand-in's test knob)
        hs.by_name("cp2").run(
            f"mkdir -p /etc/default && echo MK8S_STANDIN_CERT_SECONDS={TEN_DAYS}"
            " > /etc/default/rke2-server",
            check=True,
        )
        r = deploy(d, world.bundle, world.pub)
        assert r.returncode == 0, r.stdout + r.stderr
        yield hs, d


def x509(h: Host, path: str, *fields: str) -> str:
    return h.run(f"openssl x509 -in {path} -noout {' '.join(fields)}", check=True).stdout.strip()


def pubkey(h: Host, path: str) -> str:
    return h.run(f"openssl x509 -in {path} -noout -pubkey", check=True).stdout


def ready(hs: HostSet) -> dict[str, bool]:
    r = hs.by_name("cp1").run(f"{KUBECTL} get nodes -o json", check=True)
    return {
        i["metadata"]["name"]: any(
            c["type"] == "Ready" and c["status"] == "True" for c in i["status"]["conditions"]
        )
        for i in json.loads(r.stdout)["items"]
    }


def sent(d: Path, since: int) -> list[tuple[str, str]]:
    return [(str(x["node"]), str(x["command"])) for x in audit(d)[since:] if "command" in x]


def test_certs_names_a_node_within_30_days(cluster: tuple[HostSet, Path]) -> None:
    _hs, d = cluster
    r = mk8s("certs", "-f", "cluster.yaml", cwd=d)
    assert r.returncode == 1, r.stdout + r.stderr
    rows = {ln.split()[0]: ln for ln in r.stdout.splitlines()[1:] if ln.split()}
    assert "ATTENTION" in rows["cp2"] and "(10d)" in rows["cp2"]
    for n in ("cp1", "cp3", "w1"):
        assert rows[n].rstrip().endswith("ok"), rows[n]
    assert "cp2" in r.stderr and "mk8s certs rotate" in r.stderr and "Traceback" not in r.stderr
    j = mk8s("certs", "-f", "cluster.yaml", "--json", cwd=d)
    assert j.returncode == 1
    nodes = {n["node"]: n for n in json.loads(j.stdout)["nodes"]}
    assert nodes["cp2"]["daysLeft"] < 11 and nodes["cp1"]["daysLeft"] > 300
    assert nodes["cp2"]["problem"] and nodes["w1"]["problem"] is None
    st = mk8s("status", "-f", "cluster.yaml", cwd=d)
    assert st.returncode == 0, st.stdout + st.stderr
    assert "CERTS EXPIRE" in st.stdout and "cp2: certificates:" in st.stdout


def test_rotate_renews_every_node_servers_one_at_a_time(cluster: tuple[HostSet, Path]) -> None:
    hs, d = cluster
    cp2 = hs.by_name("cp2")
    cp2.run("rm -f /etc/default/rke2-server", check=True)  # from now on: 365 days
    servers = [hs.by_name(n) for n in ("cp1", "cp2", "cp3")]
    w1 = hs.by_name("w1")
    before = {h.name: pubkey(h, f"{TLS}/serving-kube-apiserver.crt") for h in servers}
    before["w1"] = x509(w1, f"{AGENT}/client-kubelet.crt", "-serial")
    ca = hs.by_name("cp1").path(f"{TLS}/server-ca.crt").read_text()
    refused = mk8s("certs", "rotate", "-f", "cluster.yaml", cwd=d)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    start = len(audit(d))
    dry = mk8s("certs", "rotate", "-f", "cluster.yaml", "--dry-run", cwd=d)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "one server at a time" in dry.stdout
    changes = ("systemctl stop", "systemctl start", "systemctl restart", "certificate rotate")
    assert not [c for _, c in sent(d, start) if any(w in c for w in changes)]
    start = len(audit(d))
    r = mk8s("certs", "rotate", "-f", "cluster.yaml", "--yes", "--wait", "120", cwd=d)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "kubeconfig:" in r.stdout
    # new keys on every server, a new kubelet certificate on the agent, the same CA
    for h in servers:
        assert pubkey(h, f"{TLS}/serving-kube-apiserver.crt") != before[h.name], h.name
        assert h.path(f"{TLS}/server-ca.crt").read_text() == ca
    assert x509(w1, f"{AGENT}/client-kubelet.crt", "-serial") != before["w1"]
    assert ready(hs) == dict.fromkeys(NAMES, True)
    # servers one at a time (stop, rotate, start before the next stop), then the agent
    order = [(n, w) for n, c in sent(d, start) for w in changes if w in c]
    per_server = ("systemctl stop", "certificate rotate", "systemctl start")
    assert order == [
        *[(s, w) for s in ("cp1", "cp2", "cp3") for w in per_server],
        ("w1", "systemctl restart"),
    ], order
    # the dry run printed every command the real run sent
    planned = plan_commands(dry.stdout)
    every = set().union(*planned.values())
    missing = [
        (n, c[:100])
        for n, c in sent(d, start)
        if c not in every and " get nodes -o json" not in c and "journalctl" not in c
    ]
    assert not missing, missing
    ok = mk8s("certs", "-f", "cluster.yaml", cwd=d)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # the kubeconfig written again works from this machine
    kc = mk8s("kubeconfig", "-f", "cluster.yaml", cwd=d)
    assert kc.returncode == 0


def test_a_cluster_whose_certificates_expired_while_off_comes_back(
    cluster: tuple[HostSet, Path],
) -> None:
    hs, d = cluster
    # power off: agents, then servers
    hs.by_name("w1").run("systemctl stop rke2-agent", check=True, timeout=120)
    for n in ("cp3", "cp2", "cp1"):
        hs.by_name(n).run("systemctl stop rke2-server", check=True, timeout=120)
    cas = certclock.cluster_cas(hs.by_name("cp1"))
    for h in hs.hosts:
        assert certclock.expire_node(h, cas) >= 4, h.name
    r = mk8s("certs", "-f", "cluster.yaml", cwd=d)
    assert r.returncode == 1 and r.stdout.count("EXPIRED") >= 8, r.stdout
    dry = mk8s("certs", "rotate", "-f", "cluster.yaml", "--dry-run", cwd=d)
    assert dry.returncode == 0 and "started at once" in dry.stdout, dry.stdout + dry.stderr
    assert re.search(r"no server answers|certificates expired on", dry.stdout)
    t = time.monotonic()
    r = mk8s("certs", "rotate", "-f", "cluster.yaml", "--yes", "--wait", "120", cwd=d, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert time.monotonic() - t < 300
    assert ready(hs) == dict.fromkeys(NAMES, True)
    ok = mk8s("certs", "-f", "cluster.yaml", cwd=d)
    assert ok.returncode == 0 and "EXPIRED" not in ok.stdout, ok.stdout + ok.stderr
    # and the cluster serves: the real kubectl with the kubeconfig written again
    got = subprocess.run(
        ["kubectl", "--kubeconfig", str(d / "demo.kubeconfig"), "get", "nodes", "-o", "name"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert got.returncode == 0 and got.stdout.count("node/") == 4, got.stdout + got.stderr
