"""What the RKE2 stand-in reads only at start, driven by hand on a real test host:
registries.yaml (containerd keeps the copy it loaded until RKE2 restarts), image
archives (imported while running only from the January 2025 releases on, and then a
same-size replacement is not), and the HelmCharts a server rewrites when it starts."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support import oci, standin
from tests.support.charts import make_chart
from tests.support.hosts import Host, hostset_for_tests
from tests.support.registry import registry_for_tests
from tests.support.standin_nodes import ART, KUBECTL, RESET, configure, put_file, ssh, start

pytestmark = pytest.mark.hosts

ARCH = "amd64"
BEFORE, FROM = "v1.29.12+rke2r1", "v1.29.13+rke2r1"  # the image watcher came with v1.29.13
IMAGES = f"rke2-images.linux-{ARCH}.tar.zst"
MANIFESTS = "/var/lib/rancher/rke2/server/manifests"


@pytest.fixture(scope="module")
def cp1(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    with hostset_for_tests(1, tmp_path_factory.mktemp("restart-hosts"), names=["cp1"]) as hs:
        yield hs.hosts[0]


@pytest.fixture
def node(cp1: Host) -> Host:
    cp1.run(RESET, check=True)
    return cp1


def install_at(h: Host, tag: str, d: Path) -> None:
    """install.sh of the stand-in release ``tag`` with its genuine image tarball."""
    d.mkdir(parents=True, exist_ok=True)
    tarball = standin.rke2_tarball(ARCH, tag)
    images = standin.image_tarball(IMAGES, tag=tag)
    files = {
        f"rke2.linux-{ARCH}.tar.gz": tarball,
        IMAGES: images,
        f"sha256sum-{ARCH}.txt": (
            standin.sha256sum_line(f"rke2.linux-{ARCH}.tar.gz", tarball)
            + standin.sha256sum_line(IMAGES, images)
        ).encode(),
        "install.sh": standin.install_script(tag),
    }
    for name, data in files.items():
        put_file(h, f"{ART}/{name}", data)
    ssh(h, f"INSTALL_RKE2_ARTIFACT_PATH={ART} sh {ART}/install.sh")


def imported(h: Host) -> dict[str, list[str]]:
    got = json.loads(ssh(h, "rke2 mk8s-images").stdout)
    return {f: [i["name"] for i in r.get("images", [])] for f, r in got["files"].items()}


def wait_imported(h: Host, name: str, seconds: float = 4) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if name in imported(h):
            return True
        time.sleep(0.3)
    return False


# ---- image archives ----------------------------------------------------------------------
@pytest.mark.parametrize("tag,while_running", [(BEFORE, False), (FROM, True)])
def test_archives_placed_while_running_are_imported_from_the_gate_on(
    node: Host, tmp_path: Path, tag: str, while_running: bool
) -> None:
    install_at(node, tag, tmp_path)
    configure(node, "server", token="s3cret")
    start(node, "server")
    assert set(imported(node)) == {IMAGES}
    put_file(node, "/var/lib/rancher/rke2/agent/images/acme.tar", standin.image_tarball("acme.tar"))
    assert wait_imported(node, "acme.tar") is while_running
    if while_running:
        # The watcher takes a replaced file only when its size changed too.
        same_size = standin.image_tarball("acmx.tar")
        assert len(same_size) == len(standin.image_tarball("acme.tar"))
        put_file(node, "/var/lib/rancher/rke2/agent/images/acme.tar", same_size)
        time.sleep(2)
        assert imported(node)["acme.tar"] == ["mk8s.test/fake:acme.tar"]
    ssh(node, "systemctl restart rke2-server")
    want = "mk8s.test/fake:acmx.tar" if while_running else "mk8s.test/fake:acme.tar"
    assert imported(node)["acme.tar"] == [want]


# ---- registries.yaml ---------------------------------------------------------------------
def test_registries_yaml_is_loaded_at_start_and_kept_until_a_restart(
    node: Host, tmp_path: Path
) -> None:
    with registry_for_tests(tmp_path / "reg", address=node.hostset.gateway) as reg:
        oci.push_raw(reg.session(), reg.url, "rancher/pause", "3.6", oci.build_image(seed="p"))
        install_at(node, FROM, tmp_path / "a")
        put_file(node, "/etc/rancher/rke2/reg-ca.pem", reg.ca_file.read_bytes())

        def registries(password: str) -> None:
            doc = {
                "mirrors": {"docker.io": {"endpoint": [reg.url]}},
                "configs": {
                    reg.host: {
                        "auth": {"username": reg.username, "password": password},
                        "tls": {"ca_file": "/etc/rancher/rke2/reg-ca.pem"},
                    }
                },
            }
            put_file(node, "/etc/rancher/rke2/registries.yaml", yaml.safe_dump(doc).encode())

        def pull() -> str:
            p = node.ssh("rke2 mk8s-pull docker.io/rancher/pause:3.6")
            return p.stdout + p.stderr

        assert "never started" in pull()
        registries(reg.password)
        configure(node, "server", token="s3cret")
        start(node, "server")
        assert f"pulled docker.io/rancher/pause:3.6 from {reg.url}" in pull()
        registries("not-the-password")
        assert "pulled" in pull()  # the running node still uses what it loaded
        ssh(node, "systemctl restart rke2-server")
        out = pull()
        assert "failed to pull" in out and "401" in out
        registries(reg.password)
        assert "401" in pull()
        ssh(node, "systemctl restart rke2-server")
        assert "pulled" in pull()


# ---- HelmCharts --------------------------------------------------------------------------
def helmchart(name: str, content: str, annotations: str = "") -> str:
    return (
        f"apiVersion: helm.cattle.io/v1\nkind: HelmChart\nmetadata:\n  name: {name}\n"
        f"  namespace: kube-system\n{annotations}spec:\n  targetNamespace: default\n"
        f"  chartContent: {content}\n"
    )


def test_a_server_rewrites_helmcharts_at_start(node: Host, tmp_path: Path) -> None:
    import base64

    content = base64.b64encode(make_chart(tmp_path / "hello-0.1.0.tgz").read_bytes()).decode()
    install_at(node, FROM, tmp_path / "a")
    files = {
        "chart.yaml": helmchart("hello", content),
        "off.yaml": helmchart(
            "off", content, '  annotations:\n    rke2.cattle.io/inject-cluster-config: "false"\n'
        ),
        "cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: b}\n",
    }
    for name, text in files.items():
        put_file(node, f"{MANIFESTS}/{name}", text.encode())
    inode = node.path(f"{MANIFESTS}/chart.yaml").stat().st_ino
    configure(node, "server", token="s3cret", cluster_cidr="10.88.0.0/16")
    start(node, "server")
    chart = node.path(f"{MANIFESTS}/chart.yaml")
    doc = yaml.safe_load(chart.read_text())
    assert doc["spec"]["chartContent"] == content and doc["metadata"]["name"] == "hello"
    assert doc["spec"]["set"]["global.clusterCIDR"] == "10.88.0.0/16"
    assert doc["spec"]["set"]["global.systemDefaultIngressClass"] == "ingress-nginx"
    assert "global.systemDefaultRegistry" not in doc["spec"]["set"]  # empty: left out
    assert chart.stat().st_ino == inode  # rewritten in place
    for name in ("off.yaml", "cm.yaml"):
        assert node.path(f"{MANIFESTS}/{name}").read_text() == files[name]
    got = json.loads(ssh(node, f"{KUBECTL} get --raw /mk8s/manifests").stdout)
    mine = got["servers"]["cp1"]["files"]
    assert mine["chart.yaml"]["status"] == "applied" and mine["off.yaml"]["status"] == "applied"
    # The next start finds the values in place: the file is not written again.
    before = chart.read_bytes(), chart.stat().st_mtime_ns
    ssh(node, "systemctl restart rke2-server")
    assert (chart.read_bytes(), chart.stat().st_mtime_ns) == before
