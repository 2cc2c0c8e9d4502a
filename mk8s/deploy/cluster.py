"""The cluster.yaml model: :func:`load_cluster`, and the frozen values it returns.

``load_cluster`` is the only way in. :mod:`mk8s.deploy.clusterfile` parses the YAML
keeping each value's line and validates it against ``schemas/cluster.schema.json``;
this module then checks what a schema cannot express (one server at least, unique
names and addresses, keys mk8s manages, readable files) and resolves defaults. A
:class:`Cluster` that exists is valid; every problem is one
:class:`~mk8s.errors.ClusterFileError` whose message names file, line and field.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, cast

from mk8s.deploy.clusterchecks import (
    check_ca_file,
    check_config,
    check_identity,
    check_url,
    node_name,
    raw_name,
)
from mk8s.deploy.clusterfile import Document, read_document
from mk8s.deploy.rke2config import NodePaths, layered_config, paths_of, registered_name
from mk8s.deploy.sshsettings import Bastion as Bastion
from mk8s.deploy.sshsettings import SSHSettings as SSHSettings
from mk8s.deploy.sshsettings import resolve, ssh_settings
from mk8s.errors import ClusterFileError
from mk8s.untrusted import shown, shown_list

DEFAULT_CONCURRENCY = 10
DEFAULT_STAGING_DIR = "/var/lib/mk8s"
Role = Literal["server", "agent"]


@dataclass(frozen=True)
class Node:
    """One machine. ``index`` is its position in spec.nodes, ``line`` its line.
    ``name`` is the name the node registers under: lower case (see
    :func:`mk8s.deploy.rke2config.registered_name`)."""

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
    tar_prefix: str | None = None  # INSTALL_RKE2_TAR_PREFIX, when the operator sets one

    @property
    def prefixes(self) -> tuple[str, ...]:
        """Where RKE2 may be installed: the operator's prefix, else install.sh's two."""
        if self.tar_prefix:
            return (self.tar_prefix.rstrip("/") or "/",)
        return ("/usr/local", "/opt/rke2")


@dataclass(frozen=True)
class RegistrySettings:
    """spec.images.registry: the registry inside the air gap."""

    url: str  # https://HOST[:PORT]
    ca_file: Path | None = None
    username: str | None = None
    password_file: Path | None = None

    @property
    def host(self) -> str:
        """``HOST[:PORT]``, as registries.yaml and system-default-registry name it."""
        return self.url.removeprefix("https://").rstrip("/")


Distribution = Literal["all", "servers", "registry"]


@dataclass(frozen=True)
class ImagesSettings:
    """spec.images: where nodes get the release's images."""

    distribution: Distribution = "all"
    registry: RegistrySettings | None = None

    def local_tarballs(self, node: Node) -> bool:
        """Whether ``node`` gets the image tarballs in agent/images."""
        return self.distribution == "all" or (self.distribution == "servers" and node.is_server)


@dataclass(frozen=True)
class UpgradeOptions:
    """spec.options.upgrade: how a rolling upgrade treats each node."""

    drain: bool = True
    drain_timeout: int = 300  # seconds
    max_unavailable: str = "10%"  # agents upgraded at once: a count or a percentage

    def batch_size(self, agents: int) -> int:
        """Agents per batch: ``maxUnavailable`` of ``agents``, at least 1."""
        v = self.max_unavailable.strip()
        n = agents * int(v[:-1]) // 100 if v.endswith("%") else int(v)
        return max(1, n)


@dataclass(frozen=True)
class Options:
    concurrency: int = DEFAULT_CONCURRENCY
    staging_dir: str = DEFAULT_STAGING_DIR
    upgrade: UpgradeOptions = field(default_factory=UpgradeOptions)


