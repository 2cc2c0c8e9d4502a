"""Certificates without root: the read command run by this machine's shell over files
made with ``cryptography``, the parser, the verdicts (30 days), the rotation plan, the
quorum arithmetic of a server's removal, the unlisted nodes a deploy names, the
``status`` column and the CLI's refusals."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mk8s.deploy.builders import certfiles as certs
from mk8s.deploy.builders import quorum
from mk8s.deploy.cluster import Node, load_cluster
from mk8s.deploy.engine.known import NodeStatus
from mk8s.deploy.ops import status_table
from mk8s.deploy.phases.unlisted import unlisted, warning
from mk8s.deploy.rke2config import NodePaths

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
DAY = datetime.timedelta(days=1)

CLUSTER = """apiVersion: mk8s/v1alpha1
kind: Cluster
metadata: {name: local}
spec:
  nodes:
    - {address: 10.0.0.1, name: cp1, role: server}
    - {address: 10.0.0.2, name: cp2, role: server}
    - {address: 10.0.0.3, name: cp3, role: server}
    - {address: 10.0.0.4, name: w1, role: agent}
    - {address: 10.0.0.5, name: w2, role: agent}
    - {address: 10.0.0.6, name: w3, role: agent}
"""


def node(name: str) -> Node:
    """A node of CLUSTER (cp1-cp3 servers, w1-w3 agents)."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "cluster.yaml").write_text(CLUSTER)
        return load_cluster(Path(d) / "cluster.yaml", check_files=False).node(name)


def pem(cn: str, not_after: datetime.datetime, *, ca: bool = False) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_after - 400 * DAY)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture
def cluster(tmp_path: Path):  # type: ignore[no-untyped-def]
    p = tmp_path / "cluster.yaml"
    p.write_text(CLUSTER)
    return load_cluster(p, check_files=False)


def server_files(data: Path, leaf_days: float) -> None:
    """A server's certificate files: CAs, a control-plane leaf, an etcd leaf, an agent
    file holding its leaf then its CA, a key that must never be read."""
    tls = data / "server" / "tls"
    (tls / "etcd").mkdir(parents=True)
    (data / "agent").mkdir(parents=True)
    ca = pem("rke2-server-ca@1", NOW + 3000 * DAY, ca=True)
    (tls / "server-ca.crt").write_text(ca)
    (tls / "serving-kube-apiserver.crt").write_text(pem("kube-apiserver", NOW + 300 * DAY))
    (tls / "etcd" / "client.crt").write_text(pem("etcd-client", NOW + leaf_days * DAY))
    (tls / "etcd" / "client.key").write_text("-----BEGIN EC PRIVATE KEY-----\nsecret\n")
    (data / "agent" / "client-kubelet.crt").write_text(pem("system:node:cp1", NOW + 200 * DAY) + ca)
    (data / "agent" / "garbage.crt").write_text("not a certificate\n")


def read(data: Path, *, server: bool) -> certs.NodeCerts:
    """The read command as the node's shell runs it, parsed."""
    cmd = certs.read_command(NodePaths(data_dir=str(data)), server=server)
    out = subprocess.run(["/bin/sh", "-c", cmd.render()], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "secret" not in out.stdout  # keys are never read
    found, problems = certs.parse(out.stdout)
    return certs.NodeCerts(node("cp1" if server else "w1"), tuple(found), "", tuple(problems))


def test_a_servers_earliest_leaf_is_found_and_cas_are_not_leaves(tmp_path: Path) -> None:
    server_files(tmp_path, leaf_days=12)
    nc = read(tmp_path, server=True)
    assert len(nc.certs) == 4 and nc.problems == (
        f"{tmp_path}/agent/garbage.crt: no certificate in the file",
    )
    first = nc.earliest
    assert first is not None and first.name == "tls/etcd/client.crt"
    assert nc.earliest_ca is not None and nc.earliest_ca.name == "tls/server-ca.crt"
    # the agent file's first certificate is its leaf, not the CA after it
    kubelet = [c for c in nc.certs if c.name == "agent/client-kubelet.crt"]
    assert kubelet and not kubelet[0].is_ca and "system:node:cp1" in kubelet[0].subject
    assert "expires in 12 days" in certs.verdict(nc, NOW)
    assert certs.shown_expiry(nc, NOW) == f"{(NOW + 12 * DAY):%Y-%m-%d} (12d)"


def test_an_agent_reads_only_its_agent_directory(tmp_path: Path) -> None:
    server_files(tmp_path, leaf_days=12)
    nc = read(tmp_path, server=False)
    assert [c.name for c in nc.certs] == ["agent/client-kubelet.crt"]
    assert certs.verdict(nc, NOW) == ""


def test_a_directory_path_travels_as_data(tmp_path: Path) -> None:
    odd = tmp_path / "d$(touch pwned);x"
    server_files(odd, leaf_days=100)
    nc = read(odd, server=True)
    assert len(nc.certs) == 4 and not (Path.cwd() / "pwned").exists()
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    ("days", "expect"),
    [(-1, "EXPIRED"), (0.5, "expires in 0 days"), (29, "expires in 29 days"), (31, ""), (400, "")],
)
def test_the_verdict_is_30_days(days: float, expect: str) -> None:
    n = node("cp1")
    leaf = certs.Cert("/d/server/tls/a.crt", "CN=a", NOW + days * DAY, False, 1)
    ca = certs.Cert("/d/server/tls/server-ca.crt", "CN=ca", NOW + 3000 * DAY, True, 2)
    nc = certs.NodeCerts(n, (leaf, ca))
    got = certs.verdict(nc, NOW)
    assert (expect in got and got) if expect else got == ""
    assert nc.expired(NOW) == (days <= 0)


