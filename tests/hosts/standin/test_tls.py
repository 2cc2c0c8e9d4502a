"""Field fidelity of the RKE2 stand-in (issue 12), on real test hosts:

* install.sh puts RKE2 where RKE2's own script does: /usr/local, or /opt/rke2 when
  /usr/local is a mount point or read-only (units then in /etc/systemd/system, with
  their paths rewritten), or INSTALL_RKE2_TAR_PREFIX;
* the cluster speaks TLS like RKE2 (CA hash in the token, serving certificates for
  the node's names, client-certificate auth), and the admin kubeconfig works with a
  real kubectl from outside the node.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.hosts import Host, HostSet, hostset_for_tests
from tests.support.standin_nodes import (
    KUBECTL,
    RESET,
    TAG,
    bootstrap,
    configure,
    install,
    make_artifacts,
    ready_nodes,
    ssh,
    start,
    wait_ready,
    why_agent_waits,
    why_start_failed,
)

pytestmark = pytest.mark.hosts

UNITS = ("rke2-server.service", "rke2-agent.service")
KUBECONFIG = "/etc/rancher/rke2/rke2.yaml"
TLS = "/var/lib/rancher/rke2/server/tls"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_artifacts(tmp_path_factory.mktemp("artifacts"))


@pytest.fixture(scope="module")
def hs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostSet]:
    names = ["cp1", "cp2", "w1", "mnt", "ro"]
    modes = {"mnt": "mount", "ro": "readonly"}
    with hostset_for_tests(
        5, tmp_path_factory.mktemp("standin-tls"), names=names, usr_local=modes
    ) as hs:
        yield hs


@pytest.fixture
def nodes(hs: HostSet) -> Iterator[dict[str, Host]]:
    for h in hs.hosts:
        if not h.running:
            h.start()
        h.run(RESET, check=True)
        h.run("ip addr flush dev eth0 secondary", check=False)
    yield {h.name: h for h in hs.hosts}


@pytest.fixture(scope="module")
def kubectl_bin() -> str:
    """A real kubectl on the test machine (Debian: kubernetes-client)."""
    found = shutil.which("kubectl")
    if not found or subprocess.run([found, "version", "--client"], capture_output=True).returncode:
        msg = "a real kubectl is needed (apt-get install kubernetes-client)"
        if os.environ.get("MK8S_REQUIRE_HOSTS") == "1":
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    return found


def real_kubectl(
    kubectl_bin: str, kc: Path, *args: str, ok: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(kc.parent), "LANG": "C.UTF-8"}
    p = subprocess.run(
        [kubectl_bin, "--kubeconfig", str(kc), "--request-timeout=10s", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    if ok and p.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: exit {p.returncode}\n{p.stdout}{p.stderr}")
    return p


def kubeconfig_for(h: Host, server_host: str, dest: Path) -> Path:
    """The node's admin kubeconfig with ``server:`` pointed at ``server_host`` on 6443
    (what mk8s writes for the operator)."""
    text = h.path(KUBECONFIG).read_text()
    text = re.sub(r"(?m)^(\s*server:).*$", rf"\1 https://{server_host}:6443", text)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(text)
    dest.chmod(0o600)
    return dest


def kc_field(kc: Path, key: str) -> bytes:
    m = re.search(rf"(?m)^\s*{key}:\s*(\S+)", kc.read_text())
    assert m, key
    return base64.b64decode(m.group(1))


def table(out: str) -> dict[str, list[str]]:
    lines = out.splitlines()
    assert lines[0].split()[:5] == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"], out
    return {r.split()[0]: r.split() for r in lines[1:]}


# ---- real kubectl against the stand-in -------------------------------------------------
def test_real_kubectl_get_cordon_uncordon_drain(
    nodes: dict[str, Host], artifacts: Path, kubectl_bin: str, tmp_path: Path
) -> None:
    cp1, cp2, w1 = nodes["cp1"], nodes["cp2"], nodes["w1"]
    token = bootstrap(cp1, artifacts, token="t", tls_san=["k8s.test"])
    url = f"https://{cp1.address}:9345"
    install(cp2, artifacts)
    configure(cp2, "server", server=url, token=token)
    start(cp2, "server")
    install(w1, artifacts)
    configure(w1, "agent", server=url, token=token)
    start(w1, "agent")
    assert all(wait_ready(cp1, {"cp1", "cp2", "w1"}).values())

    # the kubeconfig carries the CA and an admin client certificate, no other credential
    kc = kubeconfig_for(cp1, cp1.address, tmp_path / "kc" / "config")
    text = kc.read_text()
    assert "token:" not in text and "password:" not in text
    assert (
        kc_field(kc, "certificate-authority-data") == cp1.path(f"{TLS}/server-ca.crt").read_bytes()
    )
    cert = kc_field(kc, "client-certificate-data").decode()
    subject = subprocess.run(
        ["openssl", "x509", "-noout", "-subject", "-nameopt", "RFC2253"],
        input=cert, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "CN=system:admin" in subject and "O=system:masters" in subject

    v = real_kubectl(kubectl_bin, kc, "version", "-o", "json")
    assert json.loads(v.stdout)["serverVersion"]["gitVersion"] == TAG
    rows = table(real_kubectl(kubectl_bin, kc, "get", "nodes").stdout)
    assert sorted(rows) == ["cp1", "cp2", "w1"]
    assert rows["cp1"][1:3] == ["Ready", "control-plane,etcd,master"]
    assert rows["w1"][1:3] == ["Ready", "<none>"] and rows["w1"][4] == TAG
    wide = table(real_kubectl(kubectl_bin, kc, "get", "nodes", "-o", "wide").stdout)
    assert wide["w1"][5] == w1.address
    assert list(table(real_kubectl(kubectl_bin, kc, "get", "node", "w1").stdout)) == ["w1"]
    obj = json.loads(real_kubectl(kubectl_bin, kc, "get", "node", "w1", "-o", "json").stdout)
    assert obj["kind"] == "Node" and obj["metadata"]["name"] == "w1"
    assert not obj["spec"].get("unschedulable")
    p = real_kubectl(kubectl_bin, kc, "get", "node", "nope", ok=False)
    assert p.returncode == 1 and 'Error from server (NotFound): nodes "nope" not found' in p.stderr

    # cordon: SchedulingDisabled in the table, spec.unschedulable in the JSON, on every server
    assert real_kubectl(kubectl_bin, kc, "cordon", "w1").stdout.strip() == "node/w1 cordoned"
    rows = table(real_kubectl(kubectl_bin, kc, "get", "nodes").stdout)
    assert rows["w1"][1] == "Ready,SchedulingDisabled" and rows["cp1"][1] == "Ready"
    obj = json.loads(real_kubectl(kubectl_bin, kc, "get", "node", "w1", "-o", "json").stdout)
    assert obj["spec"]["unschedulable"] is True
    deadline = time.monotonic() + 10
    while "SchedulingDisabled" not in ssh(cp2, f"{KUBECTL} get nodes").stdout:
        assert time.monotonic() < deadline, "the cordon did not replicate to cp2"
        time.sleep(0.2)
    js = json.loads(ssh(cp2, f"{KUBECTL} get nodes -o json").stdout)
    assert {i["metadata"]["name"]: i["spec"].get("unschedulable") for i in js["items"]} == {
        "cp1": None,
        "cp2": None,
        "w1": True,
    }
    # the Node object outlives a restart of the node's service
    ssh(w1, "systemctl restart rke2-agent")
    time.sleep(1)
    assert table(real_kubectl(kubectl_bin, kc, "get", "nodes").stdout)["w1"][1].endswith(
        "SchedulingDisabled"
    )
    assert "already cordoned" in real_kubectl(kubectl_bin, kc, "cordon", "w1").stdout

    # uncordon clears it
    assert real_kubectl(kubectl_bin, kc, "uncordon", "w1").stdout.strip() == "node/w1 uncordoned"
    assert table(real_kubectl(kubectl_bin, kc, "get", "nodes").stdout)["w1"][1] == "Ready"
    obj = json.loads(real_kubectl(kubectl_bin, kc, "get", "node", "w1", "-o", "json").stdout)
    assert not obj["spec"].get("unschedulable")

    # drain of a node without pods: cordon, nothing to evict
    out = real_kubectl(
        kubectl_bin, kc, "drain", "cp2", "--ignore-daemonsets", "--delete-emptydir-data"
    ).stdout
    assert "node/cp2 cordoned" in out and "node/cp2 drained" in out
    assert table(real_kubectl(kubectl_bin, kc, "get", "nodes").stdout)["cp2"][1] == (
        "Ready,SchedulingDisabled"
    )
    # the stand-in kubectl on the node sees and undoes it, with the same TLS material
    assert ssh(cp1, f"{KUBECTL} uncordon cp2").stdout.strip() == "node/cp2 uncordoned"
    assert table(real_kubectl(kubectl_bin, kc, "get", "nodes").stdout)["cp2"][1] == "Ready"
    assert ssh(cp1, f"{KUBECTL} get --raw /readyz").stdout.strip() == "ok"
    assert real_kubectl(kubectl_bin, kc, "get", "--raw", "/readyz").stdout.strip() == "ok"

    # the second server's own kubeconfig (its own serving certificate, same CA) works too
    kc2 = kubeconfig_for(cp2, cp2.address, tmp_path / "kc2" / "config")
    assert sorted(table(real_kubectl(kubectl_bin, kc2, "get", "nodes").stdout)) == [
        "cp1",
        "cp2",
        "w1",
    ]


def test_kubeconfig_host_not_in_the_certificate_is_rejected(
    nodes: dict[str, Host], artifacts: Path, kubectl_bin: str, tmp_path: Path
) -> None:
    cp1 = nodes["cp1"]
    # a second address on the node, which the serving certificate does not name
    other = cp1.address.rsplit(".", 1)[0] + ".201"
    cp1.run(f"ip addr add {other}/24 dev eth0", check=True)
    bootstrap(cp1, artifacts, token="t")
    good = kubeconfig_for(cp1, cp1.address, tmp_path / "good" / "config")
    assert real_kubectl(kubectl_bin, good, "get", "nodes").returncode == 0
    bad = kubeconfig_for(cp1, other, tmp_path / "bad" / "config")
    p = real_kubectl(kubectl_bin, bad, "get", "nodes", ok=False)
    assert p.returncode != 0 and "x509" in p.stderr and other in p.stderr, p.stderr
    # the stand-in kubectl refuses it as well
    p = ssh(cp1, f"{KUBECTL} -s https://{other}:6443 get nodes", ok=False)
    assert p.returncode == 1 and "failed to verify certificate" in p.stderr
    # a kubeconfig whose CA is another cluster's is refused too
    ca = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(tmp_path / "k"), "-subj", "/CN=other-ca", "-days", "1"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    text = good.read_text()
    m = re.search(r"certificate-authority-data: (\S+)", text)
    assert m
    other_ca = tmp_path / "otherca" / "config"
    other_ca.parent.mkdir()
    other_ca.write_text(text.replace(m.group(1), base64.b64encode(ca.encode()).decode()))
    p = real_kubectl(kubectl_bin, other_ca, "get", "nodes", ok=False)
    assert p.returncode != 0 and "x509" in p.stderr
    # with the address as a tls-san (and a restart) the same kubeconfig works
    configure(cp1, "server", token="t", tls_san=[other])
    ssh(cp1, "systemctl restart rke2-server")
    assert "cp1" in table(real_kubectl(kubectl_bin, bad, "get", "nodes").stdout)
    sans = subprocess.run(
        ["openssl", "x509", "-noout", "-ext", "subjectAltName"],
        input=cp1.path(f"{TLS}/serving-kube-apiserver.crt").read_text(),
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    for want in (
        f"IP Address:{cp1.address}", "IP Address:127.0.0.1", "DNS:localhost", "DNS:cp1",
        "DNS:kubernetes", "DNS:kubernetes.default", "DNS:kubernetes.default.svc",
        "DNS:kubernetes.default.svc.cluster.local", f"IP Address:{other}",
    ):  # fmt: skip
        assert want in sans, (want, sans)


def _get(url: str, ctx: ssl.SSLContext) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10, context=ctx) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_api_refuses_requests_without_a_valid_client_certificate(
    nodes: dict[str, Host], artifacts: Path, kubectl_bin: str, tmp_path: Path
) -> None:
    cp1 = nodes["cp1"]
    bootstrap(cp1, artifacts, token="t")
    kc = kubeconfig_for(cp1, cp1.address, tmp_path / "kc" / "config")
    ca = kc_field(kc, "certificate-authority-data").decode()
    api = f"https://{cp1.address}:6443"
    # no client certificate: 401 for everything, health checks included (no anonymous auth)
    anon = ssl.create_default_context(cadata=ca)
    for path in ("/api/v1/nodes", "/readyz", "/version", "/api"):
        code, body = _get(api + path, anon)
        assert (code, body["reason"]) == (401, "Unauthorized"), path
    # the supervisor's /cacerts is public and is the CA of the kubeconfig
    with urllib.request.urlopen(f"https://{cp1.address}:9345/cacerts", context=anon) as r:
        assert r.read().decode() == ca
    # real kubectl without the client certificate (a bearer token instead, which the
    # stand-in does not know: without any credential kubectl would prompt for a password)
    text = re.sub(r"(?m)^\s*client-(certificate|key)-data:.*\n", "", kc.read_text())
    nocert = tmp_path / "nocert" / "config"
    nocert.parent.mkdir()
    nocert.write_text(text.rstrip("\n") + "\n    token: not-a-token\n")
    p = real_kubectl(kubectl_bin, nocert, "get", "nodes", ok=False)
    assert p.returncode != 0 and "You must be logged in to the server" in p.stderr, p.stderr

    # a certificate from the cluster's client CA without system:masters: 403
    def client_cert(ca_crt: Path, ca_key: Path, subj: str, name: str) -> tuple[Path, Path]:
        key, csr, crt = (tmp_path / f"{name}.{x}" for x in ("key", "csr", "crt"))
        ext = tmp_path / f"{name}.ext"
        ext.write_text("extendedKeyUsage = clientAuth\nkeyUsage = critical,digitalSignature\n")
        subprocess.run(
            ["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", subj],
            check=True, capture_output=True,
        )  # fmt: skip
        subprocess.run(
            ["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
             "-set_serial", "0x4242", "-days", "1", "-extfile", str(ext), "-out", str(crt)],
            check=True, capture_output=True,
        )  # fmt: skip
        return crt, key

    ccrt, ckey = client_cert(
        cp1.path(f"{TLS}/client-ca.crt"), cp1.path(f"{TLS}/client-ca.key"), "/CN=alice", "alice"
    )
    ctx = ssl.create_default_context(cadata=ca)
    ctx.load_cert_chain(ccrt, ckey)
    code, body = _get(api + "/api/v1/nodes", ctx)
    assert (code, body["reason"]) == (403, "Forbidden") and "alice" in body["message"]
    alice = tmp_path / "alice" / "config"
    alice.parent.mkdir()
    b64 = lambda p: base64.b64encode(p.read_bytes()).decode()  # noqa: E731
    alice.write_text(
        text.rstrip("\n")
        + f"\n    client-certificate-data: {b64(ccrt)}\n    client-key-data: {b64(ckey)}\n"
    )
    p = real_kubectl(kubectl_bin, alice, "get", "nodes", ok=False)
    assert p.returncode != 0 and "Forbidden" in p.stderr, p.stderr

    # a client certificate from another CA does not get past the TLS handshake
    other_key, other_crt = tmp_path / "oca.key", tmp_path / "oca.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(other_key), "-out", str(other_crt), "-subj", "/CN=other-ca",
         "-days", "1"],
        check=True, capture_output=True,
    )  # fmt: skip
    mcrt, mkey = client_cert(other_crt, other_key, "/O=system:masters/CN=mallory", "mallory")
    ctx = ssl.create_default_context(cadata=ca)
    ctx.load_cert_chain(mcrt, mkey)
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
        _get(api + "/api/v1/nodes", ctx)
    # and the admin certificate works (the control)
    ctx = ssl.create_default_context(cadata=ca)
    adm_crt, adm_key = tmp_path / "adm.crt", tmp_path / "adm.key"
    adm_crt.write_bytes(kc_field(kc, "client-certificate-data"))
    adm_key.write_bytes(kc_field(kc, "client-key-data"))
    ctx.load_cert_chain(adm_crt, adm_key)
    code, body = _get(api + "/api/v1/nodes", ctx)
    assert code == 200 and [i["metadata"]["name"] for i in body["items"]] == ["cp1"]
    # only spec.unschedulable can be patched, and only with a patch content type
    req = urllib.request.Request(
        api + "/api/v1/nodes/cp1",
        data=json.dumps({"spec": {"unschedulable": True}}).encode(),
        method="PATCH",
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(req, timeout=10, context=ctx)
    assert exc.value.code == 415


def test_join_refuses_a_token_whose_ca_hash_does_not_match(
    nodes: dict[str, Host], artifacts: Path
) -> None:
    cp1, cp2, w1 = nodes["cp1"], nodes["cp2"], nodes["w1"]
    token = bootstrap(cp1, artifacts, token="right")
    ca_hash = token[3:67]
    # the hash in the token is the sha256 of the CA that /cacerts serves
    assert hashlib.sha256(cp1.path(f"{TLS}/server-ca.crt").read_bytes()).hexdigest() == ca_hash
    url = f"https://{cp1.address}:9345"
    wrong = "K10" + hashlib.sha256(b"another cluster's CA").hexdigest() + "::server:right"
    for h, role in ((cp2, "server"), (w1, "agent")):
        install(h, artifacts)
        configure(h, role, server=url, token=wrong)
        msg = why_start_failed(h, role) if role == "server" else why_agent_waits(h)
        assert "token CA hash does not match the Cluster CA certificate hash" in msg, msg
    # the joiner refused before sending its token: the cluster never saw it
    assert list(ready_nodes(cp1)) == ["cp1"]
    # the right hash joins, and the agent keeps the cluster CA
    configure(w1, "agent", server=url, token=token)
    start(w1, "agent")
    assert wait_ready(cp1, {"cp1", "w1"})["w1"]
    assert (
        w1.path("/var/lib/rancher/rke2/agent/server-ca.crt").read_bytes()
        == cp1.path(f"{TLS}/server-ca.crt").read_bytes()
    )


# ---- install.sh: where RKE2 goes -----------------------------------------------------
def assert_installed_at(h: Host, prefix: str) -> None:
    for f in ("bin/rke2", "bin/rke2-killall.sh", "bin/rke2-uninstall.sh", "share/rke2/LICENSE.txt",
              "lib/systemd/system/rke2-server.env", "lib/systemd/system/rke2-agent.env"):  # fmt: skip
        assert h.path(f"{prefix}/{f}").exists(), f
    for unit in UNITS:
        # the units moved to /etc/systemd/system, their paths rewritten to the prefix
        assert not h.path(f"{prefix}/lib/systemd/system/{unit}").exists()
        text = h.path(f"/etc/systemd/system/{unit}").read_text()
        assert f"ExecStart={prefix}/bin/rke2 " in text
        assert f"EnvironmentFile=-{prefix}/lib/systemd/system/%N.env" in text
        assert "/usr/local" not in text
    assert f"PREFIX={prefix}\n" in h.path(f"{prefix}/bin/rke2-uninstall.sh").read_text()
    assert h.run("test -e /usr/local/bin/rke2").returncode == 1


@pytest.mark.parametrize("node", ["mnt", "ro"])
def test_install_goes_to_opt_rke2_when_usr_local_is_a_mount_point_or_read_only(
    nodes: dict[str, Host], artifacts: Path, node: str
) -> None:
    h = nodes[node]
    p = install(h, artifacts)
    assert "unpacking tarball file to /opt/rke2" in p.stdout
    assert "/usr/local is read-only or a mount point; installing to /opt/rke2" in p.stderr
    assert "moving systemd units to /etc/systemd/system" in p.stdout
    assert_installed_at(h, "/opt/rke2")
    assert ssh(h, "systemctl cat rke2-server").stdout.startswith(
        "# /etc/systemd/system/rke2-server.service"
    )
    # the service starts from there and serves
    configure(h, "server", token="t")
    start(h, "server")
    assert ssh(h, "systemctl is-active rke2-server").stdout.strip() == "active"
    assert ssh(h, f"{KUBECTL} get --raw /readyz").stdout.strip() == "ok"
    assert "/opt/rke2/bin/rke2 server" in ssh(h, "ps -eo args").stdout
    # its uninstall script knows where it lives, and removes it all
    ssh(h, "/opt/rke2/bin/rke2-uninstall.sh")
    for gone in ("/opt/rke2/bin/rke2", "/etc/systemd/system/rke2-server.service",
                 "/opt/rke2/lib/systemd/system/rke2-server.env", "/var/lib/rancher/rke2"):  # fmt: skip
        assert h.run(f"test -e {gone}").returncode == 1, gone
    assert ssh(h, "systemctl is-active rke2-server", ok=False).stdout.strip() == "inactive"


def test_install_tar_prefix(nodes: dict[str, Host], artifacts: Path) -> None:
    h, ro = nodes["w1"], nodes["ro"]
    # INSTALL_RKE2_TAR_PREFIX wins over the default, even where /usr/local is writable
    p = install(h, artifacts, env="INSTALL_RKE2_TAR_PREFIX=/opt/custom")
    assert "unpacking tarball file to /opt/custom" in p.stdout and "[WARN]" not in p.stderr
    assert_installed_at(h, "/opt/custom")
    configure(h, "server", token="t")
    start(h, "server")
    assert ssh(h, f"{KUBECTL} get --raw /readyz").stdout.strip() == "ok"
    ssh(h, "/opt/custom/bin/rke2-uninstall.sh")
    assert h.run("test -e /opt/custom/bin/rke2").returncode == 1
    # an explicit prefix is not second-guessed: a read-only /usr/local fails the install
    p = install(ro, artifacts, env="INSTALL_RKE2_TAR_PREFIX=/usr/local", ok=False)
    assert p.returncode != 0 and "Read-only file system" in p.stderr
    assert ro.run("test -e /usr/local/bin/rke2 || test -e /opt/rke2/bin/rke2").returncode == 1
    # the default node keeps /usr/local (units stay in PREFIX/lib/systemd/system)
    p = install(h, artifacts)
    assert "unpacking tarball file to /usr/local" in p.stdout and "[WARN]" not in p.stderr
    assert h.path("/usr/local/lib/systemd/system/rke2-server.service").exists()
    assert h.run(f"test -e /etc/systemd/system/{UNITS[0]}").returncode == 1


def test_join_verifies_the_server_certificate(nodes: dict[str, Host], artifacts: Path) -> None:
    """After the CA check the join goes over verified TLS: a server address that the
    serving certificate does not name is refused (RKE2's tls-san-security)."""
    cp1, w1 = nodes["cp1"], nodes["w1"]
    other = cp1.address.rsplit(".", 1)[0] + ".202"
    cp1.run(f"ip addr add {other}/24 dev eth0", check=True)
    token = bootstrap(cp1, artifacts, token="t")
    install(w1, artifacts)
    configure(w1, "agent", server=f"https://{other}:9345", token=token)
    msg = why_agent_waits(w1)
    assert "certificate verify failed" in msg, msg
    # named by a tls-san, the same address works
    configure(cp1, "server", token="t", tls_san=[other])
    ssh(cp1, "systemctl restart rke2-server")
    configure(w1, "agent", server=f"https://{other}:9345", token=token)
    ssh(w1, "systemctl reset-failed rke2-agent")
    start(w1, "agent")
    assert wait_ready(cp1, {"cp1", "w1"})["w1"]
