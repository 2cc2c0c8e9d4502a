"""The cluster.yaml model (SPEC section 7): load, validate, resolve defaults.

``load_cluster`` is the only way in. It parses the YAML keeping each value's line,
validates against ``schemas/cluster.schema.json`` (every error, sorted by line), then
checks what a schema cannot express (one server at least, unique names and
addresses, readable files). A :class:`Cluster` that exists is valid; every problem is
one :class:`~mk8s.errors.ClusterFileError` whose message names file, line and field.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, cast

import jsonschema
import yaml

from mk8s.errors import ClusterFileError
from mk8s.files import read_regular
from mk8s.schemas import json_path
from mk8s.schemas import validator as schema_validator

SCHEMA = "cluster.schema.json"
API_VERSION = "mk8s/v1alpha1"
KIND = "Cluster"

DEFAULT_USER = "root"
DEFAULT_PORT = 22
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
DEFAULT_HOST_KEY_POLICY = "strict"
DEFAULT_CONCURRENCY = 10
DEFAULT_STAGING_DIR = "/var/lib/mk8s"
# mk8s writes these config.yaml keys itself; a user value would silently fight it.
MANAGED_CONFIG_KEYS = (
    "server",
    "token",
    "token-file",
    "agent-token",
    "agent-token-file",
    "node-name",
)
# How many schema errors one message shows before "... and N more".
MAX_ERRORS_SHOWN = 8
# Bounds that keep a hostile file from costing time or memory: real files are a few KiB.
MAX_FILE_BYTES = 1 << 20
MAX_NODES = 100_000
MAX_DEPTH = 64

Role = Literal["server", "agent"]
HostKeyPolicy = Literal["strict", "accept-new"]


@dataclass(frozen=True)
class Bastion:
    """A jump host the node is reached through (``ssh -J user@address:port``)."""

    address: str
    user: str
    port: int = DEFAULT_PORT


@dataclass(frozen=True)
class SSHSettings:
    """Everything needed to open one node's SSH connection (spec.ssh + node.ssh)."""

    user: str = DEFAULT_USER
    port: int = DEFAULT_PORT
    identity_file: Path | None = None  # None: use the ssh-agent
    known_hosts: Path = field(default_factory=lambda: Path(DEFAULT_KNOWN_HOSTS).expanduser())
    host_key_policy: HostKeyPolicy = "strict"
    bastion: Bastion | None = None


@dataclass(frozen=True)
class Node:
    """One machine. ``index`` is its position in spec.nodes, ``line`` its line."""

    name: str
    address: str
    role: Role
    ssh: SSHSettings
    config: Mapping[str, Any]
    index: int = 0
    line: int = 0

    @property
    def is_server(self) -> bool:
        return self.role == "server"


@dataclass(frozen=True)
class RKE2Settings:
    """spec.rke2; mappings are read-only copies of what the file says."""

    version: str | None = None
    tls_san: tuple[str, ...] = ()
    server_url: str | None = None
    token_file: Path | None = None
    config: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    server_config: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    agent_config: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    registries: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Options:
    concurrency: int = DEFAULT_CONCURRENCY
    staging_dir: str = DEFAULT_STAGING_DIR


@dataclass(frozen=True)
class Cluster:
    """A validated cluster.yaml. ``nodes`` keeps the file's order."""

    name: str
    path: Path
    rke2: RKE2Settings
    ssh: SSHSettings
    nodes: tuple[Node, ...]
    options: Options

    @property
    def servers(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.role == "server")

    @property
    def agents(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.role == "agent")

    @property
    def bootstrap(self) -> Node:
        """The first server listed: it initialises the cluster, the others join it."""
        return self.servers[0]

    def node(self, name: str) -> Node:
        """The node called ``name``; raises ClusterFileError naming the known names."""
        for n in self.nodes:
            if n.name == name:
                return n
        known = ", ".join(n.name for n in self.nodes)
        raise ClusterFileError(f"{self.path}: no node is named {name!r}", f"use one of: {known}")


# --------------------------------------------------------------------------- parsing


