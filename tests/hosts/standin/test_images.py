"""The stand-in's image rules without local tarballs (docs/deploy.md, images at scale),
on real test hosts:

* servers mode: an agent without image tarballs starts only when the cluster's servers
  run the embedded registry mirror (``embedded-registry: true``), its registries.yaml
  mirrors docker.io, and a peer on TCP 5001 holds the images of the agent's release;
* registry mode: a node with ``system-default-registry`` and no tarballs starts only
  when that registry (a real one, on the hosts' bridge, TLS + basic auth) serves every
  image of its release, asked with the CA and credentials of registries.yaml.

Nodes are driven directly (install.sh, config.yaml, systemctl), without mk8s."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mk8s.images.auth import Credentials
from mk8s.images.client import RegistryClient, RegistryClientSettings
from mk8s.images.push import push_archive
from tests.support import standin
from tests.support.hosts import Host, HostSet, hostset_for_tests
from tests.support.registry import TestCA, TestRegistry, registry_for_tests
from tests.support.standin import images
from tests.support.standin_nodes import (
    ARCH,
    ART,
    CA_PATH,
    IMAGES,
    IMAGES_DIR,
    KUBECTL,
    MIRROR_DOCKER_IO,
    RESET,
    TAG,
    configure,
    first_server,
    install,
    install_bare,
    journal,
    server_token,
    ssh,
    start,
    wait_ready,
    why_start_failed,
    write_artifacts,
    write_registries,
)

pytestmark = pytest.mark.hosts


OLDER_TAG = "v1.28.14+rke2r1"


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A release with its default image tarball (core + canal)."""
    return write_artifacts(tmp_path_factory.mktemp("full"), TAG, [IMAGES])


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same release without any image tarball."""
    return write_artifacts(tmp_path_factory.mktemp("bare"), TAG, [])


@pytest.fixture(scope="module")
def hs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostSet]:
    names = ["cp1", "w1", "w2"]
    with hostset_for_tests(3, tmp_path_factory.mktemp("images-hosts"), names=names) as hs:
        yield hs


@pytest.fixture
def nodes(hs: HostSet) -> Iterator[list[Host]]:
    for h in hs.hosts:
        if not h.running:
            h.start()
        h.run(RESET, check=True)
    yield hs.hosts


# ---- servers mode: the embedded registry mirror ---------------------------------------
def test_agent_without_tarballs_pulls_from_the_embedded_mirror(
    nodes: list[Host], full: Path, bare: Path
) -> None:
    cp1, w1, _ = nodes
    write_registries(cp1, MIRROR_DOCKER_IO)
    token = first_server(cp1, full, embedded_registry=True)
    assert "listening on :5001" in journal(cp1, "rke2-server")
    # the peer endpoint: HTTPS with a certificate from the cluster's server CA
    ca = ssh(cp1, "cat /var/lib/rancher/rke2/server/tls/server-ca.crt").stdout
    out = w1.ssh(
        "python3 -c 'import json,ssl,sys,urllib.request as u;"
        "c=ssl.create_default_context(cadata=sys.stdin.read());"
        f'print(u.urlopen("https://{cp1.address}:5001/v1-mk8s/images",context=c).read().decode())\'',
        input=ca,
    )
    assert out.returncode == 0, out.stderr
    assert f'"tag": "{TAG}"' in out.stdout and "rke2-runtime" in out.stdout
    assert IMAGES in out.stdout  # its tarballs, by name and sha256

    install_bare(w1, bare)
    write_registries(w1, MIRROR_DOCKER_IO)
    configure(w1, "agent", server=f"https://{cp1.address}:9345", token=token)
    start(w1, "agent")
    got = wait_ready(cp1, {"cp1", "w1"})
    assert got == {"cp1": True, "w1": True}, got
    assert f"available from the embedded registry mirror at {cp1.address}:5001" in journal(
        w1, "rke2-agent"
    )


def test_agent_refused_when_the_embedded_registry_is_off(
    nodes: list[Host], full: Path, bare: Path
) -> None:
    cp1, w1, _ = nodes
    write_registries(cp1, MIRROR_DOCKER_IO)
    token = first_server(cp1, full)  # no embedded-registry
    assert (
        cp1.ssh(
            "python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", 5001), 2)'"
        ).returncode
        != 0
    )
    install_bare(w1, bare)
    write_registries(w1, MIRROR_DOCKER_IO)
    configure(w1, "agent", server=f"https://{cp1.address}:9345", token=token)
    why = why_start_failed(w1, "agent")
    assert "no image tarballs" in why and "embedded registry mirror is off" in why, why
    assert "w1" not in ssh(cp1, f"{KUBECTL} get nodes").stdout  # refused before joining


def test_agent_refused_when_docker_io_is_not_mirrored(
    nodes: list[Host], full: Path, bare: Path
) -> None:
    cp1, w1, w2 = nodes
    write_registries(cp1, MIRROR_DOCKER_IO)
    token = first_server(cp1, full, embedded_registry=True)
    install_bare(w1, bare)  # no registries.yaml at all
    configure(w1, "agent", server=f"https://{cp1.address}:9345", token=token)
    why = why_start_failed(w1, "agent")
    assert "does not list docker.io under mirrors" in why, why
    install_bare(w2, bare)  # a registries.yaml that mirrors another registry only
    write_registries(w2, {"mirrors": {f"{cp1.hostset.gateway}:5000": {}}})
    configure(w2, "agent", server=f"https://{cp1.address}:9345", token=token)
    why = why_start_failed(w2, "agent")
    assert "does not list docker.io under mirrors" in why, why


@pytest.mark.parametrize("case", ["older-agent", "server-lacks-cni"])
def test_agent_refused_when_no_peer_holds_its_images(
    nodes: list[Host], full: Path, tmp_path: Path, case: str
) -> None:
    cp1, w1, _ = nodes
    write_registries(cp1, MIRROR_DOCKER_IO)
    if case == "older-agent":
        # the server holds v1.28.15's images; the agent runs v1.28.14
        token = first_server(cp1, full, embedded_registry=True)
        agent_art = write_artifacts(tmp_path / "older", OLDER_TAG, [])
        runtime = f"rke2-runtime:{images.image_tag(OLDER_TAG)}"
    else:
        # the server holds only the core images (a genuine tarball, so it starts): no
        # peer has the CNI's images the agent needs as well
        core = f"rke2-images-core.linux-{ARCH}.tar.zst"
        art = write_artifacts(tmp_path / "core", TAG, [core])
        install(cp1, art)
        ssh(cp1, f"mkdir -p {IMAGES_DIR} && cp {ART}/{core} {IMAGES_DIR}/")
        configure(cp1, "server", embedded_registry=True)
        start(cp1, "server")
        token = server_token(cp1)
        agent_art = write_artifacts(tmp_path / "bare", TAG, [])
        runtime = f"hardened-canal:{images.image_tag(TAG)}"
    install_bare(w1, agent_art)
    write_registries(w1, MIRROR_DOCKER_IO)
    configure(w1, "agent", server=f"https://{cp1.address}:9345", token=token)
    why = why_start_failed(w1, "agent")
    assert "no peer of the embedded registry mirror on port 5001 holds the images" in why, why
    assert f"{cp1.address}:5001: missing docker.io/rancher/{runtime}" in why, why


# ---- registry mode: system-default-registry ----------------------------------------------
@pytest.fixture(scope="module")
def registry(
    hs: HostSet, tmp_path_factory: pytest.TempPathFactory, full: Path
) -> Iterator[TestRegistry]:
    """A real registry on the hosts' bridge holding the release's images (core + canal),
    pushed by mk8s's own push from the release's image tarball."""
    with registry_for_tests(tmp_path_factory.mktemp("reg"), address=hs.gateway) as reg:
        settings = RegistryClientSettings(ca_file=reg.ca_file, use_docker_config=False)
        creds = Credentials(reg.username, reg.password)
        with RegistryClient(reg.host, settings, credentials=creds) as client:
            report = push_archive(full / IMAGES, client)
        pushed = sorted(i.source for i in report.images)
        assert len(pushed) == len(images.images_in(TAG, IMAGES)), pushed
        yield reg


def registry_node(
    h: Host,
    artifacts: Path,
    reg: TestRegistry,
    role: str,
    *,
    password: str = "",
    ca: bytes = b"",
    **cfg: object,
) -> None:
    install_bare(h, artifacts)
    p = h.ssh(
        f"mkdir -p /etc/rancher/rke2 && cat > {CA_PATH} && chmod 0644 {CA_PATH}",
        input=(ca or reg.ca.pem()).decode(),
    )
    assert p.returncode == 0, p.stderr
    write_registries(
        h,
        {
            "mirrors": {"docker.io": {"endpoint": [reg.url]}},
            "configs": {
                reg.host: {
                    "auth": {"username": reg.username, "password": password or reg.password},
                    "tls": {"ca_file": CA_PATH},
                }
            },
        },
    )
    configure(h, role, system_default_registry=reg.host, **cfg)


def test_nodes_without_tarballs_start_from_the_registry(
    nodes: list[Host], bare: Path, registry: TestRegistry
) -> None:
    cp1, w1, _ = nodes
    registry_node(cp1, bare, registry, "server")
    start(cp1, "server")
    token = server_token(cp1)
    registry_node(w1, bare, registry, "agent", server=f"https://{cp1.address}:9345", token=token)
    start(w1, "agent")
    got = wait_ready(cp1, {"cp1", "w1"})
    assert got == {"cp1": True, "w1": True}, got
    for h, unit in ((cp1, "rke2-server"), (w1, "rke2-agent")):
        assert f"served by system-default-registry {registry.host}" in journal(h, unit)
    # the registry really was asked, with credentials, for every image's manifest
    assert registry.request_count("GET", "/v2/rancher/rke2-runtime/manifests/") >= 2


def test_registry_refused_with_a_wrong_password(
    nodes: list[Host], bare: Path, registry: TestRegistry
) -> None:
    cp1 = nodes[0]
    registry_node(cp1, bare, registry, "server", password="not-the-password")
    why = why_start_failed(cp1, "server")
    assert f"system-default-registry {registry.host} does not serve" in why, why
    assert "docker.io/rancher/rke2-runtime" in why and "401" in why, why
    assert not cp1.path("/var/lib/rancher/rke2/server/node-token").exists()


def test_registry_refused_with_a_wrong_ca(
    nodes: list[Host], bare: Path, registry: TestRegistry
) -> None:
    cp1 = nodes[0]
    registry_node(cp1, bare, registry, "server", ca=TestCA.create("another CA").pem())
    why = why_start_failed(cp1, "server")
    assert f"system-default-registry {registry.host} does not serve" in why, why
    assert "failed to verify certificate" in why and CA_PATH in why, why


def test_registry_refused_when_an_image_is_missing(
    nodes: list[Host], bare: Path, registry: TestRegistry
) -> None:
    # cilium's images were never pushed (the registry holds core + canal)
    cp1 = nodes[0]
    registry_node(cp1, bare, registry, "server", cni="cilium")
    why = why_start_failed(cp1, "server")
    want = f"docker.io/rancher/hardened-cilium:{images.image_tag(TAG)}"
    assert f"does not serve {want} as {registry.host}/rancher/hardened-cilium" in why, why
    assert "404" in why, why


def test_release_images_are_what_the_upstream_archives_hold(tmp_path: Path) -> None:
    """The list the stand-in carries and the upstream's docker archives agree."""
    from mk8s.images.inspect import list_images

    for name in (IMAGES, f"rke2-images-core.linux-{ARCH}.tar.zst"):
        p = tmp_path / name
        p.write_bytes(images.image_archive(ARCH, TAG, name, 5000, "k"))
        assert p.stat().st_size == 5000
        got = [f"{i.name}:{i.tag}" for i in list_images(p)]
        assert got == images.images_in(TAG, name)
    program = standin.rke2_program(ARCH, TAG).decode()
    assert "@@RKE2_IMAGES@@" not in program