@dataclass(frozen=True)
class Cluster:
    """A validated cluster.yaml. ``nodes`` keeps the file's order."""

    name: str
    path: Path
    rke2: RKE2Settings
    ssh: SSHSettings
    nodes: tuple[Node, ...]
    options: Options
    images: ImagesSettings = field(default_factory=ImagesSettings)
    # What the loader changed and the user should hear about (one line each).
    notes: tuple[str, ...] = ()

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
        """The node called ``name`` (in any case: node names are lower case); raises
        ClusterFileError naming the known names."""
        for n in self.nodes:
            if n.name == registered_name(name):
                return n
        known = shown_list(n.name for n in self.nodes)
        raise ClusterFileError(
            f"{self.path}: no node is named {shown(repr(name), limit=80)}", f"use one of: {known}"
        )

    def user_config(self, node: Node) -> dict[str, Any]:
        """``node``'s config.yaml as this file gives it, before mk8s adds its own keys:
        spec.rke2.config, then serverConfig or agentConfig, then the node's config."""
        rke2 = self.rke2
        role = rke2.server_config if node.is_server else rke2.agent_config
        return layered_config(rke2.config, role, node.config, server=node.is_server)

    def paths(self, node: Node) -> NodePaths:
        """Where RKE2 keeps its files on ``node`` (data-dir, write-kubeconfig, ...), as
        its config.yaml will say."""
        return paths_of(self.user_config(node), server=node.is_server)


# --------------------------------------------------------------------------- loading


def load_cluster(path: str | os.PathLike[str], *, check_files: bool = True) -> Cluster:
    """Read, validate and resolve a cluster.yaml.

    Raises ClusterFileError (exit 2) when the file is missing, unreadable, not YAML,
    empty, fails the schema (the message lists how many errors and the first few as
    ``FILE:LINE: FIELD: problem``), or fails a semantic check (no server, a duplicate
    name or address, a key mk8s manages inside an RKE2 config block, or, with
    ``check_files``, a token or identity file that does not exist). Nothing connects.
    """
    doc = read_document(Path(path), str(path))
    return _build(doc, check_files=check_files)


def _string_list(value: str | Iterable[str]) -> tuple[str, ...]:
    """One string is one item (never one item per character)."""
    return (value,) if isinstance(value, str) else tuple(value)


