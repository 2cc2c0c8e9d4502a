"""The RKE2 stand-in enforces its contract (tests/support/standin/CONTRACT.md, docs/testing.md),
on real test hosts over real SSH."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.hosts import Host, HostSet, hostset_for_tests
from tests.support.standin_nodes import (
    ARCH,
    ART,
    KUBECTL,
    RESET,
    TAG,
    bootstrap,
    configure,
    etcd_members,
    install,
    make_artifacts,
    ready_nodes,
    ssh,
    start,
    this_start,
    upload,
    wait_ready,
    why_agent_waits,
    why_start_failed,
)

pytestmark = pytest.mark.hosts


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_artifacts(tmp_path_factory.mktemp("artifacts"))


@pytest.fixture(scope="module")
def hs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostSet]:
    names = ["cp1", "cp2", "cp3", "w1", "w2"]
    with hostset_for_tests(5, tmp_path_factory.mktemp("standin-hosts"), names=names) as hs:
        yield hs


@pytest.fixture
def nodes(hs: HostSet) -> Iterator[list[Host]]:
    """The five hosts, with RKE2 uninstalled and the artifacts dir removed before the test."""
    for h in hs.hosts:
        if not h.running:
            h.start()
        h.run(RESET, check=True)
    yield hs.hosts


# ---- the happy path, by hand -------------------------------------------------------
def test_three_servers_two_agents_by_hand(nodes: list[Host], artifacts: Path) -> None:
    cp1, cp2, cp3, w1, w2 = nodes
    for h in nodes:
        out = install(h, artifacts).stdout
        assert "unpacking tarball file to /usr/local" in out
    configure(cp1, "server", token="s3cret", tls_san=["k8s.test", cp1.address])
    start(cp1, "server")
    assert ssh(cp1, f"{KUBECTL} get --raw /readyz").stdout.strip() == "ok"
    token = ssh(cp1, "cat /var/lib/rancher/rke2/server/node-token").stdout.strip()
    assert token.startswith("K10") and token.endswith("::server:s3cret")
    url = f"https://{cp1.address}:9345"
    for h in (cp2, cp3):  # servers one at a time
        configure(h, "server", server=url, token=token)
        start(h, "server")
    for h in (w1, w2):  # agents may go in parallel
        configure(h, "agent", server=url, token="s3cret", node_label=["role=worker"])
    procs = [
        subprocess.Popen([*h.hostset.ssh_argv(h), "systemctl enable --now rke2-agent"])
        for h in (w1, w2)
    ]
    assert [p.wait(30) for p in procs] == [0, 0]
    # Type=notify: `systemctl start rke2-agent` returned once each agent had joined
    assert {"w1", "w2"} <= set(ready_nodes(cp1))
    want = {"cp1", "cp2", "cp3", "w1", "w2"}
    assert wait_ready(cp3, want) == dict.fromkeys(want, True)
    table = ssh(cp2, f"{KUBECTL} get nodes").stdout.splitlines()
    assert table[0].split() == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    rows = {r.split()[0]: r.split() for r in table[1:]}
    assert rows["cp1"][1:3] == ["Ready", "control-plane,etcd,master"]
    assert rows["w1"][1:3] == ["Ready", "<none>"] and rows["w1"][4] == TAG
    js = json.loads(ssh(cp1, f"{KUBECTL} get nodes -o json").stdout)
    w1obj = next(i for i in js["items"] if i["metadata"]["name"] == "w1")
    assert w1obj["metadata"]["labels"]["role"] == "worker"
    assert w1obj["status"]["nodeInfo"]["kubeletVersion"] == TAG
    assert ssh(w1, "/usr/local/bin/rke2 --version").stdout.startswith(f"rke2 version {TAG}")
    assert ssh(cp1, "systemctl is-active rke2-server").stdout.strip() == "active"
    assert ssh(w1, "systemctl is-enabled rke2-agent").stdout.strip() == "enabled"
    kc = cp1.path("/etc/rancher/rke2/rke2.yaml")
    assert kc.stat().st_mode & 0o777 == 0o600
    assert "server: https://127.0.0.1:6443" in kc.read_text()

    # The service outlives the SSH session; a node that goes down turns NotReady ...
    w2.kill()
    deadline = time.monotonic() + 15
    while ready_nodes(cp1).get("w2") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ready_nodes(cp1)["w2"] is False
    # ... and comes back with its disk (enabled units start at boot).
    w2.start()
    assert wait_ready(cp1, want)["w2"] is True

    # Uninstall, as upstream's, leaves the node registered in the cluster ...
    ssh(w1, "rke2-uninstall.sh")
    assert "w1" in ready_nodes(cp2)
    assert not w1.path("/usr/local/bin/rke2").exists()
    assert not w1.path("/var/lib/rancher/rke2").exists()
    # ... so a fresh install under the same name (a new node password) is refused ...
    install(w1, artifacts)
    configure(w1, "agent", server=url, token="s3cret")
    assert "Node password rejected" in why_agent_waits(w1)
    # ... until the operator deletes the node from the cluster; then it joins again
    ssh(cp2, f"{KUBECTL} delete node w1")
    start(w1, "agent")
    assert wait_ready(cp2, want)["w1"] is True
    # a joined server restarts from its own datastore (no new join)
    ssh(cp2, "systemctl restart rke2-server")
    assert ssh(cp2, f"{KUBECTL} get --raw /readyz").stdout.strip() == "ok"
    assert "Starting from existing datastore" in ssh(cp2, "journalctl -u rke2-server -n 5").stdout
    ssh(cp1, "systemctl stop rke2-server")
    assert ssh(cp3, f"{KUBECTL} get nodes").returncode == 0


# ---- install.sh refusals and behaviour ---------------------------------------------
def test_install_needs_root(nodes: list[Host], artifacts: Path) -> None:
    h = nodes[0]
    upload(h, artifacts)
    ssh(h, f"chmod -R a+rX {ART}")
    p = ssh(h, f"INSTALL_RKE2_ARTIFACT_PATH={ART} sh {ART}/install.sh", user="nosudo", ok=False)
    assert p.returncode != 0 and "You need to be root" in p.stderr
    # through sudo it works
    p = ssh(h, f"sudo -n env INSTALL_RKE2_ARTIFACT_PATH={ART} sh {ART}/install.sh", user="ops")
    assert h.path("/usr/local/bin/rke2").exists()


@pytest.mark.parametrize("missing", [f"sha256sum-{ARCH}.txt", f"rke2.linux-{ARCH}.tar.gz"])
def test_install_needs_both_files(nodes: list[Host], artifacts: Path, missing: str) -> None:
    h = nodes[0]
    upload(h, artifacts)
    ssh(h, f"rm {ART}/{missing}")
    p = ssh(h, f"INSTALL_RKE2_ARTIFACT_PATH={ART} sh {ART}/install.sh", ok=False)
    assert p.returncode != 0 and missing in p.stderr
    assert not h.path("/usr/local/bin/rke2").exists()


def test_install_rejects_hash_mismatch(nodes: list[Host], artifacts: Path) -> None:
    h = nodes[0]
    upload(h, artifacts)
    ssh(h, f"printf 'x' >> {ART}/rke2.linux-{ARCH}.tar.gz")
    p = ssh(h, f"INSTALL_RKE2_ARTIFACT_PATH={ART} sh {ART}/install.sh", ok=False)
    assert p.returncode == 1 and "sha256 does not match" in p.stderr
    assert not h.path("/usr/local/bin/rke2").exists()


def test_install_layout_and_images(nodes: list[Host], artifacts: Path) -> None:
    h = nodes[0]
    out = install(h, artifacts, env="INSTALL_RKE2_TYPE=agent").stdout
    for f in ("bin/rke2", "bin/rke2-uninstall.sh", "bin/rke2-killall.sh",
              "lib/systemd/system/rke2-server.service", "lib/systemd/system/rke2-agent.service",
              "share/rke2/rke2-cis-sysctl.conf"):  # fmt: skip
        assert h.path(f"/usr/local/{f}").exists(), f
    assert "rke2 server" in h.path("/usr/local/lib/systemd/system/rke2-server.service").read_text()
    images = h.path("/var/lib/rancher/rke2/agent/images")
    assert sorted(p.name for p in images.iterdir()) == [
        f"rke2-images-multus.linux-{ARCH}.tar.zst",
        f"rke2-images.linux-{ARCH}.tar.zst",
    ]
    assert "verifying airgap tarball" in out
    # nothing started, RKE2_TYPE ignored: both units there, neither active
    assert ssh(h, "systemctl is-active rke2-server rke2-agent", ok=False).returncode == 3
    # a tampered main image tarball is refused; extra groups are copied unchecked
    ssh(h, f"rm -rf /var/lib/rancher; printf x >> {ART}/rke2-images.linux-{ARCH}.tar.zst")
    p = ssh(h, f"INSTALL_RKE2_ARTIFACT_PATH={ART} sh {ART}/install.sh", ok=False)
    assert p.returncode == 1 and "sha256 does not match" in p.stderr
    # without the main image tarball, no image is installed at all
    ssh(h, f"rm -rf /var/lib/rancher {ART}/rke2-images.linux-{ARCH}.tar.zst")
    ssh(h, f"INSTALL_RKE2_ARTIFACT_PATH={ART} sh {ART}/install.sh")
    assert not h.path("/var/lib/rancher/rke2/agent/images").exists()


# ---- service refusals --------------------------------------------------------------
def test_no_images_no_start(nodes: list[Host], artifacts: Path) -> None:
    h = nodes[0]
    install(h, artifacts)
    ssh(h, "rm -rf /var/lib/rancher/rke2/agent/images")
    configure(h, "server")
    p = start(h, "server", ok=False)
    assert p.returncode != 0 and "agent/images" in p.stderr and "air gap" in p.stderr
    assert ssh(h, "systemctl is-active rke2-server", ok=False).stdout.strip() == "failed"
    assert "no image tarballs" in ssh(h, "journalctl -u rke2-server --no-pager").stdout
    assert not h.path("/var/lib/rancher/rke2/server/node-token").exists()


def test_bootstrap_files(nodes: list[Host], artifacts: Path) -> None:
    h = nodes[0]
    token = bootstrap(h, artifacts)  # no token given: one is generated
    assert token.startswith("K10") and "::server:" in token
    assert len(token.split("::server:")[1]) >= 32
    assert ssh(h, "stat -c %a /etc/rancher/rke2/rke2.yaml").stdout.strip() == "600"
    p = ssh(h, "/var/lib/rancher/rke2/bin/kubectl get --raw /readyz", ok=False)
    assert p.returncode != 0  # no kubeconfig given, no default one
    # restart keeps the cluster (same token), and the kubeconfig credentials work
    ssh(h, "systemctl restart rke2-server")
    assert ssh(h, "cat /var/lib/rancher/rke2/server/node-token").stdout.strip() == token
    assert ready_nodes(h) == {"cp1": True}
    # a different token in config.yaml does not match the existing datastore
    ssh(h, "sed -i '$a token: other' /etc/rancher/rke2/config.yaml")
    p = ssh(h, "systemctl restart rke2-server", ok=False)
    assert p.returncode != 0 and "different token" in p.stderr


@pytest.mark.parametrize("role", ["server", "agent"])
def test_join_wrong_token(nodes: list[Host], artifacts: Path, role: str) -> None:
    cp1, other = nodes[0], nodes[1 if role == "server" else 3]
    token = bootstrap(cp1, artifacts, token="right")
    install(other, artifacts)
    url = f"https://{cp1.address}:9345"
    # a server's join fails its start; an agent retries for ever (its start never returns)
    refused = why_start_failed if role == "server" else lambda h, _: why_agent_waits(h)
    configure(other, role, server=url, token="wrong")
    assert "token mismatch" in refused(other, role)
    # a full token with another CA hash is refused too
    configure(other, role, server=url, token="K10" + "0" * 64 + "::server:right")
    assert "token CA hash does not match" in refused(other, role)
    # the right one works
    configure(other, role, server=url, token=token)
    start(other, role)
    assert wait_ready(cp1, {"cp1", other.name})[other.name]


def test_join_unreachable_server(nodes: list[Host], artifacts: Path) -> None:
    h = nodes[1]
    install(h, artifacts)
    configure(h, "server", server=f"https://{nodes[0].address}:9345", token="x")  # nothing there
    t0 = time.monotonic()
    p = start(h, "server", ok=False)
    assert p.returncode != 0 and "cannot reach server" in p.stderr
    assert 2 <= time.monotonic() - t0 < 15  # kept retrying for the bounded time


def test_one_server_join_at_a_time(nodes: list[Host], artifacts: Path) -> None:
    cp1, cp2, cp3 = nodes[:3]
    token = bootstrap(cp1, artifacts, token="t")
    url = f"https://{cp1.address}:9345"
    for h in (cp2, cp3):
        install(h, artifacts)
        configure(h, "server", server=url, token=token)
    first = subprocess.Popen(
        [*cp2.hostset.ssh_argv(cp2), "systemctl start rke2-server"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while not any(m.get("isLearner") for m in etcd_members(cp1)):  # an etcd learner
        assert time.monotonic() < deadline and first.poll() is None, "cp2 never became a learner"
        time.sleep(0.05)
    p = start(cp3, "server", ok=False)
    assert p.returncode != 0 and "too many learner members" in p.stderr
    assert first.wait(30) == 0, first.stderr.read()
    start(cp3, "server")  # once cp2 is promoted, the next join works
    assert wait_ready(cp1, {"cp1", "cp2", "cp3"}) == {"cp1": True, "cp2": True, "cp3": True}


def test_server_settings_must_match(nodes: list[Host], artifacts: Path) -> None:
    cp1, cp2 = nodes[:2]
    bootstrap(cp1, artifacts, token="t", cluster_cidr="10.50.0.0/16")
    install(cp2, artifacts)
    url = f"https://{cp1.address}:9345"
    configure(cp2, "server", server=url, token="t")  # default cluster-cidr differs
    p = start(cp2, "server", ok=False)
    assert p.returncode != 0 and "critical configuration value mismatch" in p.stderr
    assert "cluster-cidr" in p.stderr
    configure(cp2, "server", server=url, token="t", cluster_cidr="10.50.0.0/16", tls_san=["x"])
    start(cp2, "server")
    # agents do not have to repeat server settings
    install(nodes[3], artifacts)
    configure(nodes[3], "agent", server=url, token="t")
    start(nodes[3], "agent")
    assert wait_ready(cp2, {"cp1", "cp2", "w1"})["w1"]


def test_duplicate_node_name_rejected(nodes: list[Host], artifacts: Path) -> None:
    cp1, w1 = nodes[0], nodes[3]
    bootstrap(cp1, artifacts, token="t")
    install(w1, artifacts)
    configure(w1, "agent", server=f"https://{cp1.address}:9345", token="t", node_name="cp1")
    assert "Node password rejected" in why_agent_waits(w1)


def test_systemctl_standin(nodes: list[Host], artifacts: Path) -> None:
    h = nodes[0]
    p = ssh(h, "systemctl start nope", ok=False)
    assert p.returncode == 5 and "not found" in p.stderr
    assert ssh(h, "systemctl is-enabled nm-cloud-setup.service", ok=False).returncode == 1
    install(h, artifacts)
    assert ssh(h, "systemctl is-enabled rke2-server", ok=False).stdout.strip() == "disabled"
    assert ssh(h, "systemctl is-active rke2-server", ok=False).stdout.strip() == "inactive"
    configure(h, "server", token="t")
    ssh(h, "systemctl enable --now rke2-server")
    assert ssh(h, "systemctl show -p ActiveState --value rke2-server").stdout.strip() == "active"
    # v1.28's units conflict: starting the agent stops the server; the agent is
    # Type=notify, so its start fails when it exits before it is ready (no server:)
    p = ssh(h, "systemctl start rke2-agent", ok=False)
    assert p.returncode == 1 and "--server is required" in p.stderr
    assert ssh(h, "systemctl is-active rke2-server", ok=False).stdout.strip() == "inactive"
    assert ssh(h, "systemctl is-active rke2-agent", ok=False).stdout.strip() == "failed"
    ssh(h, "systemctl stop rke2-agent; systemctl disable rke2-server")
    assert ssh(h, "systemctl is-enabled rke2-server", ok=False).returncode == 1


def test_agent_start_returns_once_it_joined(nodes: list[Host], artifacts: Path) -> None:
    """rke2-agent is Type=notify with TimeoutStartSec=0: its start returns when the
    agent has joined, and waits for ever until then."""
    cp1, w1 = nodes[0], nodes[3]
    install(w1, artifacts)
    configure(w1, "agent", server=f"https://{cp1.address}:9345", token="t")  # no server yet
    ssh(w1, "systemctl enable rke2-agent && systemctl start --no-block rke2-agent")
    assert ssh(w1, "systemctl is-active rke2-agent", ok=False).stdout.strip() == "activating"
    # no time limit, whatever the caller's environment says: timeout(1) ends the wait
    p = ssh(w1, "MK8S_SYSTEMCTL_START_TIMEOUT=1 timeout 4 systemctl start rke2-agent", ok=False)
    assert p.returncode == 124, p.stdout + p.stderr
    assert ssh(w1, "systemctl is-active rke2-agent", ok=False).stdout.strip() == "activating"
    assert "Waiting to retrieve agent configuration" in ssh(w1, "journalctl -u rke2-agent").stdout
    # once a server is there, the retrying agent joins and a start waiting for it returns
    bootstrap(cp1, artifacts, token="t")
    ssh(w1, "timeout 60 systemctl start rke2-agent")
    assert ssh(w1, "systemctl is-active rke2-agent").stdout.strip() == "active"
    assert "w1" in ready_nodes(cp1)


def test_units_from_v1_33_9_refuse_to_start_next_to_the_other_role(
    nodes: list[Host], tmp_path: Path
) -> None:
    """rancher/rke2 v1.32.13, v1.33.9, v1.34.5, v1.35.2 and 1.36 on: ExecCondition=
    instead of Conflicts=; the unit is skipped (inactive, start succeeds)."""
    h = nodes[0]
    install(h, make_artifacts(tmp_path, "v1.33.9+rke2r1"))
    assert (
        "Conflicts=" not in h.path("/usr/local/lib/systemd/system/rke2-agent.service").read_text()
    )
    configure(h, "server", token="t")
    start(h, "server")
    ssh(h, "systemctl start rke2-agent")
    assert ssh(h, "systemctl is-active rke2-server").stdout.strip() == "active"
    assert ssh(h, "systemctl is-active rke2-agent", ok=False).stdout.strip() == "inactive"
    log = ssh(h, "journalctl -u rke2-agent").stdout
    assert "Error: rke2-server is running!" in log and "Skipped due to 'exec-condition'" in log


@pytest.mark.parametrize(("tag", "refused"), [(TAG, True), ("v1.33.7+rke2r1", False)])
def test_nm_cloud_setup_enabled_refuses_releases_before_its_removal(
    nodes: list[Host], tmp_path: Path, tag: str, refused: bool
) -> None:
    h = nodes[0]
    install(h, make_artifacts(tmp_path, tag))
    ssh(
        h,
        "printf '[Service]\\nExecStart=/bin/true\\n[Install]\\nWantedBy=multi-user.target\\n'"
        " > /etc/systemd/system/nm-cloud-setup.service && systemctl enable nm-cloud-setup",
    )
    configure(h, "server", token="t")
    p = start(h, "server", ok=not refused)
    log = ssh(h, "journalctl -u rke2-server").stdout
    if refused:
        assert p.returncode == 1 and "the control process exited with error code" in p.stderr
        assert "is-enabled --quiet nm-cloud-setup.service" in log
        assert "Starting rke2" not in this_start(log)  # RKE2 itself never ran
    else:
        assert ssh(h, "systemctl is-active rke2-server").stdout.strip() == "active"


def test_uninstall_and_killall_need_root(nodes: list[Host], artifacts: Path) -> None:
    h = nodes[0]
    install(h, artifacts)
    for script in ("rke2-killall.sh", "rke2-uninstall.sh"):
        p = ssh(h, f"/usr/local/bin/{script}", user="ops", ok=False)
        assert p.returncode == 1 and "must be run as root" in p.stderr, p.stderr
    assert h.path("/usr/local/bin/rke2").exists()
    ssh(h, "sudo -n /usr/local/bin/rke2-uninstall.sh", user="ops")  # the way to run it
    assert not h.path("/usr/local/bin/rke2").exists()
