"""RKE2's config.yaml keys as mk8s understands them (pure; no I/O).

* The layers a node's config comes from (:func:`layered_config`, which
  :meth:`mk8s.deploy.cluster.Cluster.user_config` feeds): ``spec.rke2.config``, then
  ``serverConfig``/``agentConfig``, then the node's own ``config``. Server-only keys
  given for every node reach the servers only.
* The paths RKE2 options move (:class:`NodePaths`): ``data-dir``, ``write-kubeconfig``,
  ``private-registry`` and ``etcd-snapshot-dir`` (rancher/rke2-docs
  docs/reference/server_config.md). mk8s reads and writes every one of them where the
  node's config puts them: facts, staging of ``agent/images`` and
  ``server/manifests``, kubectl and the kubeconfig, registries.yaml, snapshots, reset.
* What a cluster file may not say (:func:`config_problems`): keys mk8s manages, a
  path that is not a plain absolute path, a server-only key in an agent-only block.
* Node names (:func:`node_name_problem`): k3s lower-cases the node name
  (k3s-io/k3s pkg/util/net.go ``GetHostnameAndIPs``) and Kubernetes accepts only RFC
  1123 subdomains, so mk8s uses the lower-cased name and refuses any other.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mk8s.untrusted import shown

CONFIG_DIR = "/etc/rancher/rke2"
CONFIG_PATH = f"{CONFIG_DIR}/config.yaml"
DEFAULT_DATA_DIR = "/var/lib/rancher/rke2"
DEFAULT_KUBECONFIG = f"{CONFIG_DIR}/rke2.yaml"
DEFAULT_REGISTRIES = f"{CONFIG_DIR}/registries.yaml"

# mk8s writes these config.yaml keys itself; a user value would silently fight it.
MANAGED_CONFIG_KEYS = (
    "server",
    "token",
    "token-file",
    "agent-token",
    "agent-token-file",
    "node-name",
)
# Options that move a path mk8s reads or writes (rke2-docs reference/server_config.md).
PATH_KEYS = ("data-dir", "write-kubeconfig", "private-registry", "etcd-snapshot-dir")
# Server options an agent ignores. rancher/rke2 pkg/cli/cmds/agent.go: the agent's
# system-default-registry flag is deprecated and "no longer supported on agents"; an
# agent uses the registry its server hands out.
SERVER_ONLY_KEYS = ("system-default-registry",)
# RKE2's CNI when config.yaml names none (rke2-docs reference/server_config.md: cni).
RKE2_DEFAULT_CNI = "canal"
_SAFE_PATH = re.compile(r"(/[A-Za-z0-9_-][A-Za-z0-9._-]*)+/?")


@dataclass(frozen=True)
class NodePaths:
    """Where RKE2 keeps what mk8s reads and writes on one node."""

    data_dir: str = DEFAULT_DATA_DIR
    kubeconfig: str = DEFAULT_KUBECONFIG
    registries: str = DEFAULT_REGISTRIES
    etcd_snapshot_dir: str = ""  # "": DATA_DIR/server/db/snapshots

    @property
    def images_dir(self) -> str:
        return f"{self.data_dir}/agent/images"

    @property
    def manifests_dir(self) -> str:
        """RKE2 applies every manifest here (and helm-controller its HelmCharts)."""
        return f"{self.data_dir}/server/manifests"

    @property
    def node_token(self) -> str:
        return f"{self.data_dir}/server/node-token"

    @property
    def kubectl(self) -> str:
        return f"{self.data_dir}/bin/kubectl"

    @property
    def db_dir(self) -> str:
        """The server's datastore (etcd): present once the server bootstrapped or joined."""
        return f"{self.data_dir}/server/db"

    @property
    def snapshot_dir(self) -> str:
        return self.etcd_snapshot_dir or f"{self.db_dir}/snapshots"

    # mk8s's own records (mk8s.deploy.builders.restart), gone with RKE2's data at uninstall.
    @property
    def restart_pending(self) -> str:
        """The start-only inputs a run changed before it could restart RKE2."""
        return f"{self.data_dir}/mk8s/restart-pending"

    @property
    def placed_images(self) -> str:
        """Per image archive mk8s placed in agent/images, a file NAME with its sha256."""
        return f"{self.data_dir}/mk8s/images"


DEFAULT_PATHS = NodePaths()


