"""Checks of cluster.yaml values that its schema cannot express: URLs, files it names,
(the RKE2 config keys are mk8s.deploy.rke2config's). Each failure is the Document's one-line
ClusterFileError naming file, line and field; none quotes a secret (a URL's userinfo,
the content of a file).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from mk8s.deploy import registryca
from mk8s.deploy.clusterfile import Document
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
