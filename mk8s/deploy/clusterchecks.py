"""Checks of cluster.yaml values that its schema cannot express: URLs, files it names,
node names and RKE2 config blocks (what RKE2 takes is :mod:`mk8s.deploy.rke2config`'s).
Each failure is the Document's one-line ClusterFileError naming file, line and field;
none quotes a secret (a URL's userinfo, the content of a file).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mk8s.deploy import registryca
from mk8s.deploy.clusterfile import Document
from mk8s.deploy.rke2config import (
    config_problems,
    node_name_problem,
    registered_name,
    suggest_name,
)
from mk8s.errors import InputError


def check_url(url: str, where: list[str | int], doc: Document) -> None:
    """An ``https://HOST[:PORT]`` address: no user or password in it (it would travel
    into config files and plans), and a port RKE2 and this machine can dial (1-65535)."""
    netloc = urlsplit(url).netloc
    if "@" in netloc:
        doc.fail(
            where,
            "the URL holds a user name or password (https://USER:PASSWORD@...)",
            "remove them: give the registry's credentials with username and passwordFile",
        )
    port = netloc.rpartition("]")[2].partition(":")[2]  # after an IPv6 literal, if any
    if port and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        doc.fail(where, f"port {port[:8]} is out of range (1-65535)", "fix the port")


def check_ca_file(path: Path, where: list[str | int], doc: Document) -> None:
    """``caFile`` must be PEM certificates only (see :mod:`mk8s.deploy.registryca`)."""
    if not path.exists():
        doc.fail(where, f"{path} does not exist", "fix the path")
    try:
        registryca.read_ca(path)
    except InputError as e:
        doc.fail(where, e.problem, registryca.FIX)


def check_identity(identity_file: Path | None, where: list[str | int], doc: Document) -> None:
    if identity_file is not None and not identity_file.is_file():
        what = "is not a regular file" if identity_file.exists() else "does not exist"
        doc.fail(
            where,
            f"{identity_file} {what}",
            "fix the path, or remove identityFile to use the ssh-agent",
        )


def raw_name(raw: Mapping[str, Any]) -> str:
    """A node's name as spec.nodes gives it (its address when it has no name)."""
    return str(raw.get("name", raw["address"]))


def node_name(doc: Document, raw: Mapping[str, Any], where: list[str | int]) -> str:
    """The name the node registers under (lower case); ClusterFileError if Kubernetes
    would refuse it."""
    given = raw_name(raw)
    name = registered_name(given)
    problem = node_name_problem(name)
    if problem is None:
        return name
    if "name" in raw:
        doc.fail([*where, "name"], f"node name {problem}", f"rename it, e.g. {suggest_name(name)}")
    doc.fail(
        [*where, "address"],
        f"the node has no name and its address is not a node name: {problem}",
        f"give it a name, e.g. name: {suggest_name(name)}",
    )


def check_config(
    config: Mapping[str, Any], where: list[str | int], doc: Document, agents_only: bool
) -> None:
    """Every key of one RKE2 config block mk8s cannot take (``agents_only``: the block
    reaches agents only)."""
    for key, problem, fix in config_problems(config, agents_only=agents_only):
        doc.fail([*where, key], problem, fix, key=True)
