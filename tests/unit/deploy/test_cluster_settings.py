"""mk8s/deploy/cluster.py, the settings blocks, pinned: spec.options (upgrade, batch
size), spec.images and its registry, spec.rke2; defaults, explicit values, exact
messages and lines, and the small rules the deploy engine relies on (batch size, image
tarballs per node, RKE2 prefixes). The file-level rules are in test_cluster.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from mk8s.deploy.cluster import (
    ImagesSettings,
    Node,
    RegistrySettings,
    RKE2Settings,
    SSHSettings,
    UpgradeOptions,
    load_cluster,
)
from mk8s.errors import ClusterFileError
from tests.support.clusters import CA_PEM, indent_spec, write_lab
from tests.support.registry import CA_FIX, pem_block


def err(tmp_path: Path, spec: str, **kw: bool) -> str:
    p = write_lab(tmp_path, spec)
    with pytest.raises(ClusterFileError) as e:
        load_cluster(p, **kw)
    assert e.value.exit_code == 2
    return str(e.value)


# -- defaults ----------------------------------------------------------------------------


def test_defaults_of_every_new_setting(tmp_path: Path) -> None:
    c = load_cluster(write_lab(tmp_path))
    assert c.images == ImagesSettings(distribution="all", registry=None)
    assert c.options.upgrade == UpgradeOptions(drain=True, drain_timeout=300, max_unavailable="10%")
    assert c.options.concurrency == 10
    assert c.options.staging_dir == "/var/lib/mk8s"
    assert c.rke2.tar_prefix is None
    assert c.rke2.registries is None
    assert c.rke2.prefixes == ("/usr/local", "/opt/rke2")
    assert c.ssh == SSHSettings(
        user="root",
        port=22,
        identity_file=None,
        known_hosts=Path("~/.ssh/known_hosts").expanduser(),
        host_key_policy="strict",
        bastion=None,
    )
    assert [n.name for n in c.nodes] == ["10.0.0.11", "w1"]
    assert [(n.index, n.line) for n in c.nodes] == [(0, 7), (1, 9)]
    assert [n.name for n in c.servers] == ["10.0.0.11"]
    assert [n.name for n in c.agents] == ["w1"]
    assert c.bootstrap.name == "10.0.0.11"


def test_explicit_upgrade_options(tmp_path: Path) -> None:
    spec = indent_spec(
        """\
        options:
          concurrency: 3
          stagingDir: /srv/mk8s
          upgrade:
            drain: false
            drainTimeout: 60
            maxUnavailable: 3
        """
    )
    c = load_cluster(write_lab(tmp_path, spec))
    assert c.options.upgrade == UpgradeOptions(drain=False, drain_timeout=60, max_unavailable="3")
    assert (c.options.concurrency, c.options.staging_dir) == (3, "/srv/mk8s")
    assert c.options.upgrade.batch_size(10) == 3


def test_upgrade_percentage_is_kept_as_written(tmp_path: Path) -> None:
    spec = indent_spec("options:\n  upgrade: {maxUnavailable: 25%}\n")
    up = load_cluster(write_lab(tmp_path, spec)).options.upgrade
    assert up == UpgradeOptions(drain=True, drain_timeout=300, max_unavailable="25%")
    assert up.batch_size(8) == 2


@pytest.mark.parametrize(
    ("value", "agents", "batch"),
    [
        ("10%", 12, 1),  # 1.2 rounds down
        ("10%", 25, 2),
        ("10%", 5, 1),  # 0.5 rounds down to 0: at least 1
        ("50%", 5, 2),
        ("100%", 7, 7),
        ("1%", 0, 1),
        ("3", 10, 3),
        ("1", 4, 1),
        ("12", 100, 12),
    ],
)
def test_batch_size(value: str, agents: int, batch: int) -> None:
    assert UpgradeOptions(max_unavailable=value).batch_size(agents) == batch


# -- spec.images -------------------------------------------------------------------------


def test_registry_mode_needs_a_registry(tmp_path: Path) -> None:
    spec = indent_spec("images:\n  distribution: registry\n")
    assert err(tmp_path, spec) == (
        f"{tmp_path}/cluster.yaml:7: spec.images.distribution: distribution: registry"
        " needs spec.images.registry; add spec.images.registry: {url: https://HOST:PORT,"
        " caFile: ..., username: ..., passwordFile: ...}"
    )


def test_servers_mode_needs_no_registry(tmp_path: Path) -> None:
    c = load_cluster(write_lab(tmp_path, indent_spec("images: {distribution: servers}\n")))
    assert c.images == ImagesSettings(distribution="servers", registry=None)


def registry_spec(tmp_path: Path, url: str) -> str:
    """spec.images for a registry with CA and credentials (lines 6-12), files made."""
    (tmp_path / "ca.pem").write_bytes(CA_PEM)
    (tmp_path / "pw").write_text("pw\n")
    return indent_spec(
        f"""\
        images:
          distribution: registry
          registry:
            url: {url}
            caFile: ca.pem
            username: robot
            passwordFile: pw
        """
    )


@pytest.mark.parametrize("port", ["0", "65536", "99999"])
def test_registry_port_outside_1_to_65535_is_refused(tmp_path: Path, port: str) -> None:
    assert err(tmp_path, registry_spec(tmp_path, f"https://reg.lan:{port}")) == (
        f"{tmp_path}/cluster.yaml:9: spec.images.registry.url: port {port} is out of range"
        " (1-65535); fix the port"
    )


@pytest.mark.parametrize("url", ["https://reg.lan:1", "https://reg.lan:65535/", "https://reg.lan"])
def test_registry_ports_1_to_65535_and_none_are_taken(tmp_path: Path, url: str) -> None:
    c = load_cluster(write_lab(tmp_path, registry_spec(tmp_path, url)))
    assert c.images.registry is not None and c.images.registry.url == url


def test_registry_settings_resolve_relative_to_the_cluster_file(tmp_path: Path) -> None:
    c = load_cluster(write_lab(tmp_path, registry_spec(tmp_path, "https://reg.lan:5000/")))
    assert c.images == ImagesSettings(
        distribution="registry",
        registry=RegistrySettings(
            url="https://reg.lan:5000/",
            ca_file=tmp_path / "ca.pem",
            username="robot",
            password_file=tmp_path / "pw",
        ),
    )
    assert c.images.registry is not None
    assert c.images.registry.host == "reg.lan:5000"


def test_registry_without_authentication_or_ca(tmp_path: Path) -> None:
    spec = indent_spec("images:\n  distribution: registry\n  registry: {url: 'https://reg.lan'}\n")
    c = load_cluster(write_lab(tmp_path, spec))
    assert c.images.registry == RegistrySettings(url="https://reg.lan")
    assert c.images.registry.host == "reg.lan"


@pytest.mark.parametrize("given", ["username: robot", "passwordFile: pw"])
def test_username_and_password_file_go_together(tmp_path: Path, given: str) -> None:
    (tmp_path / "pw").write_text("pw\n")
    spec = indent_spec(f"images:\n  registry:\n    url: https://reg.lan\n    {given}\n")
    assert err(tmp_path, spec) == (
        f"{tmp_path}/cluster.yaml:8: spec.images.registry: username and passwordFile go"
        " together; give both, or neither for a registry without authentication"
    )


@pytest.mark.parametrize(("key", "line"), [("caFile", 10), ("passwordFile", 12)])
def test_registry_files_must_exist(tmp_path: Path, key: str, line: int) -> None:
    spec = registry_spec(tmp_path, "https://reg.lan")
    (tmp_path / ("ca.pem" if key == "caFile" else "pw")).unlink()
    missing = tmp_path / ("ca.pem" if key == "caFile" else "pw")
    assert err(tmp_path, spec) == (
        f"{tmp_path}/cluster.yaml:{line}: spec.images.registry.{key}: {missing} does not"
        " exist; fix the path"
    )
    # Without check_files (dry runs of another machine's file) the path is kept as is.
    c = load_cluster(write_lab(tmp_path, spec), check_files=False)
    assert c.images.registry is not None
    assert missing in (c.images.registry.ca_file, c.images.registry.password_file)


def _ca_error(tmp_path: Path, content: bytes) -> str:
    spec = registry_spec(tmp_path, "https://reg.lan")
    (tmp_path / "ca.pem").write_bytes(content)
    return err(tmp_path, spec)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"hunter2\n", "is not a PEM certificate"),
        (b"", "is not a PEM certificate"),
        (pem_block(b"CERTIFICATE"), "is not a PEM certificate"),
        (pem_block(b"PRIVATE KEY", b"c2VjcmV0LWtleQ=="), "holds a private key"),
        (CA_PEM + pem_block(b"EC PRIVATE KEY", b"c2VjcmV0LWtleQ=="), "holds a private key"),
        (CA_PEM + b"\nPRIVATE KEY c2VjcmV0LWtleQ==\n", "holds a private key"),
        (CA_PEM + pem_block(b"X509 CRL"), "holds PEM blocks that are not certificates"),
    ],
)
def test_a_ca_file_must_be_certificates_only(tmp_path: Path, content: bytes, problem: str) -> None:
    msg = _ca_error(tmp_path, content)
    ca = tmp_path / "ca.pem"
    assert msg.startswith(
        f"{tmp_path}/cluster.yaml:10: spec.images.registry.caFile: {ca} {problem}"
    )
    assert msg.endswith(
        "; caFile must be the PEM certificate(s) of the CA that signed the registry's certificate"
    )
    assert "hunter2" not in msg and "c2VjcmV0" not in msg and "AAAA" not in msg


def test_a_ca_file_that_is_a_fifo_is_refused(tmp_path: Path) -> None:
    import os

    spec = registry_spec(tmp_path, "https://reg.lan")
    (tmp_path / "ca.pem").unlink()
    os.mkfifo(tmp_path / "ca.pem")
    assert err(tmp_path, spec) == (
        f"{tmp_path}/cluster.yaml:10: spec.images.registry.caFile: registry CA file"
        f" {tmp_path}/ca.pem is a FIFO, not a regular file; {CA_FIX}"
    )


@pytest.mark.parametrize(
    ("key", "url", "problem"),
    [
        ("url", "https://reg.lan:0", "port 0 is out of range (1-65535)"),
        ("url", "https://reg.lan:65536", "port 65536 is out of range (1-65535)"),
        ("url", "https://reg.lan:99999/", "port 99999 is out of range (1-65535)"),
        ("serverUrl", "https://k8s.lan:99999", "port 99999 is out of range (1-65535)"),
        ("serverUrl", "https://k8s.lan:123456789012", "port 12345678 is out of range (1-65535)"),
        (
            "serverUrl",
            "https://robot:s3cret@k8s.lan:9345",
            "the URL holds a user name or password (https://USER:PASSWORD@...); remove them:"
            " give the registry's credentials with username and passwordFile",
        ),
        ("serverUrl", "https://[fd00::1]:99999", "port 99999 is out of range (1-65535)"),
        ("serverUrl", "https://k8s.lan:\u0665", "port \u0665 is out of range (1-65535)"),
        ("serverUrl", "https://k8s.lan:9345:1", "port 9345:1 is out of range (1-65535)"),
    ],
)
def test_urls_need_a_real_port_and_no_userinfo(
    tmp_path: Path, key: str, url: str, problem: str
) -> None:
    if key == "url":
        spec = indent_spec(f"images:\n  distribution: registry\n  registry: {{url: '{url}'}}\n")
        where, line = "spec.images.registry.url", 8
    else:
        spec = indent_spec(f"rke2:\n  serverUrl: '{url}'\n")
        where, line = "spec.rke2.serverUrl", 7
    msg = err(tmp_path, spec)
    fix = "" if "; remove them" in problem else "; fix the port"
    assert msg == f"{tmp_path}/cluster.yaml:{line}: {where}: {problem}{fix}"
    assert "s3cret" not in msg


@pytest.mark.parametrize(("port", "past"), [("1", "0"), ("65535", "65536"), ("", "99999")])
def test_ports_in_range_are_taken_one_past_is_not(tmp_path: Path, port: str, past: str) -> None:
    def spec(url: str) -> str:
        images = f"images:\n  distribution: registry\n  registry: {{url: '{url}'}}\n"
        return indent_spec(images) + indent_spec(f"rke2: {{serverUrl: '{url}'}}\n")

    url = f"https://reg.lan:{port}" if port else "https://reg.lan"
    c = load_cluster(write_lab(tmp_path, spec(url)))
    assert c.images.registry is not None and c.images.registry.url == url
    assert c.rke2.server_url == url
    assert f"port {past} is out of range" in err(tmp_path, spec(f"https://reg.lan:{past}"))


@pytest.mark.parametrize("url", ["https://[fd00::1]", "https://[fd00::1]:9345"])
def test_an_ipv6_server_url_has_its_port_after_the_brackets(tmp_path: Path, url: str) -> None:
    c = load_cluster(
        write_lab(tmp_path, indent_spec(f"rke2: {{serverUrl: '{url}', tlsSan: [fd00::1]}}\n"))
    )
    assert c.rke2.server_url == url
    bad = "https://[fd00::1]:0"
    assert "port 0 is out" in err(tmp_path, indent_spec(f"rke2: {{serverUrl: '{bad}'}}\n"))


def test_a_registry_url_with_userinfo_never_echoes_the_password(tmp_path: Path) -> None:
    url = "https://robot:s3cret@reg.lan:5000"
    spec = indent_spec(f"images:\n  distribution: registry\n  registry: {{url: '{url}'}}\n")
    msg = err(tmp_path, spec)
    assert msg.startswith(f"{tmp_path}/cluster.yaml:8: spec.images.registry.url: 'https://***@")
    assert "s3cret" not in msg


def _node(role: str) -> Node:
    return Node(name=role, address="10.0.0.1", role=role, ssh=SSHSettings(), config={})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("distribution", "server", "agent"),
    [("all", True, True), ("servers", True, False), ("registry", False, False)],
)
def test_which_nodes_get_image_tarballs(distribution: str, server: bool, agent: bool) -> None:
    images = ImagesSettings(distribution=distribution)  # type: ignore[arg-type]
    assert images.local_tarballs(_node("server")) is server
    assert images.local_tarballs(_node("agent")) is agent


# -- spec.rke2 ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [("/opt/x", ("/opt/x",)), ("/opt/x/", ("/opt/x",)), ("/", ("/",)), ("", None)],
)
def test_tar_prefix_replaces_the_install_sh_prefixes(
    prefix: str, expected: tuple[str, ...] | None
) -> None:
    got = RKE2Settings(tar_prefix=prefix or None).prefixes
    assert got == (expected or ("/usr/local", "/opt/rke2"))


def test_rke2_settings_from_the_file(tmp_path: Path) -> None:
    (tmp_path / "tok").write_text("secret\n")
    spec = indent_spec(
        """\
        rke2:
          version: v1.28.9+rke2r1
          tlsSan: api.lan
          serverUrl: https://api.lan:9345
          token: {file: tok}
          tarPrefix: /opt/rke2
          config: {profile: cis}
          serverConfig: {write-kubeconfig-mode: "0600"}
          agentConfig: {node-label: [a=b]}
          registries: {mirrors: {}}
        """
    )
    r = load_cluster(write_lab(tmp_path, spec)).rke2
    assert (r.version, r.tls_san, r.server_url) == (
        "v1.28.9+rke2r1",
        ("api.lan",),
        "https://api.lan:9345",
    )
    assert r.token_file == tmp_path / "tok"
    assert r.prefixes == ("/opt/rke2",)
    assert dict(r.config) == {"profile": "cis"}
    assert dict(r.server_config) == {"write-kubeconfig-mode": "0600"}
    assert dict(r.agent_config) == {"node-label": ["a=b"]}
    assert r.registries is not None and dict(r.registries) == {"mirrors": {}}


# -- spec.ssh ----------------------------------------------------------------------------


def test_unknown_node_name_lists_the_known_ones(tmp_path: Path) -> None:
    c = load_cluster(write_lab(tmp_path))
    assert c.node("w1").role == "agent"
    with pytest.raises(ClusterFileError) as e:
        c.node("w2")
    assert (
        str(e.value) == f"{tmp_path}/cluster.yaml: no node is named 'w2'; use one of: 10.0.0.11, w1"
    )


def test_node_name_in_a_config_block_names_the_fix(tmp_path: Path) -> None:
    spec = indent_spec("rke2:\n  agentConfig:\n    node-name: x\n")
    assert err(tmp_path, spec) == (
        f"{tmp_path}/cluster.yaml:8: spec.rke2.agentConfig.node-name: 'node-name' is managed"
        " by mk8s; remove it; mk8s sets node-name to the node's name in spec.nodes"
    )


def test_identity_file_that_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    spec = indent_spec("ssh:\n  identityFile: keys\n")
    assert err(tmp_path, spec) == (
        f"{tmp_path}/cluster.yaml:7: spec.ssh.identityFile: {tmp_path}/keys is not a regular"
        " file; fix the path, or remove identityFile to use the ssh-agent"
    )