def plain(value: Any) -> Any:
    """Read-only mappings from the cluster model as plain dicts/lists for YAML."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def layered_config(
    shared: Mapping[str, Any],
    role: Mapping[str, Any],
    own: Mapping[str, Any],
    *,
    server: bool,
) -> dict[str, Any]:
    """A node's config.yaml as cluster.yaml gives it, before mk8s adds its own keys:
    the cluster's config, its role's, then its own (later layers win). A server-only
    key in the cluster's config reaches servers only."""
    common = plain(shared)
    if not server:
        common = {k: v for k, v in common.items() if k not in SERVER_ONLY_KEYS}
    config: dict[str, Any] = {}
    for layer in (common, plain(role), plain(own)):
        config.update(layer)
    return config


def _path(config: Mapping[str, Any], key: str, default: str) -> str:
    value = config.get(key)
    if not isinstance(value, str) or not value:
        return default
    return value.rstrip("/") or "/"


def paths_of(config: Mapping[str, Any], *, server: bool) -> NodePaths:
    """The paths a node with this config.yaml uses (agents write no kubeconfig and keep
    no snapshots)."""
    return NodePaths(
        data_dir=_path(config, "data-dir", DEFAULT_DATA_DIR),
        kubeconfig=_path(config, "write-kubeconfig", DEFAULT_KUBECONFIG)
        if server
        else DEFAULT_KUBECONFIG,
        registries=_path(config, "private-registry", DEFAULT_REGISTRIES),
        etcd_snapshot_dir=_path(config, "etcd-snapshot-dir", "") if server else "",
    )


# --------------------------------------------------------------------- validation


def config_problems(config: Mapping[str, Any], *, agents_only: bool) -> list[tuple[str, str, str]]:
    """(key, problem, fix) for every key of one config block mk8s cannot take.

    ``agents_only``: the block reaches agents only (``agentConfig``, an agent's
    ``config``)."""
    found: list[tuple[str, str, str]] = []
    for key in MANAGED_CONFIG_KEYS:
        if key in config:
            if key == "server":
                fix = "remove it; set spec.rke2.serverUrl for a fixed registration address"
            elif key == "node-name":
                fix = "remove it; mk8s sets node-name to the node's name in spec.nodes"
            else:
                fix = "remove it; set spec.rke2.token.file to choose the token"
            found.append((key, f"{key!r} is managed by mk8s", fix))
    for key in PATH_KEYS:
        if key not in config:
            continue
        value = config[key]
        ok = isinstance(value, str) and bool(_SAFE_PATH.fullmatch(value)) and len(value) <= 200
        if ok and not re.search(r"(^|/)\.\.?(/|$)", str(value)) and str(value).strip("/"):
            continue
        found.append(
            (
                key,
                f"{key} must be an absolute path of letters, digits and . _ - /"
                f" (got {shown(repr(value), limit=80)})",
                "give a plain absolute path such as /data/rke2; mk8s uses it on the node",
            )
        )
    if agents_only:
        for key in SERVER_ONLY_KEYS:
            if key in config:
                found.append(
                    (
                        key,
                        f"{key} is a server option: RKE2 agents ignore it (rancher/rke2"
                        " pkg/cli/cmds/agent.go) and use the one their server hands out",
                        "move it to spec.rke2.serverConfig (or spec.rke2.config, which mk8s"
                        " writes to the servers only for this key)",
                    )
                )
    return found


# RFC 1123 subdomain, as Kubernetes validates a Node's name (at most 253 characters).
_RFC1123 = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def registered_name(name: str) -> str:
    """The name RKE2 registers for ``node-name: name``: k3s lower-cases it."""
    return name.lower()


def node_name_problem(name: str) -> str | None:
    """Why Kubernetes would refuse ``name`` (already lower-cased) as a node name."""
    if len(name) <= 253 and _RFC1123.fullmatch(name):
        return None
    return (
        f"{name!r} is not a valid Kubernetes node name (an RFC 1123 subdomain: lower-case"
        " letters, digits, '-' and '.', starting and ending with a letter or digit, at most"
        " 253 characters); RKE2 would never register it"
    )


def suggest_name(name: str) -> str:
    """A valid node name close to ``name`` (for the fix in a message)."""
    s = re.sub(r"[^a-z0-9.-]+", "-", name.lower())
    s = re.sub(r"\.{2,}", ".", s)
    s = ".".join(p.strip("-") for p in s.split(".") if p.strip("-"))
    return s[:253].strip(".-") or "node-1"
