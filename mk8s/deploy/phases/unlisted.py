"""After a deploy: name the cluster's nodes that cluster.yaml does not list.

A node taken out of cluster.yaml is not taken out of the cluster: it still runs, and a
server still holds an etcd member (rancher/rke2-docs docs/install/ha.md). Deploy leaves
such nodes alone (removing one is ``mk8s reset --node`` while it is still listed, which
checks etcd quorum first) and says which they are, so a forgotten server is not a
surprise at the next quorum count.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from mk8s.deploy.builders import kubectl, quorum
from mk8s.deploy.cluster import Node
from mk8s.deploy.engine.known import NodeState
from mk8s.deploy.engine.phase import Phase
from mk8s.deploy.engine.session import Session
from mk8s.deploy.steps import Step
from mk8s.errors import Mk8sError
from mk8s.untrusted import shown_list


def unlisted(nodes_json: str, listed: Sequence[str]) -> list[tuple[str, bool]]:
    """(name, is an etcd member) of each node in ``kubectl get nodes -o json`` that is
    not in ``listed``, sorted; [] for anything unreadable."""
    try:
        data = json.loads(nodes_json)
    except ValueError:
        return []
    items = data.get("items", []) if isinstance(data, dict) else []
    names = sorted(
        str(i["metadata"]["name"])
        for i in (items if isinstance(items, list) else [])
        if isinstance(i, dict) and isinstance(i.get("metadata"), dict) and i["metadata"].get("name")
    )
    members = quorum.etcd_members(nodes_json)
    return [(n, n in members) for n in names if n not in set(listed)]


def warning(found: list[tuple[str, bool]]) -> str:
    shown = [f"{n} (server, etcd member)" if m else n for n, m in found]
    return (
        f"warning: the cluster has {len(found)} node(s) that cluster.yaml does not list,"
        f" left alone: {shown_list(shown)}; to manage one, add it back to cluster.yaml (to"
        " take it out: add it, then mk8s reset --node NAME --yes)"
    )


class NameUnlisted(Phase):
    title = "name the cluster's nodes that cluster.yaml does not list (read-only)"

    def nodes(self, s: Session) -> Sequence[Node]:
        return [s.known.context.anchor_node]

    def should_run(self, s: Session) -> bool:
        return (
            s.dry_run or s.known.outcomes[s.known.context.anchor_node.name].state == NodeState.READY
        )

    def steps(self, s: Session, node: Node) -> list[Step]:
        return [Step(node.name, "unlisted", (kubectl.nodes_command(s.cluster.paths(node)),))]

    def run(self, s: Session) -> None:
        names = {n.name for n in s.cluster.nodes}
        if s.known.listed:
            # The node list gathered with the facts: a deploy adds only nodes
            # cluster.yaml lists, so it names the same unlisted nodes, and a converged
            # run sends the first server nothing more (docs/scale.md).
            found = [(n, x.etcd) for n, x in sorted(s.known.listed.items()) if n not in names]
        else:
            node = s.known.context.anchor_node
            try:
                r = s.remote.run(node, "unlisted", self.steps(s, node)[0].commands[0])
            except Mk8sError:
                return  # read-only courtesy: the deploy's own result stands
            found = unlisted(r.stdout, sorted(names)) if r.exit_code == 0 else []
        if found:
            s.log(warning(found))


__all__ = ["NameUnlisted", "unlisted", "warning"]
