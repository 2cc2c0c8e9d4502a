"""cluster.yaml: schema, line-numbered errors, defaults, semantic checks. No network."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from mk8s.deploy.cluster import Bastion, Cluster, load_cluster
from mk8s.errors import ClusterFileError
from mk8s.schemas import load_schema

FULL = """\
apiVersion: mk8s/v1alpha1
kind: Cluster
metadata: {name: prod}
spec:
  rke2:
    version: v1.28.15+rke2r1
    tlsSan: [k8s.internal, 10.0.0.100]
    serverUrl: https://k8s.internal:9345
    token: {file: ./token}
    config: {cni: canal}
    serverConfig: {etcd-snapshot-retention: 3}
    agentConfig: {}
    registries: {mirrors: {docker.io: {endpoint: [https://reg.internal]}}}
  ssh:
    user: root
    port: 22
    identityFile: keys/id_ed25519
    knownHosts: ~/kh
    hostKeyPolicy: strict
    bastion: {address: 10.0.0.2, user: jump, port: 2222}
  nodes:
    - {address: 10.0.0.11, name: cp1, role: server}
    - {address: 10.0.0.12, name: cp2, role: server, ssh: {bastion: null}}
    - {address: 10.0.0.21, role: agent, ssh: {user: ops, port: 2200}, config: {node-label: [gpu=true]}}
  options: {concurrency: 4, stagingDir: /srv/mk8s}
"""

MINIMAL = """\
apiVersion: mk8s/v1alpha1
kind: Cluster
metadata:
  name: lab
spec:
  nodes:
    - address: 10.0.0.11
      role: server
"""


def write(tmp_path: Path, text: str, name: str = "cluster.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def load_err(tmp_path: Path, text: str, **kw: bool) -> str:
    p = write(tmp_path, text)
    with pytest.raises(ClusterFileError) as info:
        load_cluster(p, **kw)
    assert info.value.exit_code == 2
    return str(info.value)


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "token").write_text("K10abc\n")
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "id_ed25519").write_text("key")
    return tmp_path


def test_schema_is_valid_2020_12() -> None:
    schema = load_schema("cluster.schema.json")
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_full_example(files: Path) -> None:
    c = load_cluster(write(files, FULL))
    assert isinstance(c, Cluster)
    assert c.name == "prod"
    assert c.rke2.version == "v1.28.15+rke2r1"
    assert c.rke2.tls_san == ("k8s.internal", "10.0.0.100")
    assert c.rke2.server_url == "https://k8s.internal:9345"
    assert c.rke2.token_file == files / "token"
    assert dict(c.rke2.config) == {"cni": "canal"}
    assert dict(c.rke2.server_config) == {"etcd-snapshot-retention": 3}
    assert c.rke2.registries is not None and "mirrors" in c.rke2.registries
    assert c.ssh.identity_file == files / "keys" / "id_ed25519"
    assert c.ssh.known_hosts == files / "home" / "kh"
    assert [n.name for n in c.nodes] == ["cp1", "cp2", "10.0.0.21"]
    assert [n.role for n in c.nodes] == ["server", "server", "agent"]
    assert c.bootstrap.name == "cp1"
    assert [n.name for n in c.servers] == ["cp1", "cp2"]
    assert [n.name for n in c.agents] == ["10.0.0.21"]
    cp1, cp2, agent = c.nodes
    assert cp1.ssh.bastion == Bastion("10.0.0.2", "jump", 2222)
    assert cp2.ssh.bastion is None
    assert agent.ssh.user == "ops" and agent.ssh.port == 2200
    assert agent.ssh.bastion == Bastion("10.0.0.2", "jump", 2222)
    assert agent.ssh.identity_file == files / "keys" / "id_ed25519"
    assert dict(agent.config) == {"node-label": ["gpu=true"]}
    assert (cp1.line, cp2.line, agent.line) == (22, 23, 24)
    assert c.options.concurrency == 4 and c.options.staging_dir == "/srv/mk8s"
    assert c.node("cp2") is cp2
    with pytest.raises(ClusterFileError, match="no node is named 'cp9'.*cp1, cp2, 10.0.0.21"):
        c.node("cp9")


def test_defaults(files: Path) -> None:
    c = load_cluster(write(files, MINIMAL))
    n = c.nodes[0]
    assert n.name == "10.0.0.11"  # the address as written
    assert n.ssh.user == "root" and n.ssh.port == 22
    assert n.ssh.identity_file is None
    assert n.ssh.known_hosts == files / "home" / ".ssh" / "known_hosts"
    assert n.ssh.host_key_policy == "strict"
    assert n.ssh.bastion is None
    assert c.options.concurrency == 10 and c.options.staging_dir == "/var/lib/mk8s"
    assert c.rke2.version is None and c.rke2.token_file is None
    assert c.rke2.registries is None


def test_bastion_user_defaults_to_node_user(files: Path) -> None:
    text = MINIMAL.replace(
        "spec:\n", "spec:\n  ssh: {user: ops, bastion: {address: jump.internal}}\n"
    )
    n = load_cluster(write(files, text)).nodes[0]
    assert n.ssh.bastion == Bastion("jump.internal", "ops", 22)


def test_mappings_are_read_only(files: Path) -> None:
    c = load_cluster(write(files, FULL))
    with pytest.raises(TypeError):
        c.rke2.config["cni"] = "x"  # type: ignore[index]


def test_enum_error_names_line_and_field(tmp_path: Path) -> None:
    msg = load_err(tmp_path, MINIMAL.replace("role: server", "role: master"))
    assert (
        msg
        == f"{tmp_path}/cluster.yaml:8: spec.nodes[0].role: 'master' is not one of ['server', 'agent']"
    )


def test_ignore_host_key_policy_refused(tmp_path: Path) -> None:
    text = MINIMAL.replace("spec:\n", "spec:\n  ssh:\n    hostKeyPolicy: ignore\n")
    msg = load_err(tmp_path, text)
    assert msg.endswith(
        ":7: spec.ssh.hostKeyPolicy: 'ignore' is not one of ['strict', 'accept-new']"
    )


def test_many_errors_sorted_by_line_with_count(tmp_path: Path) -> None:
    text = """\
    apiVersion: mk8s/v1alpha1
    kind: Cluster
    metadata: {name: Prod_1}
    spec:
      ssh: {port: 0}
      nodes:
        - {address: 10.0.0.11, role: server}
        - address: 10.0.0.12
          role: master
          sshh: {}
        - {role: agent}
      options: {concurrency: 0}
    """
    msg = load_err(tmp_path, text)
    lines = msg.splitlines()
    assert lines[0] == f"{tmp_path}/cluster.yaml: 6 errors against the schema"
    f = f"{tmp_path}/cluster.yaml"
    assert lines[1:] == [
        f"{f}:3: metadata.name: 'Prod_1' does not match '^[a-z0-9]([-a-z0-9]{{0,61}}[a-z0-9])?$'",
        f"{f}:5: spec.ssh.port: 0 is less than the minimum of 1",
        f"{f}:9: spec.nodes[1].role: 'master' is not one of ['server', 'agent']",
        f"{f}:10: spec.nodes[1].sshh: unknown field (allowed here: address, config, name, role, ssh)",
        f"{f}:11: spec.nodes[2]: 'address' is a required property",
        f"{f}:12: spec.options.concurrency: 0 is less than the minimum of 1",
    ]


def test_error_list_is_capped(tmp_path: Path) -> None:
    nodes = "".join(f"    - {{address: 10.0.0.{i}, role: boss}}\n" for i in range(12))
    msg = load_err(tmp_path, MINIMAL.split("  nodes:")[0] + "  nodes:\n" + nodes)
    assert msg.splitlines()[0].endswith("12 errors against the schema")
    assert msg.splitlines()[-1] == "... and 4 more"


def test_bastion_null_or_object(tmp_path: Path) -> None:
    text = MINIMAL.replace("role: server", "role: server\n      ssh: {bastion: {port: 2}}")
    msg = load_err(tmp_path, text)
    assert msg.endswith(":9: spec.nodes[0].ssh.bastion: 'address' is a required property")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ClusterFileError, match="nope.yaml: no such file; pass the cluster file"):
        load_cluster(tmp_path / "nope.yaml")


def test_empty_file(tmp_path: Path) -> None:
    assert "the file is empty" in load_err(tmp_path, "# nothing\n")


def test_not_yaml(tmp_path: Path) -> None:
    msg = load_err(tmp_path, "apiVersion: mk8s/v1alpha1\nspec: [unclosed\n")
    assert "cluster.yaml:3: not valid YAML" in msg


def test_not_a_mapping(tmp_path: Path) -> None:
    assert "expected a mapping" in load_err(tmp_path, "- a\n- b\n")


def test_wrong_api_version_and_kind(tmp_path: Path) -> None:
    msg = load_err(tmp_path, MINIMAL.replace("mk8s/v1alpha1", "mk8s/v2"))
    assert msg.endswith(
        "cluster.yaml:1: apiVersion: 'mk8s/v2' is not supported; set apiVersion: mk8s/v1alpha1"
    )
    msg = load_err(tmp_path, MINIMAL.replace("kind: Cluster", "kind: Deployment"))
    assert "cluster.yaml:2: kind: 'Deployment' is not 'Cluster'; set kind: Cluster" in msg


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    msg = load_err(
        tmp_path, MINIMAL.replace("      role: server", "      role: server\n      role: agent")
    )
    assert msg.endswith(
        ":9: spec.nodes[0].role: key appears twice (first on line 8); keep one of them"
    )


def test_no_server(tmp_path: Path) -> None:
    msg = load_err(tmp_path, MINIMAL.replace("role: server", "role: agent"))
    assert msg.endswith(
        "cluster.yaml:6: spec.nodes: no node has role: server;"
        " make at least one node a server (the first server listed bootstraps the cluster)"
    )


def test_duplicate_names(tmp_path: Path) -> None:
    text = MINIMAL + "    - {address: 10.0.0.12, name: 10.0.0.11, role: agent}\n"
    msg = load_err(tmp_path, text)
    assert msg.endswith(
        "cluster.yaml:9: spec.nodes[1].name: node name '10.0.0.11' is already used by"
        " spec.nodes[0]; give each node a unique name"
    )


def test_duplicate_default_name(tmp_path: Path) -> None:
    text = (
        MINIMAL.replace("      role: server", "      role: server\n      name: 10.0.0.12")
        + "    - {address: 10.0.0.12, role: agent}\n"
    )
    msg = load_err(tmp_path, text)
    assert "spec.nodes[1].address: node name '10.0.0.12' is already used by spec.nodes[0]" in msg
    assert "defaults to its address" in msg


def test_duplicate_address(tmp_path: Path) -> None:
    text = MINIMAL + "    - {address: 10.0.0.11, name: other, role: agent}\n"
    msg = load_err(tmp_path, text)
    assert msg.endswith(
        "cluster.yaml:9: spec.nodes[1].address: address '10.0.0.11' is already used by"
        " spec.nodes[0]; list each machine once"
    )


def test_managed_config_key_refused(tmp_path: Path) -> None:
    text = MINIMAL.replace("spec:\n", "spec:\n  rke2:\n    config:\n      token: abc\n")
    msg = load_err(tmp_path, text)
    assert ":8: spec.rke2.config.token: 'token' is managed by mk8s" in msg
    assert "spec.rke2.token.file" in msg
    node = MINIMAL.replace("role: server", "role: server\n      config: {server: https://x:9345}")
    assert "spec.nodes[0].config.server: 'server' is managed by mk8s" in load_err(tmp_path, node)


def test_missing_token_and_identity_files(tmp_path: Path) -> None:
    text = MINIMAL.replace("spec:\n", "spec:\n  rke2: {token: {file: tok}}\n")
    msg = load_err(tmp_path, text)
    assert f":6: spec.rke2.token.file: {tmp_path}/tok does not exist" in msg
    assert (
        load_cluster(write(tmp_path, text), check_files=False).rke2.token_file == tmp_path / "tok"
    )
    text = MINIMAL.replace("role: server", "role: server\n      ssh: {identityFile: /no/key}")
    msg = load_err(tmp_path, text)
    assert ":9: spec.nodes[0].ssh.identityFile: /no/key does not exist" in msg
    assert "remove identityFile to use the ssh-agent" in msg


def test_relative_paths_resolve_against_file_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sub = tmp_path / "conf"
    sub.mkdir()
    (sub / "tok").write_text("t")
    text = MINIMAL.replace(
        "spec:\n", "spec:\n  rke2: {token: {file: tok}}\n  ssh: {knownHosts: kh}\n"
    )
    p = write(sub, text)
    monkeypatch.chdir(tmp_path)
    c = load_cluster(Path("conf/cluster.yaml"))
    assert c.rke2.token_file == sub / "tok"
    assert c.nodes[0].ssh.known_hosts == sub / "kh"
    assert c.path == Path("conf/cluster.yaml")
    assert p.exists()
