"""The stand-in holds RKE2's rules of issue #22 (part A), by hand on real test hosts:
node names, a new cluster per server without server: or datastore, the CNI's images,
the token form at bootstrap, system-default-registry on agents, moved paths, SELinux
and the CIS profile. Each rule cites its upstream file in tests/support/standin/rke2.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import standin
from tests.support.hosts import Host, HostSet, hostset_for_tests
from tests.support.standin_nodes import (
    ARCH,
    ART,
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
    why_start_failed,
)

pytestmark = pytest.mark.hosts

IMAGES = "/var/lib/rancher/rke2/agent/images"
UNDO = (
    "for m in $(awk '$2 ~ /^\\/proc\\/sys\\/|^\\/sys\\/fs$/ {print $2}' /proc/mounts); do"
    " umount $m; done; rm -rf /var/lib/rke2data /etc/rke2-admin /usr/local/bin/rpm;"
    " userdel etcd >/dev/null 2>&1; groupdel etcd >/dev/null 2>&1; true"
)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_artifacts(tmp_path_factory.mktemp("artifacts"))


@pytest.fixture(scope="module")
def groups(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The genuine core-only and cilium image tarballs (a --cni cilium bundle's)."""
    d = tmp_path_factory.mktemp("groups")
    for group in ("core", "cilium"):
        name = standin.image_name(ARCH, group)
        (d / name).write_bytes(standin.image_tarball(name, tag=TAG))
    return d


@pytest.fixture(scope="module")
def hs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostSet]:
    with hostset_for_tests(2, tmp_path_factory.mktemp("standin-contract"), names=["h1", "h2"]) as s:
        yield s


@pytest.fixture
def nodes(hs: HostSet) -> list[Host]:
    for h in hs.hosts:
        if not h.running:
            h.start()
        h.run(UNDO + "; " + RESET, check=True)
    return hs.hosts


def put_group_images(h: Host, groups: Path, which: list[str]) -> None:
    """agent/images holds exactly these image groups (core, cilium, ...)."""
    names = [standin.image_name(ARCH, g) for g in which]
    ssh(h, f"rm -rf {IMAGES} && mkdir -p {IMAGES} {ART}/groups")
    for n in names:
        h.put(groups / n, f"{ART}/groups/{n}")
        ssh(h, f"cp {ART}/groups/{n} {IMAGES}/")


def ready_condition(h: Host, name: str) -> dict[str, str]:
    out = json.loads(ssh(h, f"{KUBECTL} get nodes -o json").stdout)
    node = next(i for i in out["items"] if i["metadata"]["name"] == name)
    return next(c for c in node["status"]["conditions"] if c["type"] == "Ready")


def test_node_names_register_lower_cased_and_invalid_ones_never(
    nodes: list[Host], artifacts: Path
) -> None:
    h1, h2 = nodes
    bootstrap(h1, artifacts, token="t", node_name="CP1")
    assert ready_nodes(h1) == {"cp1": True}
    install(h2, artifacts)
    configure(h2, "agent", server=f"https://{h1.address}:9345", token="t", node_name="W_1")
    log = why_start_failed(h2, "agent")
    assert 'Invalid value: "w_1"' in log and "RFC 1123" in log
    assert set(ready_nodes(h1)) == {"cp1"}


def test_a_server_without_server_or_datastore_starts_a_new_cluster(
    nodes: list[Host], artifacts: Path
) -> None:
    h1, h2 = nodes
    bootstrap(h1, artifacts, token="t")
    bootstrap(h2, artifacts, token="t")  # no server:, no datastore: its own cluster
    ca = "/var/lib/rancher/rke2/server/tls/server-ca.crt"
    assert h1.path(ca).read_bytes() != h2.path(ca).read_bytes()
    assert ready_nodes(h2) == {"h2": True} and ready_nodes(h1) == {"h1": True}
    # Once it has a datastore, server: is ignored: it stays in its own cluster.
    configure(h2, "server", token="t", server=f"https://{h1.address}:9345")
    ssh(h2, "systemctl restart rke2-server")
    assert ready_nodes(h2) == {"h2": True}


def test_a_cni_without_its_images_never_becomes_ready(
    nodes: list[Host], artifacts: Path, groups: Path
) -> None:
    h1, h2 = nodes
    install(h1, artifacts)
    put_group_images(h1, groups, ["core", "cilium"])  # a --cni cilium bundle's images
    configure(h1, "server", token="t")  # no cni: RKE2 runs canal
    start(h1, "server")  # the server runs; its node does not get Ready
    cond = ready_condition(h1, "h1")
    assert cond["status"] == "False" and "cni plugin not initialized" in cond["message"]
    assert "CNI canal" in cond["message"]
    # An agent of that cluster (canal) with cilium's images is NotReady too.
    install(h2, artifacts)
    put_group_images(h2, groups, ["core", "cilium"])
    configure(h2, "agent", server=f"https://{h1.address}:9345", token="t")
    start(h2, "agent")
    assert wait_ready(h1, {"h2"}, timeout=3).get("h2") is False
    assert "NetworkPluginNotReady" in ready_condition(h1, "h2")["message"]
    # cni: cilium with cilium's images: Ready.
    for h in nodes:
        h.run(RESET, check=True)
    install(h1, artifacts)
    put_group_images(h1, groups, ["core", "cilium"])
    configure(h1, "server", token="t", cni="cilium")
    start(h1, "server")
    assert wait_ready(h1, {"h1"}) == {"h1": True}


