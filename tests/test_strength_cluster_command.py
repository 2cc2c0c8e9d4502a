"""cluster.yaml and command values, pinned: exact messages and lines, the cluster-level
identity file, managed keys in every config block, overlapping secrets, conversions."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path
from types import MappingProxyType

import pytest

from mk8s.deploy.cluster import load_cluster
from mk8s.deploy.command import Command, Secret, as_user, write_file
from mk8s.deploy.fileupload import FileUpload
from mk8s.errors import ClusterFileError

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


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "cluster.yaml"
    p.write_text(textwrap.dedent(text))
    return p


def err(tmp_path: Path, text: str, **kw: bool) -> str:
    p = write(tmp_path, text)
    with pytest.raises(ClusterFileError) as e:
        load_cluster(p, **kw)
    assert e.value.exit_code == 2
    return str(e.value)


# -- cluster.yaml ----------------------------------------------------------------------------


def test_missing_cluster_level_identity_file(tmp_path: Path) -> None:
    text = MINIMAL.replace("spec:\n", "spec:\n  ssh:\n    identityFile: /no/such/key\n")
    assert err(tmp_path, text) == (
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
    assert err(tmp_path, text) == (
        f"{tmp_path}/cluster.yaml:9: spec.rke2.token.file: {tmp_path}/tok does not exist; "
        "create it, or remove spec.rke2.token to let mk8s generate a token"
    )


@pytest.mark.parametrize("block", ["config", "serverConfig", "agentConfig"])
def test_managed_keys_in_every_config_block(tmp_path: Path, block: str) -> None:
    text = MINIMAL.replace(
        "spec:\n", f"spec:\n  rke2:\n    {block}:\n      server:\n        x: 1\n"
    )
    assert err(tmp_path, text) == (
        f"{tmp_path}/cluster.yaml:8: spec.rke2.{block}.server: 'server' is managed by mk8s; "
        "remove it; set spec.rke2.serverUrl for a fixed registration address"
    )
    text = MINIMAL.replace("spec:\n", f"spec:\n  rke2:\n    {block}:\n      agent-token: x\n")
    assert err(tmp_path, text) == (
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
    assert err(tmp_path, "a: [b\n") == (
        f"{tmp_path}/cluster.yaml:2: not valid YAML: expected ',' or ']', but got "
        "'<stream end>'; fix the YAML syntax"
    )
    assert err(tmp_path, "# a list\n- a\n") == (
        f"{tmp_path}/cluster.yaml:2: expected a mapping with apiVersion, kind, metadata and "
        "spec, found list; see the README (Deploying) and schemas/cluster.schema.json for the format"
    )


def test_control_character_is_a_yaml_error(tmp_path: Path) -> None:
    msg = err(tmp_path, "a: b\x01\n")
    assert msg.startswith(f"{tmp_path}/cluster.yaml: not valid YAML: unacceptable character")
    assert msg.endswith("; fix the YAML syntax")


def test_duplicate_keys_deep_down(tmp_path: Path) -> None:
    text = MINIMAL + "      ssh:\n        port: 22\n        port: 23\n"
    assert err(tmp_path, text) == (
        f"{tmp_path}/cluster.yaml:11: spec.nodes[0].ssh.port: key appears twice "
        "(first on line 10); keep one of them"
    )


def test_api_version_lines(tmp_path: Path) -> None:
    text = "kind: Cluster\napiVersion: v2\n"
    assert err(tmp_path, text) == (
        f"{tmp_path}/cluster.yaml:2: apiVersion: 'v2' is not supported; "
        "set apiVersion: mk8s/v1alpha1"
    )
    assert err(tmp_path, "# c\nkind: Cluster\n") == (
        f"{tmp_path}/cluster.yaml:2: apiVersion: None is not supported; "
        "set apiVersion: mk8s/v1alpha1"
    )


def test_required_field_next_to_an_unknown_one(tmp_path: Path) -> None:
    text = MINIMAL.replace("      role: server", "      color:\n        blue")
    assert err(tmp_path, text) == (
        f"{tmp_path}/cluster.yaml: 2 errors against the schema\n"
        f"{tmp_path}/cluster.yaml:7: spec.nodes[0]: 'role' is a required property\n"
        f"{tmp_path}/cluster.yaml:8: spec.nodes[0].color: unknown field (allowed here: "
        "address, config, name, role, ssh)"
    )


def test_root_level_error_line(tmp_path: Path) -> None:
    text = "# a comment\n\napiVersion: mk8s/v1alpha1\nkind: Cluster\nmetadata: {name: x}\n"
    assert err(tmp_path, text) == (
        f"{tmp_path}/cluster.yaml:3: (top level): 'spec' is a required property"
    )


def test_bastion_error_does_not_hide_later_errors(tmp_path: Path) -> None:
    text = MINIMAL.replace("spec:\n", "spec:\n  ssh:\n    bastion: {user: x}\n").replace(
        "role: server", "role: boss"
    )
    msg = err(tmp_path, text)
    assert msg.startswith(f"{tmp_path}/cluster.yaml: 2 errors against the schema\n")
    assert "spec.ssh.bastion: 'address' is a required property" in msg
    assert "spec.nodes[0].role: 'boss' is not one of ['server', 'agent']" in msg


# -- commands ----------------------------------------------------------------------------------


def test_secret_basics() -> None:
    with pytest.raises(TypeError) as e:
        Secret(5)  # type: ignore[arg-type]
    assert str(e.value) == "Secret wraps a str, not int"
    assert Secret("a") == Secret("a") and Secret("a") != Secret("b")
    assert Secret("a") != "a"  # type: ignore[comparison-overlap]
    assert hash(Secret("a")) == hash(Secret("a")) and hash(Secret("a")) != hash(Secret("b"))
    assert len({Secret("a"), Secret("b"), Secret("a")}) == 2
    assert bool(Secret("x")) and not bool(Secret(""))
    assert Secret(Secret("inner")).reveal() == "inner"


@pytest.mark.parametrize(
    "secrets, text, masked",
    [
        (["abc", "abcdef"], "token=abcdef x=abc", "token=*** x=***"),
        (["xyz", "axyzb"], "k=axyzb", "k=***"),
        (["axyzb", "xyz"], "k=axyzb and xyz", "k=*** and ***"),
    ],
    ids=["prefix", "inside", "inside-reversed"],
)
def test_overlapping_secrets_are_masked_whole(secrets: list[str], text: str, masked: str) -> None:
    cmd = Command.argv("echo", *[Secret(s) for s in secrets])
    assert cmd.mask(text) == masked


def test_secrets_inside_sh_c_and_env() -> None:
    inner = Command.script("echo {t} > /f", {"t": Secret("s1")}, sudo=True, env={"K": Secret("s2")})
    wrapped = as_user(inner, "ops")
    assert set(wrapped.secrets()) == {"s1", "s2"}
    assert "s1" not in wrapped.display() and "s2" not in wrapped.display()
    compound = as_user(Command.script("echo {t} | cat", {"t": Secret("s3")}, sudo=True), "ops")
    assert compound.secrets() == ("s3",)
    assert compound.sudo is False and compound.compound is False
    assert compound.display() == "sudo -n sh -c 'echo *** | cat'"


def test_values_are_converted_to_words() -> None:
    assert Command.argv("cat", Path("/a b"), 5).render() == "cat '/a b' 5"  # type: ignore[arg-type]
    assert Command.script("sleep {n} && ls {p}", {"n": 5, "p": "/x y"}).render() == (
        "sleep 5 && ls '/x y'"
    )


def test_env_is_frozen() -> None:
    env = {"A": "1"}
    cmd = Command.argv("true", env=env)
    env["B"] = "2"
    assert isinstance(cmd.env, MappingProxyType) and dict(cmd.env) == {"A": "1"}


def test_write_file_defaults_and_options() -> None:
    cmd = write_file("/etc/x", "content")
    assert cmd.display() == (
        "mkdir -p /etc && umask 077 && cat > /etc/x.mk8s-tmp && chmod 0644 /etc/x.mk8s-tmp"
        " && mv -f /etc/x.mk8s-tmp /etc/x"
    )
    assert cmd.timeout == 60.0 and cmd.sudo is True
    assert write_file("/etc/x", b"c", timeout=5.0).timeout == 5.0


def test_file_upload_defaults_and_display(tmp_path: Path) -> None:
    up = FileUpload.from_bytes(b"hello", "/etc/h", description="greeting")
    assert (up.mode, up.secret, up.description) == (0o644, False, "greeting")
    sha = hashlib.sha256(b"hello").hexdigest()
    assert up.display() == f"upload <5 bytes> -> /etc/h (0644, 5 bytes, sha256 {sha[:16]})"
    secret = FileUpload.from_bytes(b"k", "/etc/k", mode=0o600, secret=True)
    assert secret.display().startswith("upload <secret 1 bytes> -> /etc/k (0600,")
    f = tmp_path / "f"
    f.write_bytes(b"x" * 100)
    up = FileUpload.from_path(f, "/opt/f", mode=0o755, description="file")
    assert (up.mode, up.description, up.size) == (0o755, "file", 100)
    assert up.sha256 == hashlib.sha256(b"x" * 100).hexdigest()
    assert up.content() == b"x" * 100
    assert FileUpload.from_bytes(b"abc", "/a").content() == b"abc"


def test_errors_on_one_line_keep_the_schema_order(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        "    - address: 10.0.0.11\n      role: server\n",
        "    - {address: 10.0.0.11, role: boss, config: 5, ssh: 3, name: 7}\n",
    )
    f = f"{tmp_path}/cluster.yaml"
    assert err(tmp_path, text) == (
        f"{f}: 4 errors against the schema\n"
        f"{f}:7: spec.nodes[0].name: 7 is not of type 'string'\n"
        f"{f}:7: spec.nodes[0].role: 'boss' is not one of ['server', 'agent']\n"
        f"{f}:7: spec.nodes[0].ssh: 3 is not of type 'object'\n"
        f"{f}:7: spec.nodes[0].config: 5 is not of type 'object'"
    )


def test_value_errors_point_at_the_value_line(tmp_path: Path) -> None:
    text = MINIMAL.replace("      role: server", "      role:\n        boss")
    assert err(tmp_path, text) == (
        f"{tmp_path}/cluster.yaml:9: spec.nodes[0].role: 'boss' is not one of ['server', 'agent']"
    )


def test_a_bastion_error_then_more_errors(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        "      role: server", "      role: server\n      ssh: {bastion: {user: x}}"
    ) + ("    - {address: 10.0.0.12, role: boss}\n")
    f = f"{tmp_path}/cluster.yaml"
    assert err(tmp_path, text) == (
        f"{f}: 2 errors against the schema\n"
        f"{f}:9: spec.nodes[0].ssh.bastion: 'address' is a required property\n"
        f"{f}:10: spec.nodes[1].role: 'boss' is not one of ['server', 'agent']"
    )


def test_duplicate_default_name_exact(tmp_path: Path) -> None:
    text = (
        MINIMAL.replace("      role: server", "      role: server\n      name: 10.0.0.12")
        + "    - {address: 10.0.0.12, role: agent}\n"
    )
    assert err(tmp_path, text) == (
        f"{tmp_path}/cluster.yaml:10: spec.nodes[1].address: node name '10.0.0.12' is already "
        "used by spec.nodes[0] (a node's name defaults to its address); give each node a "
        "unique name"
    )


def test_empty_command() -> None:
    with pytest.raises(ValueError) as e:
        Command(pieces=())
    assert str(e.value) == "empty command"


# -- the quote tracker: where a field sits, as the shell reads the template -------------

INSIDE = [
    "'{v}'",  # a quote as the very first character
    '"{v}"',
    "\\x '{v}'",  # an escape ends after one character
    '"a\\"{v}"',  # an escaped quote does not close the string
    "$('{v}')",  # a quote right after $( opens a string
    "$(x) '{v}'",
    "'$( {v}'",  # $( inside single quotes is text
]
OUTSIDE = [
    "\\'{v}",  # an escaped quote opens nothing
    '\\"{v}',
    "'a' {v}",
    '"a" {v}',
    '"$(printf %s {v})"',  # $( opens a fresh word context
    "$(printf %s {v})",
    "'it''s' {v}",
]


@pytest.mark.parametrize("template", INSIDE)
def test_fields_inside_quotes_are_found(template: str) -> None:
    with pytest.raises(ValueError) as e:
        Command.script(template, {"v": "x"})
    assert str(e.value) == f"field {{v}} is inside a quoted string in {template!r}"


@pytest.mark.parametrize("template", OUTSIDE)
def test_fields_outside_quotes_are_accepted(template: str) -> None:
    assert Command.script(template, {"v": "a b"}).render() == template.replace("{v}", "'a b'")


# -- write_file: what a plan shows of the content ---------------------------------------


def test_write_file_shows_plain_content_and_hides_secrets() -> None:
    assert write_file("/etc/x", "a: 1\n").stdin_shown == "a: 1\n"
    assert write_file("/etc/x", b"\xff\xfe").stdin_shown == "<2 bytes>"
    assert write_file("/etc/x", "a: 1\n", shown="a: ***\n").stdin_shown == "a: ***\n"
    assert write_file("/etc/x", Secret("tok")).stdin_shown is None
    assert write_file("/etc/x", Secret("tok"), shown="token: ***").stdin_shown == "token: ***"
