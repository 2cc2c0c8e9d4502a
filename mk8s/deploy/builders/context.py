"""What every step of one deploy shares (:class:`Context`), and the cluster's addresses.

The registration address joining nodes use and the API address the kubeconfig points
at both derive from cluster.yaml alone; RKE2's ports are here too.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from mk8s.bundle.format.manifest import Artifact, Lock
from mk8s.deploy.cluster import Cluster, Node
from mk8s.deploy.command import Secret

SUPERVISOR_PORT = 9345
API_PORT = 6443


@dataclass(frozen=True)
class Context:
    """What every step of one deploy shares."""

    cluster: Cluster
    manifest: Lock
    bundle_id: str
    token: Secret
    local_artifacts: Mapping[str, Path] = field(default_factory=dict)  # bundle path -> file
    # spec.images.registry's password (from its passwordFile), for registries.yaml.
    registry_password: Secret | None = None
    # The server the cluster is reached through ("": the first server), and where the
    # first server registers when it has no datastore but the cluster exists ("": it
    # bootstraps, or starts from its datastore). See mk8s.deploy.builders.membership.
    anchor: str = ""
    first_joins: str = ""

    @property
    def staging(self) -> str:
        return posixpath.join(self.cluster.options.staging_dir, self.bundle_id)

    @property
    def server_url(self) -> str:
        return server_url(self.cluster)

    @property
    def api_host(self) -> str:
        return api_host(self.cluster)

    @property
    def anchor_node(self) -> Node:
        """The server to ask about the cluster (node list, kubeconfig)."""
        return self.cluster.node(self.anchor) if self.anchor else self.cluster.bootstrap


def server_url(cluster: Cluster) -> str:
    """Where joining nodes register: ``serverUrl`` or the first server on 9345."""
    if cluster.rke2.server_url:
        return cluster.rke2.server_url
    return supervisor_url(cluster.bootstrap.address)


def api_host(cluster: Cluster) -> str:
    """The host the kubeconfig points at: serverUrl's host or the first server."""
    if cluster.rke2.server_url:
        return urlsplit(cluster.rke2.server_url).hostname or cluster.bootstrap.address
    return cluster.bootstrap.address


def supervisor_url(address: str) -> str:
    """``https://ADDRESS:9345``: where a server takes registrations."""
    return f"https://{host_for_url(address)}:{SUPERVISOR_PORT}"


def host_for_url(address: str) -> str:
    return f"[{address}]" if ":" in address and not address.startswith("[") else address


def remote_path(ctx: Context, art: Artifact) -> str:
    """Where an artifact is staged on a node: ``STAGING/<bundle id>/<path in artifacts/>``."""
    return posixpath.join(ctx.staging, art.path.removeprefix("artifacts/"))