def test_a_full_token_cannot_bootstrap(nodes: list[Host], artifacts: Path) -> None:
    h1 = nodes[0]
    install(h1, artifacts)
    configure(h1, "server", token="K10" + "ab" * 32 + "::server:t")
    assert "token CA hash does not match" in why_start_failed(h1, "server")
    assert not h1.path("/var/lib/rancher/rke2/server/node-token").exists()


def test_an_agent_ignores_its_own_system_default_registry(
    nodes: list[Host], artifacts: Path
) -> None:
    h1, h2 = nodes
    bootstrap(h1, artifacts, token="t")  # tarballs, no registry, no embedded mirror
    install(h2, artifacts)
    ssh(h2, f"rm -rf {IMAGES}")
    reg = f"{h2.hostset.gateway}:5999"
    configure(h2, "agent", server=f"https://{h1.address}:9345", token="t")
    ssh(h2, f"echo 'system-default-registry: {reg}' >> /etc/rancher/rke2/config.yaml")
    log = why_start_failed(h2, "agent")
    assert "no longer supported on agents" in log
    assert "embedded registry mirror is off" in log and "does not serve" not in log


def test_data_dir_and_write_kubeconfig_move_the_files(nodes: list[Host], artifacts: Path) -> None:
    h1 = nodes[0]
    install(h1, artifacts)  # install.sh put the images into the default data-dir
    moved = {"data_dir": "/var/lib/rke2data", "write_kubeconfig": "/etc/rke2-admin/admin.yaml"}
    configure(h1, "server", token="t", **moved)
    p = start(h1, "server", ok=False)
    assert p.returncode != 0 and "/var/lib/rke2data/agent/images" in p.stderr
    ssh(h1, "mkdir -p /var/lib/rke2data/agent && mv /var/lib/rancher/rke2/agent/images"
        " /var/lib/rke2data/agent/ && rm -rf /var/lib/rancher")  # fmt: skip
    ssh(h1, "systemctl reset-failed rke2-server")
    start(h1, "server")
    kubectl = "/var/lib/rke2data/bin/kubectl --kubeconfig /etc/rke2-admin/admin.yaml"
    assert json.loads(ssh(h1, f"{kubectl} get nodes -o json").stdout)["items"]
    assert h1.path("/var/lib/rke2data/server/node-token").exists()
    assert not h1.path("/var/lib/rancher/rke2").exists()
    assert not h1.path("/etc/rancher/rke2/rke2.yaml").exists()
    ssh(h1, "RKE2_DATA_DIR=/var/lib/rke2data rke2-uninstall.sh")
    assert not h1.path("/var/lib/rke2data").exists()


def test_selinux_needs_the_policy(nodes: list[Host], artifacts: Path) -> None:
    h1 = nodes[0]
    h1.run("mount -t tmpfs t /sys/fs && mkdir /sys/fs/selinux && echo 1 > /sys/fs/selinux/enforce")
    install(h1, artifacts)
    configure(h1, "server", token="t", selinux=True)
    p = start(h1, "server", ok=False)
    assert p.returncode != 0 and "rke2-selinux" in p.stderr
    h1.run(
        "printf '#!/bin/sh\\ncase \"$*\" in *rke2-selinux*) exit 0;; esac; exit 1\\n'"
        " > /usr/local/bin/rpm && chmod 0755 /usr/local/bin/rpm",
        check=True,
    )
    ssh(h1, "systemctl reset-failed rke2-server")
    start(h1, "server")
    assert ready_nodes(h1) == {"h1": True}


def test_profile_cis_needs_the_kernel_parameters_and_the_etcd_user(
    nodes: list[Host], artifacts: Path
) -> None:
    h1, h2 = nodes
    install(h1, artifacts)
    configure(h1, "server", token="t", profile="cis")
    log = why_start_failed(h1, "server")
    assert "invalid kernel parameter value kernel.panic=" in log and "expected 10" in log
    want = {"vm.panic_on_oom": 0, "vm.overcommit_memory": 1, "kernel.panic": 10}
    want["kernel.panic_on_oops"] = 1
    for h in nodes:
        for key, value in want.items():
            f = f"/run/mk8s-test-{key}"
            h.run(f"echo {value} > {f} && mount --bind {f} /proc/sys/{key.replace('.', '/')}")
    ssh(h1, "systemctl reset-failed rke2-server")
    assert "missing required: user: unknown user etcd" in why_start_failed(h1, "server")
    h1.run("useradd -r -M -U -s /sbin/nologin etcd", check=True)
    ssh(h1, "systemctl reset-failed rke2-server")
    start(h1, "server")
    # An agent needs the kernel parameters, not the etcd user.
    install(h2, artifacts)
    configure(h2, "agent", server=f"https://{h1.address}:9345", token="t", profile="cis")
    start(h2, "agent")
    assert wait_ready(h1, {"h1", "h2"}) == {"h1": True, "h2": True}