def load_cluster(path: str | os.PathLike[str], *, check_files: bool = True) -> Cluster:
    """Read, validate and resolve a cluster.yaml.

    Raises ClusterFileError (exit 2) when the file is missing, unreadable, not YAML,
    empty, fails the schema (the message lists how many errors and the first few as
    ``FILE:LINE: FIELD: problem``), or fails a semantic check (no server, a duplicate
    name or address, ``server``/``token`` inside an RKE2 config block, or, with
    ``check_files``, a token or identity file that does not exist). Nothing connects.
    """
    p = Path(path)
    label = str(path)
    raw = read_regular(
        p,
        what="cluster file",
        max_size=MAX_FILE_BYTES,
        error=ClusterFileError,
        fix="pass the cluster file with -f PATH",
        missing=f"{label}: no such file",
    )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ClusterFileError(f"{label}: not UTF-8 text ({e})", "save it as UTF-8") from e
    root, data = _parse(label, text)
    _validate(label, root, data)
    return _build(label, p, root, cast(dict[str, Any], data), check_files=check_files)


def _parse(label: str, text: str) -> tuple[yaml.Node, Any]:
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            raise ClusterFileError(
                f"{label}: the file is empty", "see SPEC section 7 for the cluster.yaml format"
            )
        _check_size(label, root)
        _check_duplicate_keys(label, root, ())
        data = loader.construct_document(root)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{label}:{mark.line + 1}" if mark else label
        problem = e.problem or e.context or "invalid YAML"
        raise ClusterFileError(f"{where}: not valid YAML: {problem}", "fix the YAML syntax") from e
    except yaml.YAMLError as e:
        raise ClusterFileError(f"{label}: not valid YAML: {e}", "fix the YAML syntax") from e
    except RecursionError as e:
        raise ClusterFileError(
            f"{label}: nested more than this parser can follow", "a cluster file is shallow"
        ) from e
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ClusterFileError(
            f"{label}:{root.start_mark.line + 1}: expected a mapping with apiVersion, kind,"
            f" metadata and spec, found {type(data).__name__}",
            "see SPEC section 7 for the cluster.yaml format",
        )
    return root, data


def _check_size(label: str, root: yaml.Node) -> None:
    """Refuse alias bombs and deep nesting before anything expands them.

    Walks the composed graph (aliases are shared nodes there, so nothing is expanded
    yet) counting every node as the constructed document would hold it.
    """
    stack: list[tuple[yaml.Node, int]] = [(root, 1)]
    seen = 0
    while stack:
        node, depth = stack.pop()
        seen += 1
        if seen > MAX_NODES:
            raise ClusterFileError(
                f"{label}: expands to more than {MAX_NODES} values (YAML aliases?)",
                "write the values out; a cluster file needs no alias expansion this large",
            )
        if depth > MAX_DEPTH:
            raise ClusterFileError(
                f"{label}:{node.start_mark.line + 1}: nested deeper than {MAX_DEPTH} levels",
                "a cluster file is shallow; check the indentation",
            )
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                stack += [(k, depth + 1), (v, depth + 1)]
        elif isinstance(node, yaml.SequenceNode):
            stack += [(item, depth + 1) for item in node.value]


def _check_duplicate_keys(label: str, node: yaml.Node, path: tuple[str | int, ...]) -> None:
    # PyYAML silently keeps the last of two equal keys; a typo'd copy would go unseen.
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for k, v in node.value:
            key = str(k.value)
            if key in seen:
                raise ClusterFileError(
                    f"{label}:{k.start_mark.line + 1}: {json_path((*path, key))}: key"
                    f" appears twice (first on line {seen[key]})",
                    "keep one of them",
                )
            seen[key] = k.start_mark.line + 1
            _check_duplicate_keys(label, v, (*path, key))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_duplicate_keys(label, item, (*path, i))


def _locate(root: yaml.Node, path: Iterable[str | int], *, key: bool = False) -> int:
    """1-based line of the value at ``path`` (of its key if ``key``); nearest parent."""
    node = root
    line = root.start_mark.line + 1
    for part in path:
        nxt: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            for k, v in node.value:
                if k.value == part:
                    nxt = v
                    line = (k if key else v).start_mark.line + 1
                    break
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(node.value)
        ):
            nxt = node.value[part]
            line = nxt.start_mark.line + 1
        if nxt is None:
            break
        node = nxt
    return line


# ------------------------------------------------------------------------ validation


