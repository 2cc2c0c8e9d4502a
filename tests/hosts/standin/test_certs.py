"""The stand-in's certificates and etcd member removal as RKE2 has them (CONTRACT CR2,
CR3, ET9), on real test hosts as root.

Every start of a node's agent gets new kubelet certificates from its server, into
``agent/`` (k3s pkg/agent/config/config.go); ``rke2 certificate rotate`` on an agent
backs the agent's files up and deletes them (k3s pkg/cli/cert/cert.go); a server's Node
stays, terminating, until its etcd member is removed (the member controller's wrangler
finalizer), and etcd refuses a removal that would leave too few started members.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.hosts import Host, HostSet, hostset_for_tests
from tests.support.standin_nodes import (
    RESET,
    configure,
    etcd_members,
    install,
    make_artifacts,
    ssh,
    start,
)

pytestmark = pytest.mark.hosts

AGENT = "/var/lib/rancher/rke2/agent"
TLS = "/var/lib/rancher/rke2/server/tls"
RKE2 = "/usr/local/bin/rke2"
KC_CMD = "/var/lib/rancher/rke2/bin/kubectl --kubeconfig /etc/rancher/rke2/rke2.yaml"
AGENT_FILES = [
    f"{n}.{ext}"
    for n in ("client-kubelet", "serving-kubelet", "client-kube-proxy", "client-rke2-controller")
    for ext in ("crt", "key")
]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_artifacts(tmp_path_factory.mktemp("artifacts"))


@pytest.fixture(scope="module")
def hs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostSet]:
    names = ["cp1", "cp2", "cp3", "w1"]
    with hostset_for_tests(4, tmp_path_factory.mktemp("standin-certs"), names=names) as hs:
        yield hs


@pytest.fixture
def fresh(hs: HostSet) -> list[Host]:
    for h in hs.hosts:
        if not h.running:
            h.start()
        h.run(RESET, check=True)
    return hs.hosts


def x509(h: Host, path: str, *fields: str) -> str:
    return ssh(h, f"openssl x509 -in {path} -noout {' '.join(fields)}").stdout.strip()


def server_and_agent(hs: list[Host], artifacts: Path) -> tuple[Host, Host]:
    cp1, w1 = hs[0], hs[3]
    install(cp1, artifacts)
    configure(cp1, "server", token="t")
    start(cp1, "server")
    install(w1, artifacts)
    configure(w1, "agent", token="t", server=f"https://{cp1.address}:9345")
    start(w1, "agent")
    return cp1, w1


def test_every_agent_start_gets_new_kubelet_certificates(
    fresh: list[Host], artifacts: Path
) -> None:
    cp1, w1 = server_and_agent(fresh, artifacts)
    for h in (cp1, w1):  # a server runs an agent too
        names = {p.name for p in h.path(AGENT).iterdir()}
        assert set(AGENT_FILES) | {"server-ca.crt", "client-ca.crt"} <= names, h.name
        assert h.path(f"{AGENT}/client-kubelet.key").stat().st_mode & 0o777 == 0o600
    subject = x509(w1, f"{AGENT}/client-kubelet.crt", "-subject")
    assert "system:node:w1" in subject and "system:nodes" in subject
    assert "w1" in x509(w1, f"{AGENT}/serving-kubelet.crt", "-ext", "subjectAltName")
    # the leaf first, then its CA: the file verifies against the cluster's client CA
    bundle = w1.path(f"{AGENT}/client-kubelet.crt").read_text()
    assert bundle.count("BEGIN CERTIFICATE") == 2
    cp1_ca = cp1.path(f"{TLS}/client-ca.crt").read_text()
    assert bundle.endswith(cp1_ca)
    # kube-proxy's certificate is the server's own
    assert (
        w1.path(f"{AGENT}/client-kube-proxy.crt")
        .read_text()
        .startswith(cp1.path(f"{TLS}/client-kube-proxy.crt").read_text())
    )
    serial = x509(w1, f"{AGENT}/client-kubelet.crt", "-serial")
    ssh(w1, "systemctl restart rke2-agent")
    assert x509(w1, f"{AGENT}/client-kubelet.crt", "-serial") != serial


def test_rotate_on_an_agent_backs_up_and_deletes_its_certificates(
    fresh: list[Host], artifacts: Path
) -> None:
    _, w1 = server_and_agent(fresh, artifacts)
    serial = x509(w1, f"{AGENT}/client-kubelet.crt", "-serial")
    ssh(w1, "systemctl stop rke2-agent")
    p = ssh(w1, f"{RKE2} certificate rotate")
    assert "Agent detected" in p.stderr
    m = re.search(r"Successfully backed up certificates to (\S+),", p.stderr)
    assert m and m.group(1).startswith(f"{AGENT}/tls-"), p.stderr
    backup = w1.path(m.group(1))
    assert {f for f in AGENT_FILES} <= {q.name for q in backup.iterdir()}
    for f in AGENT_FILES:
        assert not w1.path(f"{AGENT}/{f}").exists(), f
    assert w1.path(f"{AGENT}/server-ca.crt").exists()  # never a CA
    start(w1, "agent")
    assert x509(w1, f"{AGENT}/client-kubelet.crt", "-serial") != serial


def node(h: Host, name: str) -> dict | None:
    p = ssh(h, f"{KC_CMD} get node {name} -o json", ok=False)
    return json.loads(p.stdout) if p.returncode == 0 else None


def test_a_server_node_stays_until_its_member_is_removed(
    fresh: list[Host], artifacts: Path
) -> None:
    cp1, cp2, cp3 = fresh[:3]
    install(cp1, artifacts)
    configure(cp1, "server", token="s")
    start(cp1, "server")
    for h in (cp2, cp3):
        install(h, artifacts)
        configure(h, "server", token="s", server=f"https://{cp1.address}:9345")
        start(h, "server")
    got = node(cp1, "cp2")
    assert got and got["metadata"]["finalizers"] == ["wrangler.cattle.io/managed-etcd-controller"]
    time.sleep(5)  # etcd removes a member only once the others were connected for 5 s
    ssh(cp3, "systemctl stop rke2-server")
    # cp1 and cp3 (down) would be left: etcd refuses, the Node stays terminating
    p = ssh(cp1, f"{KC_CMD} delete node cp2 --timeout=8s", ok=False)
    assert p.returncode == 1 and "timed out waiting for the condition on nodes/cp2" in p.stderr
    got = node(cp1, "cp2")
    assert got and "deletionTimestamp" in got["metadata"]
    assert len(etcd_members(cp1)) == 3
    # once cp3 is back, the member controller's retry gets through and the Node goes
    start(cp3, "server")
    deadline = time.monotonic() + 60
    while node(cp1, "cp2") is not None:
        assert time.monotonic() < deadline, "cp2's Node did not go"
        time.sleep(0.5)
    assert [m["name"].rsplit("-", 1)[0] for m in etcd_members(cp1)] == ["cp1", "cp3"]