def test_a_ca_near_expiry_is_named_not_rotated() -> None:
    n = node("cp1")
    leaf = certs.Cert("/d/server/tls/a.crt", "CN=a", NOW + 300 * DAY, False, 1)
    ca = certs.Cert("/d/server/tls/client-ca.crt", "CN=ca", NOW + 10 * DAY, True, 2)
    got = certs.verdict(certs.NodeCerts(n, (leaf, ca)), NOW)
    assert "CA tls/client-ca.crt" in got and "rotate-ca" in got


def test_nothing_read_is_a_problem() -> None:
    n = node("w1")
    assert "mk8s deploy" in certs.verdict(certs.NodeCerts(n), NOW)
    assert "refused" in certs.verdict(certs.NodeCerts(n, error="refused"), NOW)
    assert certs.as_json(certs.NodeCerts(n), NOW)["earliest"] is None


# -- the rotation plan ---------------------------------------------------------------------
def test_a_serving_cluster_rotates_its_servers_one_at_a_time(cluster) -> None:  # type: ignore[no-untyped-def]
    p = certs.plan_rotation(cluster.servers, cluster.agents, serving=True, expired=[], batch=2)
    assert p.mode == "rolling" and p.servers == ("cp1", "cp2", "cp3")
    assert p.agent_batches == (("w1", "w2"), ("w3",))


def test_a_cluster_down_or_expired_starts_its_servers_together(cluster) -> None:  # type: ignore[no-untyped-def]
    down = certs.plan_rotation(cluster.servers, cluster.agents, serving=False, expired=[], batch=1)
    assert down.mode == "together" and down.agent_batches == (("w1",), ("w2",), ("w3",))
    old = certs.plan_rotation(cluster.servers, (), serving=True, expired=["cp2"], batch=1)
    assert old.mode == "together" and "cp2" in old.why and old.agent_batches == ()