def _validate(label: str, root: yaml.Node, data: dict[str, Any]) -> None:
    # apiVersion and kind first: a file of another kind would drown in schema errors.
    if data.get("apiVersion") != API_VERSION:
        raise ClusterFileError(
            f"{label}:{_locate(root, ['apiVersion'])}: apiVersion:"
            f" {data.get('apiVersion')!r} is not supported",
            f"set apiVersion: {API_VERSION}",
        )
    if data.get("kind") != KIND:
        raise ClusterFileError(
            f"{label}:{_locate(root, ['kind'])}: kind: {data.get('kind')!r} is not {KIND!r}",
            f"set kind: {KIND} (is this a cluster file?)",
        )
    validator = schema_validator(SCHEMA)
    found: list[tuple[int, str]] = []
    for err in _expand(validator.iter_errors(data)):
        path = list(err.absolute_path)
        message = err.message
        line = _locate(root, path)
        if (
            err.validator == "additionalProperties"
            and isinstance(err.instance, dict)
            and isinstance(err.schema, Mapping)
        ):
            allowed = set(err.schema.get("properties", {}))
            extra = sorted(k for k in err.instance if k not in allowed)
            if extra:
                path = [*path, extra[0]]
                line = _locate(root, path, key=True)
                message = f"unknown field (allowed here: {', '.join(sorted(allowed))})"
        found.append((line, f"{label}:{line}: {json_path(path)}: {message}"))
    if not found:
        return
    found.sort(key=lambda t: t[0])
    lines = [m for _, m in found]
    if len(lines) == 1:
        raise ClusterFileError(lines[0], None)
    shown = lines[:MAX_ERRORS_SHOWN]
    more = len(lines) - len(shown)
    body = "\n".join(shown) + (f"\n... and {more} more" if more else "")
    raise ClusterFileError(f"{label}: {len(lines)} errors against the schema\n{body}", None)


def _expand(
    errors: Iterable[jsonschema.ValidationError],
) -> Iterable[jsonschema.ValidationError]:
    """Replace "X is not valid under any of the given schemas" by the useful half.

    The only anyOf is ``{object} | null`` (node.ssh.bastion); a non-null value gets
    the object branch's own errors ("'address' is a required property").
    """
    for err in errors:
        if err.validator == "anyOf" and err.instance is not None and err.context:
            first = [e for e in err.context if e.relative_schema_path[0] == 0]
            if first:
                yield from _expand(first)
                continue
        yield err


# -------------------------------------------------------------------------- building


