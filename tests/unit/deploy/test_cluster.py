"""cluster.yaml: schema, line-numbered errors, defaults, semantic checks. No network."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
import yaml

from mk8s.deploy.builders import plan
from mk8s.deploy.cluster import Bastion, Cluster, load_cluster
from mk8s.deploy.command import Secret
from mk8s.errors import ClusterFileError
from mk8s.schemas import load_schema
from tests.support import bundles
from tests.support.clusters import (
    cluster_text,
    contract_cluster,
    fresh_node,
    member_context,
    write_cluster,
)
from tests.support.hostile import VALID_CLUSTER, field_variants

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


# -- pinned: exact messages and lines, the identity file, managed keys -------------------
def test_missing_cluster_level_identity_file(tmp_path: Path) -> None:
    text = MINIMAL.replace("spec:\n", "spec:\n  ssh:\n    identityFile: /no/such/key\n")
    assert load_err(tmp_path, text) == (
        f"{tmp_path}/cluster.yaml:7: spec.ssh.identityFile: /no/such/key does not exist; "
        "fix the path, or remove identityFile to use the ssh-agent"
    )
    c = load_cluster(write(tmp_path, text), check_files=False)
    assert c.ssh.identity_file == Path("/no/such/key")
    assert c.nodes[0].ssh.identity_file == Path("/no/such/key")


def test_node_identity_file_is_not_checked_without_check_files(tmp_path: Path) -> None:
    text = MINIMAL.replace("role: server", "role: server\n      ssh: {identityFile: /no/key}")
    c = load_cluster(write(tmp_path, text), check_files=False)
    assert c.nodes[0].ssh.identity_file == Path("/no/key")


def test_token_file_error_names_the_key_line(tmp_path: Path) -> None:
    text = MINIMAL.replace("spec:\n", "spec:\n  rke2:\n    token:\n      file:\n        tok\n")
    assert load_err(tmp_path, text) == (
        f"{tmp_path}/cluster.yaml:9: spec.rke2.token.file: {tmp_path}/tok does not exist; "
        "create it, or remove spec.rke2.token to let mk8s generate a token"
    )


@pytest.mark.parametrize("block", ["config", "serverConfig", "agentConfig"])
def test_managed_keys_in_every_config_block(tmp_path: Path, block: str) -> None:
    text = MINIMAL.replace(
        "spec:\n", f"spec:\n  rke2:\n    {block}:\n      server:\n        x: 1\n"
    )
    assert load_err(tmp_path, text) == (
        f"{tmp_path}/cluster.yaml:8: spec.rke2.{block}.server: 'server' is managed by mk8s; "
        "remove it; set spec.rke2.serverUrl for a fixed registration address"
    )
    text = MINIMAL.replace("spec:\n", f"spec:\n  rke2:\n    {block}:\n      agent-token: x\n")
    assert load_err(tmp_path, text) == (
        f"{tmp_path}/cluster.yaml:8: spec.rke2.{block}.agent-token: 'agent-token' is managed "
        "by mk8s; remove it; set spec.rke2.token.file to choose the token"
    )


def test_settings_reach_the_model(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        "spec:\n",
        "spec:\n  rke2:\n    agentConfig: {node-taint: [a]}\n"
        "  ssh: {hostKeyPolicy: accept-new, knownHosts: /kh}\n",
    ).replace("role: server", "role: server\n    - {address: 10.0.0.12, role: agent}")
    c = load_cluster(write(tmp_path, text))
    assert dict(c.rke2.agent_config) == {"node-taint": ["a"]}
    assert c.ssh.host_key_policy == "accept-new"
    assert [n.ssh.host_key_policy for n in c.nodes] == ["accept-new", "accept-new"]
    assert [n.index for n in c.nodes] == [0, 1]
    assert [n.role for n in c.nodes] == ["server", "agent"]
    assert c.nodes[0].ssh.known_hosts == Path("/kh")


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ClusterFileError) as e:
        load_cluster(tmp_path / "none.yaml")
    assert str(e.value) == f"{tmp_path}/none.yaml: no such file; pass the cluster file with -f PATH"
    with pytest.raises(ClusterFileError) as e:
        load_cluster(tmp_path)
    assert str(e.value) == (
        f"cluster file {tmp_path} is a directory, not a regular file;"
        " pass the cluster file with -f PATH"
    )
    (tmp_path / "empty.yaml").write_text("# nothing\n")
    with pytest.raises(ClusterFileError) as e:
        load_cluster(tmp_path / "empty.yaml")
    assert str(e.value) == (
        f"{tmp_path}/empty.yaml: the file is empty; see the README (Deploying) and schemas/cluster.schema.json for the format"
    )


def test_yaml_errors(tmp_path: Path) -> None:
    assert load_err(tmp_path, "a: [b\n") == (
        f"{tmp_path}/cluster.yaml:2: not valid YAML: expected ',' or ']', but got "
        "'<stream end>'; fix the YAML syntax"
    )
    assert load_err(tmp_path, "# a list\n- a\n") == (
        f"{tmp_path}/cluster.yaml:2: expected a mapping with apiVersion, kind, metadata and "
        "spec, found list; see the README (Deploying) and schemas/cluster.schema.json for the format"
    )


def test_control_character_is_a_yaml_error(tmp_path: Path) -> None:
    msg = load_err(tmp_path, "a: b\x01\n")
    assert msg.startswith(f"{tmp_path}/cluster.yaml: not valid YAML: unacceptable character")
    assert msg.endswith("; fix the YAML syntax")


def test_duplicate_keys_deep_down(tmp_path: Path) -> None:
    text = MINIMAL + "      ssh:\n        port: 22\n        port: 23\n"
    assert load_err(tmp_path, text) == (
        f"{tmp_path}/cluster.yaml:11: spec.nodes[0].ssh.port: key appears twice "
        "(first on line 10); keep one of them"
    )


def test_api_version_lines(tmp_path: Path) -> None:
    text = "kind: Cluster\napiVersion: v2\n"
    assert load_err(tmp_path, text) == (
        f"{tmp_path}/cluster.yaml:2: apiVersion: 'v2' is not supported; "
        "set apiVersion: mk8s/v1alpha1"
    )
    assert load_err(tmp_path, "# c\nkind: Cluster\n") == (
        f"{tmp_path}/cluster.yaml:2: apiVersion: None is not supported; "
        "set apiVersion: mk8s/v1alpha1"
    )


def test_required_field_next_to_an_unknown_one(tmp_path: Path) -> None:
    text = MINIMAL.replace("      role: server", "      color:\n        blue")
    assert load_err(tmp_path, text) == (
        f"{tmp_path}/cluster.yaml: 2 errors against the schema\n"
        f"{tmp_path}/cluster.yaml:7: spec.nodes[0]: 'role' is a required property\n"
        f"{tmp_path}/cluster.yaml:8: spec.nodes[0].color: unknown field (allowed here: "
        "address, config, name, role, ssh)"
    )


def test_root_level_error_line(tmp_path: Path) -> None:
    text = "# a comment\n\napiVersion: mk8s/v1alpha1\nkind: Cluster\nmetadata: {name: x}\n"
    assert load_err(tmp_path, text) == (
        f"{tmp_path}/cluster.yaml:3: (top level): 'spec' is a required property"
    )


def test_bastion_error_does_not_hide_later_errors(tmp_path: Path) -> None:
    text = MINIMAL.replace("spec:\n", "spec:\n  ssh:\n    bastion: {user: x}\n").replace(
        "role: server", "role: boss"
    )
    msg = load_err(tmp_path, text)
    assert msg.startswith(f"{tmp_path}/cluster.yaml: 2 errors against the schema\n")
    assert "spec.ssh.bastion: 'address' is a required property" in msg
    assert "spec.nodes[0].role: 'boss' is not one of ['server', 'agent']" in msg


def test_errors_on_one_line_keep_the_schema_order(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        "    - address: 10.0.0.11\n      role: server\n",
        "    - {address: 10.0.0.11, role: boss, config: 5, ssh: 3, name: 7}\n",
    )
    f = f"{tmp_path}/cluster.yaml"
    assert load_err(tmp_path, text) == (
        f"{f}: 4 errors against the schema\n"
        f"{f}:7: spec.nodes[0].name: 7 is not of type 'string'\n"
        f"{f}:7: spec.nodes[0].role: 'boss' is not one of ['server', 'agent']\n"
        f"{f}:7: spec.nodes[0].ssh: 3 is not of type 'object'\n"
        f"{f}:7: spec.nodes[0].config: 5 is not of type 'object'"
    )


def test_value_errors_point_at_the_value_line(tmp_path: Path) -> None:
    text = MINIMAL.replace("      role: server", "      role:\n        boss")
    assert load_err(tmp_path, text) == (
        f"{tmp_path}/cluster.yaml:9: spec.nodes[0].role: 'boss' is not one of ['server', 'agent']"
    )


def test_a_bastion_error_then_more_errors(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        "      role: server", "      role: server\n      ssh: {bastion: {user: x}}"
    ) + ("    - {address: 10.0.0.12, role: boss}\n")
    f = f"{tmp_path}/cluster.yaml"
    assert load_err(tmp_path, text) == (
        f"{f}: 2 errors against the schema\n"
        f"{f}:9: spec.nodes[0].ssh.bastion: 'address' is a required property\n"
        f"{f}:10: spec.nodes[1].role: 'boss' is not one of ['server', 'agent']"
    )


def test_duplicate_default_name_exact(tmp_path: Path) -> None:
    text = (
        MINIMAL.replace("      role: server", "      role: server\n      name: 10.0.0.12")
        + "    - {address: 10.0.0.12, role: agent}\n"
    )
    assert load_err(tmp_path, text) == (
        f"{tmp_path}/cluster.yaml:10: spec.nodes[1].address: node name '10.0.0.12' is already "
        "used by spec.nodes[0] (a node's name defaults to its address); give each node a "
        "unique name"
    )


# -- hostile values: staging dirs, names, addresses, paths -------------------------------
# ------------------------------------------------------------------- cluster.yaml
@pytest.mark.parametrize(
    "staging",
    [
        "/var/lib/$(touch /tmp/x)",
        "/var/lib/`id`",
        "/var/lib/a b",
        "/var/lib/../etc",
        "/var/lib/x;rm",
        "relative/dir",
        '"/var/lib/mk8s\\n"',
        "/" + "a" * 300,
    ],
)
def test_hostile_staging_dir_is_refused(tmp_path: Path, staging: str) -> None:
    p = write_cluster(tmp_path, cluster_text(options=f"  options: {{stagingDir: {staging!s}}}\n"))
    with pytest.raises(ClusterFileError, match="stagingDir|not valid YAML"):
        load_cluster(p, check_files=False)


def test_plain_staging_dirs_are_accepted(tmp_path: Path) -> None:
    for ok in ("/var/lib/mk8s", "/srv/mk8s-stage_2/", "/opt/a.b"):
        p = write_cluster(tmp_path, cluster_text(options=f"  options: {{stagingDir: {ok}}}\n"))
        assert load_cluster(p, check_files=False).options.staging_dir == ok


@pytest.mark.parametrize(
    "nodes,match",
    [
        (
            '    - {address: 10.0.0.1, name: "cp1\\n", role: server}\n',
            "does not match",
        ),
        (
            "    - {address: 10.0.0.1, name: cp1, role: server}\n"
            "    - {address: 10.0.0.2, name: CP1, role: agent}\n",
            "already used",
        ),
        (
            "    - {address: Node.Example, role: server}\n"
            "    - {address: node.example, name: b, role: agent}\n",
            "already used",
        ),
        (
            '    - {address: "10.0.0.1\\n", role: server}\n',
            "does not match",
        ),
        (
            '    - {address: "$(id)", role: server}\n',
            "does not match",
        ),
    ],
)
def test_names_and_addresses_are_whole_and_case_insensitive(
    tmp_path: Path, nodes: str, match: str
) -> None:
    with pytest.raises(ClusterFileError, match=match):
        load_cluster(write_cluster(tmp_path, cluster_text(nodes=nodes)), check_files=False)


def test_node_name_in_config_is_managed(tmp_path: Path) -> None:
    body = cluster_text(rke2="  rke2:\n    config: {node-name: other}\n")
    with pytest.raises(ClusterFileError, match="'node-name' is managed by mk8s"):
        load_cluster(write_cluster(tmp_path, body), check_files=False)


def test_identity_file_that_is_not_a_file(tmp_path: Path) -> None:
    fifo = tmp_path / "id_fifo"
    os.mkfifo(fifo)
    body = cluster_text(rke2="").replace("spec:\n", f"spec:\n  ssh: {{identityFile: {fifo}}}\n")
    with pytest.raises(ClusterFileError, match="not a regular file"):
        load_cluster(write_cluster(tmp_path, body))


@pytest.mark.parametrize(
    "ssh",
    ['{identityFile: "a\\0b"}', '{knownHosts: "kh\\nx"}', '{identityFile: "\\x1b[2J"}'],
)
def test_paths_with_control_characters_are_refused(tmp_path: Path, ssh: str) -> None:
    body = cluster_text().replace("spec:\n", f"spec:\n  ssh: {ssh}\n")
    with pytest.raises(ClusterFileError, match="does not match"):
        load_cluster(write_cluster(tmp_path, body))


def test_token_path_with_nul_is_refused(tmp_path: Path) -> None:
    body = cluster_text(rke2='  rke2:\n    token: {file: "t\\0"}\n')
    with pytest.raises(ClusterFileError, match="does not match"):
        load_cluster(write_cluster(tmp_path, body))


# -- a generated hostile corpus: every field of a valid cluster file, replaced -----------


@pytest.mark.slow
def test_every_hostile_cluster_variant_loads_or_is_an_input_error(tmp_path: Path) -> None:
    files = bundles.default_files(tmp_path / "f")
    manifest = bundles.lock_for(files, bundles.KINDS).as_manifest()
    p = tmp_path / "cluster.yaml"
    loaded = refused = 0
    for label, variant in field_variants(VALID_CLUSTER):
        try:
            text = yaml.safe_dump(variant, allow_unicode=True)
        except yaml.YAMLError:
            continue
        p.write_text(text)
        try:
            cluster = load_cluster(p, check_files=False)
        except ClusterFileError as e:
            refused += 1
            assert str(e), label
            continue
        loaded += 1
        ctx = plan.Context(cluster, manifest, "0123456789abcdef", Secret("t"))
        for node in cluster.nodes:
            plan.config_bytes(ctx, node)
            plan.install_step(ctx, node, fresh_node())
            plan.upload_step(ctx, node, fresh_node())
            plan.start_step(ctx, node, fresh_node(), installed_now=True)
        plan.registries_bytes(ctx)
        plan.api_host(cluster)
        plan.server_url(cluster)
    assert loaded > 50 and refused > 200, (loaded, refused)


# -- RKE2's rules at load: node names, system-default-registry, path options -------------
# -- node names: lower-cased as RKE2 registers them, RFC 1123 or refused --------------
def test_upper_case_names_register_lower_cased(tmp_path: Path) -> None:
    nodes = (
        "    - {address: 10.0.0.11, name: CP1, role: server}\n"
        "    - {address: Worker-7.Example, role: agent}\n"
    )
    c = contract_cluster(tmp_path, nodes=nodes)
    assert [n.name for n in c.nodes] == ["cp1", "worker-7.example"]
    assert c.node("CP1").name == "cp1"
    assert any("'CP1' registers as 'cp1'" in n for n in c.notes)
    assert plan.node_config(member_context(c), c.node("cp1"))["node-name"] == "cp1"
    # The readiness wait looks for the name that registers.
    assert plan.wait_step(c.node("cp1"), 5, paths=c.paths(c.node("cp1"))).actions[0].node == "cp1"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("node", "fix"),
    [
        ("{address: 10.0.0.11, name: cp_1, role: server}", "e.g. cp-1"),
        ("{address: 10.0.0.11, name: web..1, role: server}", "e.g. web.1"),
        ("{address: 'fd00::1', role: server}", "give it a name"),
    ],
)
def test_names_kubernetes_refuses_are_refused_at_load(tmp_path: Path, node: str, fix: str) -> None:
    with pytest.raises(ClusterFileError) as e:
        contract_cluster(tmp_path, nodes=f"    - {node}\n")
    assert e.value.exit_code == 2
    assert "spec.nodes[0]" in str(e.value) and "RFC 1123" in str(e.value)
    assert fix in str(e.value)


@pytest.mark.parametrize(
    ("rke2", "nodes"),
    [
        ("    agentConfig: {system-default-registry: reg.lan}\n", ""),
        (
            "",
            "    - {address: 10.0.0.11, name: cp1, role: server}\n"
            "    - {address: 10.0.0.21, name: w1, role: agent, config: {system-default-registry: r}}\n",
        ),
    ],
)
def test_system_default_registry_in_an_agent_block_is_refused(
    tmp_path: Path, rke2: str, nodes: str
) -> None:
    with pytest.raises(ClusterFileError, match="system-default-registry is a server option") as e:
        contract_cluster(tmp_path, rke2=rke2, nodes=nodes)
    assert "serverConfig" in str(e.value) and e.value.exit_code == 2


@pytest.mark.parametrize(
    "value", ["relative/dir", "/a b", "/data/../etc", "/", "[/a]", "/tmp/$(reboot)"]
)
def test_a_path_option_mk8s_cannot_use_is_refused(tmp_path: Path, value: str) -> None:
    with pytest.raises(ClusterFileError, match="data-dir must be an absolute path") as e:
        contract_cluster(
            tmp_path, rke2=f"    config: {{data-dir: {yaml.safe_dump(value).split(chr(10))[0]}}}\n"
        )
    assert e.value.exit_code == 2