def _freeze(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


def _build(doc: Document, *, check_files: bool) -> Cluster:
    base = doc.path.resolve().parent
    spec: dict[str, Any] = doc.data["spec"]
    ssh_block: dict[str, Any] = spec.get("ssh", {})
    options_block: dict[str, Any] = spec.get("options", {})
    rke2 = _rke2_settings(doc, spec.get("rke2", {}), base, check_files=check_files)
    cluster_ssh = ssh_settings(ssh_block, base)
    if check_files:
        check_identity(cluster_ssh.identity_file, ["spec", "ssh", "identityFile"], doc)
    nodes = _nodes(doc, spec["nodes"], ssh_block, cluster_ssh, base, check_files=check_files)
    notes = tuple(
        f"{doc.label}:{n.line}: node name {raw!r} registers as {n.name!r} (RKE2 lower-cases"
        f" node names); mk8s calls it {n.name}"
        for n, raw in zip(nodes, (raw_name(r) for r in spec["nodes"]), strict=True)
        if raw != n.name
    )
    return Cluster(
        name=doc.data["metadata"]["name"],
        path=doc.path,
        rke2=rke2,
        ssh=cluster_ssh,
        nodes=tuple(nodes),
        options=Options(
            concurrency=options_block.get("concurrency", DEFAULT_CONCURRENCY),
            staging_dir=options_block.get("stagingDir", DEFAULT_STAGING_DIR),
            upgrade=_upgrade_options(options_block.get("upgrade", {})),
        ),
        images=_images(doc, spec.get("images", {}), base, check_files=check_files),
        notes=notes,
    )


def _images(
    doc: Document, block: dict[str, Any], base: Path, *, check_files: bool
) -> ImagesSettings:
    distribution = block.get("distribution", "all")
    reg = block.get("registry")
    where: list[str | int] = ["spec", "images"]
    if distribution == "registry" and reg is None:
        doc.fail(
            [*where, "distribution"],
            "distribution: registry needs spec.images.registry",
            "add spec.images.registry: {url: https://HOST:PORT, caFile: ..., username: ...,"
            " passwordFile: ...}",
        )
    registry = None
    if reg is not None:
        registry = RegistrySettings(
            url=reg["url"],
            ca_file=resolve(base, reg["caFile"]) if "caFile" in reg else None,
            username=reg.get("username"),
            password_file=resolve(base, reg["passwordFile"]) if "passwordFile" in reg else None,
        )
        if (registry.username is None) != (registry.password_file is None):
            doc.fail(
                [*where, "registry"],
                "username and passwordFile go together",
                "give both, or neither for a registry without authentication",
            )
        check_url(registry.url, [*where, "registry", "url"], doc)
        if check_files and registry.password_file and not registry.password_file.is_file():
            what = "is not a regular file" if registry.password_file.exists() else "does not exist"
            doc.fail(
                [*where, "registry", "passwordFile"],
                f"{registry.password_file} {what}",
                "fix the path",
            )
        if check_files and registry.ca_file is not None:
            check_ca_file(registry.ca_file, [*where, "registry", "caFile"], doc)
    return ImagesSettings(distribution=distribution, registry=registry)


def _upgrade_options(block: dict[str, Any]) -> UpgradeOptions:
    return UpgradeOptions(
        drain=bool(block.get("drain", True)),
        drain_timeout=int(block.get("drainTimeout", 300)),
        max_unavailable=str(block.get("maxUnavailable", "10%")),
    )


def _rke2_settings(
    doc: Document, block: dict[str, Any], base: Path, *, check_files: bool
) -> RKE2Settings:
    for name in ("config", "serverConfig", "agentConfig"):
        check_config(block.get(name, {}), ["spec", "rke2", name], doc, name == "agentConfig")
    if "serverUrl" in block:
        check_url(block["serverUrl"], ["spec", "rke2", "serverUrl"], doc)
    token_file = None
    if "token" in block:
        token_file = resolve(base, block["token"]["file"])
        if check_files and not token_file.is_file():
            doc.fail(
                ["spec", "rke2", "token", "file"],
                f"{token_file} does not exist",
                "create it, or remove spec.rke2.token to let mk8s generate a token",
            )
    return RKE2Settings(
        version=block.get("version"),
        tls_san=_string_list(block.get("tlsSan", ())),
        server_url=block.get("serverUrl"),
        token_file=token_file,
        config=_freeze(block.get("config")),
        server_config=_freeze(block.get("serverConfig")),
        agent_config=_freeze(block.get("agentConfig")),
        registries=_freeze(block["registries"]) if "registries" in block else None,
        tar_prefix=block.get("tarPrefix"),
    )


def _nodes(
    doc: Document,
    items: list[dict[str, Any]],
    ssh_block: dict[str, Any],
    cluster_ssh: SSHSettings,
    base: Path,
    *,
    check_files: bool,
) -> list[Node]:
    nodes: list[Node] = []
    names: dict[str, int] = {}
    addresses: dict[str, int] = {}
    for i, raw in enumerate(items):
        where: list[str | int] = ["spec", "nodes", i]
        address = str(raw["address"])
        name = node_name(doc, raw, where)
        # RKE2 node names and DNS names are case-insensitive: "CP1" and "cp1" collide.
        if name in names:
            doc.fail(
                [*where, "name"] if "name" in raw else [*where, "address"],
                f"node name {raw_name(raw)!r} is already used by spec.nodes[{names[name]}]"
                + ("" if "name" in raw else " (a node's name defaults to its address)"),
                "give each node a unique name",
            )
        if address.lower() in addresses:
            doc.fail(
                [*where, "address"],
                f"address {address!r} is already used by spec.nodes[{addresses[address.lower()]}]",
                "list each machine once",
            )
        names[name] = addresses[address.lower()] = i
        node_ssh = ssh_settings({**ssh_block, **raw.get("ssh", {})}, base)
        if check_files and node_ssh.identity_file != cluster_ssh.identity_file:
            check_identity(node_ssh.identity_file, [*where, "ssh", "identityFile"], doc)
        check_config(raw.get("config", {}), [*where, "config"], doc, raw["role"] == "agent")
        nodes.append(
            Node(
                name=name,
                address=address,
                role=cast(Role, raw["role"]),
                ssh=node_ssh,
                config=_freeze(raw.get("config")),
                index=i,
                line=doc.line(where),
            )
        )
    if not any(n.role == "server" for n in nodes):
        doc.fail(
            ["spec", "nodes"],
            "no node has role: server",
            "make at least one node a server (the first server listed bootstraps the cluster)",
            key=True,
        )
    return nodes