def _resolve(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def _string_list(value: str | Iterable[str]) -> tuple[str, ...]:
    """One string is one item (never one item per character)."""
    return (value,) if isinstance(value, str) else tuple(value)


def _freeze(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


def _ssh_settings(block: Mapping[str, Any], base: Path) -> SSHSettings:
    """SSH settings from one merged block (spec.ssh updated with node.ssh)."""
    user = str(block.get("user", DEFAULT_USER))
    bastion = None
    if block.get("bastion") is not None:
        b = block["bastion"]
        bastion = Bastion(address=b["address"], user=b.get("user", user), port=b.get("port", 22))
    identity = block.get("identityFile")
    return SSHSettings(
        user=user,
        port=int(block.get("port", DEFAULT_PORT)),
        identity_file=_resolve(base, identity) if identity is not None else None,
        known_hosts=_resolve(base, block.get("knownHosts", DEFAULT_KNOWN_HOSTS)),
        host_key_policy=cast(HostKeyPolicy, block.get("hostKeyPolicy", DEFAULT_HOST_KEY_POLICY)),
        bastion=bastion,
    )


def _build(
    label: str, path: Path, root: yaml.Node, data: dict[str, Any], *, check_files: bool
) -> Cluster:
    base = path.resolve().parent
    spec: dict[str, Any] = data["spec"]
    rke2_block: dict[str, Any] = spec.get("rke2", {})
    ssh_block: dict[str, Any] = spec.get("ssh", {})
    options_block: dict[str, Any] = spec.get("options", {})

    def fail(where: list[str | int], problem: str, fix: str, *, key: bool = False) -> None:
        line = _locate(root, where, key=key)
        raise ClusterFileError(f"{label}:{line}: {json_path(where)}: {problem}", fix)

    for block_name in ("config", "serverConfig", "agentConfig"):
        _check_managed_keys(rke2_block.get(block_name, {}), ["spec", "rke2", block_name], fail)

    token_file = None
    if "token" in rke2_block:
        token_file = _resolve(base, rke2_block["token"]["file"])
        if check_files and not token_file.is_file():
            fail(
                ["spec", "rke2", "token", "file"],
                f"{token_file} does not exist",
                "create it, or remove spec.rke2.token to let mk8s generate a token",
            )

    rke2 = RKE2Settings(
        version=rke2_block.get("version"),
        tls_san=_string_list(rke2_block.get("tlsSan", ())),
        server_url=rke2_block.get("serverUrl"),
        token_file=token_file,
        config=_freeze(rke2_block.get("config")),
        server_config=_freeze(rke2_block.get("serverConfig")),
        agent_config=_freeze(rke2_block.get("agentConfig")),
        registries=_freeze(rke2_block["registries"]) if "registries" in rke2_block else None,
    )
    cluster_ssh = _ssh_settings(ssh_block, base)
    if check_files:
        _check_identity(cluster_ssh, ["spec", "ssh", "identityFile"], fail)

    nodes: list[Node] = []
    names: dict[str, int] = {}
    addresses: dict[str, int] = {}
    for i, raw in enumerate(spec["nodes"]):
        where: list[str | int] = ["spec", "nodes", i]
        address = str(raw["address"])
        name = str(raw.get("name", address))
        # RKE2 node names and DNS names are case-insensitive: "CP1" and "cp1" collide.
        if name.lower() in names:
            j = names[name.lower()]
            fail(
                [*where, "name"] if "name" in raw else [*where, "address"],
                f"node name {name!r} is already used by spec.nodes[{j}]"
                + ("" if "name" in raw else " (a node's name defaults to its address)"),
                "give each node a unique name",
            )
        if address.lower() in addresses:
            fail(
                [*where, "address"],
                f"address {address!r} is already used by spec.nodes[{addresses[address.lower()]}]",
                "list each machine once",
            )
        names[name.lower()] = i
        addresses[address.lower()] = i
        node_ssh = _ssh_settings({**ssh_block, **raw.get("ssh", {})}, base)
        if check_files and node_ssh.identity_file != cluster_ssh.identity_file:
            _check_identity(node_ssh, [*where, "ssh", "identityFile"], fail)
        _check_managed_keys(raw.get("config", {}), [*where, "config"], fail)
        nodes.append(
            Node(
                name=name,
                address=address,
                role=cast(Role, raw["role"]),
                ssh=node_ssh,
                config=_freeze(raw.get("config")),
                index=i,
                line=_locate(root, where),
            )
        )

    if not any(n.role == "server" for n in nodes):
        fail(
            ["spec", "nodes"],
            "no node has role: server",
            "make at least one node a server (the first server listed bootstraps the cluster)",
            key=True,
        )

    return Cluster(
        name=data["metadata"]["name"],
        path=path,
        rke2=rke2,
        ssh=cluster_ssh,
        nodes=tuple(nodes),
        options=Options(
            concurrency=options_block.get("concurrency", DEFAULT_CONCURRENCY),
            staging_dir=options_block.get("stagingDir", DEFAULT_STAGING_DIR),
        ),
    )


def _check_managed_keys(config: Mapping[str, Any], where: list[str | int], fail: Any) -> None:
    for key in MANAGED_CONFIG_KEYS:
        if key in config:
            if key == "server":
                fix = "remove it; set spec.rke2.serverUrl for a fixed registration address"
            elif key == "node-name":
                fix = "remove it; mk8s sets node-name to the node's name in spec.nodes"
            else:
                fix = "remove it; set spec.rke2.token.file to choose the token"
            fail([*where, key], f"{key!r} is managed by mk8s", fix, key=True)


def _check_identity(ssh: SSHSettings, where: list[str | int], fail: Any) -> None:
    if ssh.identity_file is not None and not ssh.identity_file.is_file():
        what = "is not a regular file" if ssh.identity_file.exists() else "does not exist"
        fail(
            where,
            f"{ssh.identity_file} {what}",
            "fix the path, or remove identityFile to use the ssh-agent",
        )
