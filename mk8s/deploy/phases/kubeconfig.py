"""Fetch the admin kubeconfig from the first server, pointed at the cluster's address."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mk8s.deploy.builders import kubectl, plan
from mk8s.deploy.builders.context import API_PORT, host_for_url
from mk8s.deploy.builders.nodeconfig import sha256_hex
from mk8s.deploy.cluster import Cluster, Node
from mk8s.deploy.engine.known import NodeState
from mk8s.deploy.engine.phase import Phase
from mk8s.deploy.engine.session import Session
from mk8s.deploy.steps import Step
from mk8s.errors import Mk8sError
from mk8s.files import atomic_write, read_regular


def kubeconfig_path(cluster: Cluster, out: Path | None) -> Path:
    return out or Path.cwd() / f"{cluster.name}.kubeconfig"


def write_kubeconfig(text: str, cluster: Cluster, out: Path | None) -> Path:
    """RKE2's rke2.yaml with ``server:`` at the cluster's API address, written 0600."""
    target = kubeconfig_path(cluster, out)
    atomic_write(
        target, kubectl.rewrite_kubeconfig(text, plan.api_host(cluster)).encode(), mode=0o600
    )
    return target


class WriteKubeconfig(Phase):
    title = "write the admin kubeconfig"

    def __init__(self, out: Path | None = None) -> None:
        self.out = out

    def nodes(self, s: Session) -> Sequence[Node]:
        # A server of the running cluster: the first server, or (when it rejoins) the
        # live member it joined.
        return [s.known.context.anchor_node]

    def should_run(self, s: Session) -> bool:
        # Also after a later server failed: the cluster the first server runs is usable.
        return s.dry_run or s.known.outcomes[s.cluster.bootstrap.name].state == NodeState.READY

    def steps(self, s: Session, node: Node) -> list[Step]:
        cmd = kubectl.kubeconfig_command(s.cluster.paths(node))
        return [Step(node.name, "kubeconfig", (cmd,))]

    def run(self, s: Session) -> None:
        node = s.known.context.anchor_node
        target = kubeconfig_path(s.cluster, self.out)
        if node.name in s.known.converged and _unchanged(s, node, target):
            s.known.kubeconfig = target  # the server's file and ours as the last run left them
            return
        cmd = kubectl.kubeconfig_command(s.cluster.paths(node))
        text = s.remote.run(node, "kubeconfig", cmd).stdout
        s.known.kubeconfig = write_kubeconfig(text, s.cluster, self.out)
        s.journal.put(JOURNAL_KEY, _record(s, target, sha256_hex(text.encode())))

    def plan(self, s: Session) -> list[str]:
        target = kubeconfig_path(s.cluster, self.out)
        url = f"https://{host_for_url(plan.api_host(s.cluster))}:{API_PORT}"
        return [*super().plan(s), f"  write {target.name} (0600) pointing at {url}"]


JOURNAL_KEY = "kubeconfig"  # what the last run fetched, and what it wrote where


def _record(s: Session, target: Path, source: str) -> dict[str, str]:
    return {
        "path": str(target),
        "host": plan.api_host(s.cluster),
        "source": source,
        "sha256": _local_sha256(target),
    }


def _local_sha256(target: Path) -> str:
    """The sha256 of the kubeconfig file here ("" when it is missing or not a file)."""
    try:
        return sha256_hex(read_regular(target, what="kubeconfig", max_size=1 << 20))
    except Mk8sError:
        return ""


def _unchanged(s: Session, node: Node, target: Path) -> bool:
    """Whether the server's admin kubeconfig (by the hash in its facts) is the one the
    last run fetched and ``target`` still holds what that run wrote from it: then there
    is nothing to fetch (a converged run sends the server nothing more)."""
    source = s.known.facts[node.name].hashes.get(s.cluster.paths(node).kubeconfig)
    last = s.journal.read().get(JOURNAL_KEY)
    if not source or not isinstance(last, dict) or last.get("source") != source:
        return False
    return last == _record(s, target, source)
