"""Day-2 read-only phases: what each node runs and whether it is Ready; the kubeconfig."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mk8s.deploy.builders import facts, kubectl, plan
from mk8s.deploy.cluster import Cluster, Node
from mk8s.deploy.engine.known import NodeStatus
from mk8s.deploy.engine.phase import Phase
from mk8s.deploy.engine.session import Session
from mk8s.deploy.phases.kubeconfig import write_kubeconfig
from mk8s.errors import DeployError, Mk8sError


def image_source(cluster: Cluster, node: Node) -> str:
    images = cluster.images
    if images.local_tarballs(node):
        return "tarballs"
    if images.distribution == "servers":
        return "peers"
    return f"registry {images.registry.host}" if images.registry else "registry"


def statuses(s: Session) -> dict[str, NodeStatus]:
    """The status rows of this run, one per node (made once, filled by the phases)."""
    if not s.known.statuses:
        s.known.statuses = {
            n.name: NodeStatus(n, images=image_source(s.cluster, n)) for n in s.cluster.nodes
        }
    return s.known.statuses


class ConnectReachable(Phase):
    title = "connect to the nodes that answer"
    pipelined = True  # each node is probed as soon as it is connected (docs/scale.md)

    def __init__(self, nodes: Sequence[Node] | None = None) -> None:
        self._nodes = nodes

    def nodes(self, s: Session) -> Sequence[Node]:
        return self._nodes if self._nodes is not None else s.cluster.nodes

    def begin(self, s: Session) -> None:
        statuses(s)  # made once, before the workers fill it

    def run_node(self, s: Session, node: Node) -> None:
        try:
            s.remote.open(node)
        except Mk8sError as e:
            statuses(s)[node.name].error = str(e)


class ProbeNodes(Phase):
    title = "read what each node runs"
    pipelined = True

    def nodes(self, s: Session) -> Sequence[Node]:
        return s.cluster.nodes

    def run_node(self, s: Session, node: Node) -> None:
        if not s.remote.connected(node):
            return  # ConnectReachable noted why
        st = statuses(s)[node.name]
        st.reachable = True
        try:
            cmd = facts.gather("/nonexistent", s.cluster.rke2.prefixes, s.cluster.paths(node))
            f = facts.parse_gathered(s.remote.run(node, "status", cmd).stdout)
        except Mk8sError as e:
            st.error = str(e)
            return
        st.version = f.rke2_tag or ""
        st.placed = tuple(sorted(p.rsplit("/", 1)[-1] for p in f.placed))
        active = f.server_active if node.is_server else f.agent_active
        st.service = f"{plan.service(node)} {'active' if active else 'inactive'}"


class AskReadiness(Phase):
    title = "ask a server which nodes are Ready"

    def run(self, s: Session) -> None:
        listing = ask_any_server(s)
        if listing is None:
            return
        for st in statuses(s).values():
            st.ready, version = kubectl.node_ready(listing, st.node.name)
            note_running(st, version)


def note_running(st: NodeStatus, running: str) -> None:
    """The version a node runs is what its running RKE2 reports; a different binary on
    disk (an upgrade interrupted before the restart) is said as such."""
    installed = st.version
    if running and st.service.endswith(" active"):
        st.version = running
        if installed and installed != running and not st.error:
            st.error = (
                f"{installed} is installed but {running} still runs (an upgrade stopped"
                f" before the restart): run mk8s deploy with the {installed} bundle"
            )
    st.version = st.version or running


def ask_any_server(s: Session) -> str | None:
    """``kubectl get nodes -o json`` from the first server that answers, or None."""
    for node in s.cluster.servers:
        if not s.remote.connected(node):
            continue
        try:
            r = s.remote.run(node, "status", kubectl.nodes_command(s.cluster.paths(node)))
        except Mk8sError:
            continue
        if r.exit_code == 0:
            return r.stdout
    return None


class FetchKubeconfig(Phase):
    title = "fetch the admin kubeconfig from a server"

    def __init__(self, out: Path | None) -> None:
        self.out = out

    def run(self, s: Session) -> None:
        errors: list[str] = []
        for node in s.cluster.servers:
            failed = s.connect_nodes([node])
            if failed:
                errors.append(failed[node.name])
                continue
            try:
                cmd = kubectl.kubeconfig_command(s.cluster.paths(node))
                text = s.remote.run(node, "kubeconfig", cmd).stdout
            except Mk8sError as e:
                errors.append(str(e))
                continue
            s.known.kubeconfig = write_kubeconfig(text, s.cluster, self.out)
            return
        raise DeployError(
            "no server could give the kubeconfig: " + "; ".join(errors),
            "check that the cluster is deployed (mk8s status)",
        )


__all__ = [
    "AskReadiness",
    "ConnectReachable",
    "FetchKubeconfig",
    "NodeStatus",
    "ProbeNodes",
    "ask_any_server",
]
