"""Commands and answers of RKE2's own tools on a node: kubectl, the uninstall script,
the admin kubeconfig (pure: commands as values, parsing of their output). Each takes
the node's :class:`~mk8s.deploy.rke2config.NodePaths`: kubectl lives in
``DATA_DIR/bin`` and the admin kubeconfig where ``write-kubeconfig`` puts it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from mk8s.deploy.builders.context import API_PORT, host_for_url
from mk8s.deploy.builders.facts import DEFAULT_PREFIXES
from mk8s.deploy.builders.quorum import ETCD_ROLE
from mk8s.deploy.command import Command
from mk8s.deploy.rke2config import DEFAULT_DATA_DIR, NodePaths


def _kubectl(paths: NodePaths, *args: str, timeout: int = 30, description: str) -> Command:
    """RKE2's kubectl with the admin kubeconfig, as root; its exit code is the caller's
    to judge (``check=False``)."""
    return Command.argv(
        paths.kubectl,
        "--kubeconfig",
        paths.kubeconfig,
        *args,
        sudo=True,
        check=False,
        timeout=timeout,
        description=description,
    )


def readyz_command(paths: NodePaths) -> Command:
    return _kubectl(paths, "get", "--raw", "/readyz", description="API server /readyz")


def nodes_command(paths: NodePaths) -> Command:
    return _kubectl(paths, "get", "nodes", "-o", "json", description="list nodes")


def cluster_id_command(paths: NodePaths) -> Command:
    """The ``kube-system`` namespace as the API serves it: its uid names the datastore."""
    return _kubectl(
        paths,
        "get",
        "--raw",
        "/api/v1/namespaces/kube-system",
        description="the kube-system namespace's uid (which datastore the API serves)",
    )


def kubeconfig_command(paths: NodePaths) -> Command:
    return Command.argv(
        "cat", paths.kubeconfig, sudo=True, timeout=30, description="read the admin kubeconfig"
    )


def uninstall_command(paths: NodePaths, prefixes: Sequence[str] = DEFAULT_PREFIXES) -> Command:
    """RKE2's own uninstall script, from whichever prefix install.sh used. The script
    removes ``RKE2_DATA_DIR`` (default /var/lib/rancher/rke2; it does not read
    config.yaml: rancher/rke2 bundle/bin/rke2-uninstall.sh), so a moved data-dir is
    passed to it."""
    env = "" if paths.data_dir == DEFAULT_DATA_DIR else "RKE2_DATA_DIR={data} "
    return Command.script(
        'prefixes={prefixes}; for p in $prefixes; do if [ -x "$p/bin/rke2-uninstall.sh" ]; then '
        + env
        + "exec \"$p/bin/rke2-uninstall.sh\"; fi; done; echo 'RKE2 is not installed'",
        {"prefixes": " ".join(prefixes), **({"data": paths.data_dir} if env else {})},
        sudo=True,
        timeout=600,
        description="uninstall RKE2 (rke2-uninstall.sh)",
    )


def delete_node_command(name: str, paths: NodePaths) -> Command:
    return _kubectl(
        paths,
        "delete",
        "node",
        name,
        "--ignore-not-found",
        # a server's Node goes once RKE2 removed its etcd member (a finalizer): kubectl
        # waits for that, a week by default (kubectl pkg/cmd/delete/delete.go)
        "--timeout=60s",
        timeout=120,
        description=f"remove node {name} from the cluster",
    )


def rewrite_kubeconfig(text: str, host: str) -> str:
    """Point RKE2's admin kubeconfig (server https://127.0.0.1:6443) at ``host``."""
    target = f"https://{host_for_url(host)}:{API_PORT}"
    out = []
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if stripped.startswith("server:"):
            indent = line[: len(line) - len(line.lstrip())]
            line = f"{indent}server: {target}\n"
        out.append(line)
    return "".join(out)


def node_ready(nodes_json: str, name: str) -> tuple[bool, str]:
    """(Ready?, kubelet version) of node ``name`` in ``kubectl get nodes -o json``;
    (False, "") for anything unreadable."""
    ready, version, _ = node_status(nodes_json, name)
    return ready, version


def node_status(nodes_json: str, name: str) -> tuple[bool, str, str]:
    """(Ready?, kubelet version, the Ready condition's message) of node ``name``;
    (False, "", "") for anything unreadable or a node not listed."""
    s = listed_nodes(nodes_json).get(name)
    return (s.ready, s.version, s.why) if s else (False, "", "")


@dataclass(frozen=True)
class Listed:
    """One node as the cluster lists it: Ready?, its kubelet version, the Ready
    condition's message, and whether it is an etcd member (a server; its label, see
    :mod:`~mk8s.deploy.builders.quorum`)."""

    ready: bool
    version: str
    why: str = ""
    etcd: bool = False


def listed_nodes(nodes_json: str) -> dict[str, Listed]:
    """Every node of ``kubectl get nodes -o json``, read once (a poll answers for all
    the nodes waiting with one parse); a node without a Ready condition is not Ready,
    at no version; empty for anything unreadable."""
    try:
        data = json.loads(nodes_json)
    except ValueError:
        return {}
    items = data.get("items", []) if isinstance(data, dict) else []
    out: dict[str, Listed] = {}
    for item in items if isinstance(items, list) else []:
        meta = item.get("metadata") if isinstance(item, dict) else None
        name = meta.get("name") if isinstance(meta, dict) else None
        if not isinstance(name, str) or not name or out.get(name, Listed(False, "")).version:
            continue
        labels = meta.get("labels") if isinstance(meta, dict) else None
        etcd = isinstance(labels, dict) and labels.get(ETCD_ROLE) == "true"
        out[name] = _condition(item.get("status"), etcd)
    return out


def _condition(status: object, etcd: bool) -> Listed:
    status = status if isinstance(status, dict) else {}
    info = status.get("nodeInfo", {})
    version = str(info.get("kubeletVersion", "")) if isinstance(info, dict) else ""
    conds = status.get("conditions", [])
    for cond in conds if isinstance(conds, list) else []:
        if isinstance(cond, dict) and cond.get("type") == "Ready":
            why = str(cond.get("message", ""))
            return Listed(cond.get("status") == "True", version, why, etcd)
    return Listed(False, "", "", etcd)