def test_the_steps_of_each_way(cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The plan and the run share the steps: rolling starts block, together ones do not."""
    from mk8s.deploy.builders.facts import NodeFacts
    from mk8s.deploy.engine.session import Session, SessionSettings
    from mk8s.deploy.phases.certificates import CertRun, RotateServers

    s = Session(SessionSettings(cluster=cluster, state_base=tmp_path, ready_timeout=30))
    for n in cluster.nodes:
        s.known.facts[n.name] = NodeFacts(
            "amd64", "x86_64", "", n.name, True, True, rke2_prefix="/opt/rke2"
        )
    run = CertRun()
    run.rotation = certs.plan_rotation(
        cluster.servers, cluster.agents, serving=True, expired=[], batch=1
    )
    rolling = [
        c.render() for st in RotateServers(run).steps(s, cluster.servers[0]) for c in st.commands
    ]
    assert rolling == [
        "systemctl stop rke2-server",
        "/opt/rke2/bin/rke2 certificate rotate",
        "systemctl enable rke2-server && systemctl start rke2-server",
    ]
    run.rotation = certs.plan_rotation(
        cluster.servers, cluster.agents, serving=False, expired=[], batch=1
    )
    together = [
        c.render() for st in RotateServers(run).steps(s, cluster.servers[0]) for c in st.commands
    ]
    assert together[-1] == "systemctl enable rke2-server && systemctl start --no-block rke2-server"
    plan = RotateServers(run).plan(s)
    assert "all started at once" in plan[0] and any("wait until cp1 is Ready" in ln for ln in plan)


# -- quorum ---------------------------------------------------------------------------------
def test_majority() -> None:
    assert [quorum.majority(n) for n in range(1, 7)] == [1, 2, 2, 3, 3, 4]


@pytest.mark.parametrize(
    ("up", "target", "refused"),
    [
        ({"cp1": True, "cp2": True, "cp3": True}, "cp3", ""),
        ({"cp1": True, "cp2": True, "cp3": False}, "cp2", "would leave 1 of 2"),
        ({"cp1": True, "cp2": True, "cp3": False}, "cp3", ""),
        ({"cp1": True, "cp2": True}, "cp1", ""),
        ({"cp1": True, "cp2": False, "cp3": False}, "cp1", "lost quorum"),
        ({"cp1": True}, "cp1", ""),  # the only member: the whole cluster goes
        ({"cp1": True, "cp2": True}, "w1", ""),  # not a member
        ({f"cp{i}": i != 5 for i in range(1, 6)}, "cp1", ""),  # 3 of 4 left up
        ({f"cp{i}": i < 4 for i in range(1, 6)}, "cp1", "would leave 2 of 4"),
    ],
)
def test_removal_keeps_quorum_or_is_refused(up: dict[str, bool], target: str, refused: str) -> None:
    got = quorum.removal_problem(target, up)
    assert (refused in got and got) if refused else got == ""


def nodes_json(*nodes: tuple[str, bool, bool]) -> str:
    items = []
    for name, server, ready in nodes:
        labels = {"node-role.kubernetes.io/etcd": "true"} if server else {}
        items.append(
            {
                "metadata": {"name": name, "labels": labels},
                "status": {
                    "conditions": [{"type": "Ready", "status": "True" if ready else "Unknown"}]
                },
            }
        )
    return json.dumps({"items": items})


def test_etcd_members_are_the_nodes_with_the_etcd_role() -> None:
    listing = nodes_json(("cp1", True, True), ("cp2", True, False), ("w1", False, True))
    assert quorum.etcd_members(listing) == {"cp1": True, "cp2": False}
    assert quorum.etcd_members("not json") == {}


def test_deploy_names_the_nodes_cluster_yaml_does_not_list() -> None:
    listing = nodes_json(("cp1", True, True), ("cp9", True, True), ("w8", False, True))
    found = unlisted(listing, ["cp1", "w1"])
    assert found == [("cp9", True), ("w8", False)]
    text = warning(found)
    assert "2 node(s)" in text and "cp9 (server, etcd member)" in text and "left alone" in text
    assert unlisted(nodes_json(("cp1", True, True)), ["cp1"]) == []


# -- status and the CLI --------------------------------------------------------------------
def test_status_shows_the_earliest_expiry() -> None:
    n = node("cp1")
    row = NodeStatus(n, reachable=True, ready=True, certs="2026-01-13 (12d)")
    row.certs_problem = "tls/etcd/client.crt expires in 12 days (under 30)"
    text = status_table([row])
    assert "CERTS EXPIRE" in text.splitlines()[0] and "2026-01-13 (12d)" in text
    assert "cp1: certificates: tls/etcd/client.crt expires in 12 days" in text
    assert "mk8s certs rotate" in text


def mk8s(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mk8s", *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_rotate_without_yes_is_refused(tmp_path: Path) -> None:
    (tmp_path / "cluster.yaml").write_text(CLUSTER)
    r = mk8s("certs", "rotate", "-f", "cluster.yaml", cwd=tmp_path)
    assert r.returncode == 2 and "--yes" in r.stderr and "Traceback" not in r.stderr
    r = mk8s("certs", cwd=tmp_path)
    assert r.returncode == 2 and "-f cluster.yaml" in r.stderr
    r = mk8s("certs", "-f", "missing.yaml", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert not (tmp_path / ".mk8s").exists()
