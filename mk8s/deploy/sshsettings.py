"""How mk8s reaches a node over SSH: spec.ssh, updated key by key with node.ssh."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

DEFAULT_USER = "root"
DEFAULT_PORT = 22
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
DEFAULT_HOST_KEY_POLICY = "strict"
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


def resolve(base: Path, value: str) -> Path:
    """``value`` (``~`` expanded) relative to ``base`` unless absolute."""
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def ssh_settings(block: Mapping[str, Any], base: Path) -> SSHSettings:
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
        identity_file=resolve(base, identity) if identity is not None else None,
        known_hosts=resolve(base, block.get("knownHosts", DEFAULT_KNOWN_HOSTS)),
        host_key_policy=cast(HostKeyPolicy, block.get("hostKeyPolicy", DEFAULT_HOST_KEY_POLICY)),
        bastion=bastion,
    )
