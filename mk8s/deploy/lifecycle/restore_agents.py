"""The end of a restore: the agents restarted (in parallel, then waited for together),
the restored API checked (it must serve the snapshot's datastore, every node at the
snapshot's RKE2), and the snapshot copy removed from the first server.

[rancher/rke2-docs docs/datastore/backup_restore.md: after the servers, "Agents ... can
be started normally"; "Node resources are also included in the etcd snapshot. If
restoring to a new set of nodes, you will need to manually delete any old nodes that
are no longer present in the cluster": mk8s names them and leaves them alone.]
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence

from mk8s import ui
from mk8s.deploy.builders import kubectl, plan
from mk8s.deploy.cluster import Node
from mk8s.deploy.engine.diagnose import explain
from mk8s.deploy.engine.known import NodeState
from mk8s.deploy.engine.phase import Phase, guarded
from mk8s.deploy.engine.readiness import wait_all_ready
from mk8s.deploy.engine.session import Session
from mk8s.deploy.lifecycle import index, snapshot
from mk8s.deploy.lifecycle import restore_steps as rs
from mk8s.deploy.lifecycle.restore_checks import RestoreRun, stale_node, stale_why
from mk8s.deploy.phases.agents import confirm_active
from mk8s.deploy.steps import Step
from mk8s.errors import DeployError, Mk8sError


def _target(s: Session) -> str:
    return s.known.context.manifest.release.tag


class RestartAgents(Phase):
    title = "restart the agents (in parallel), each Ready at the snapshot's version"

    def __init__(self, run: RestoreRun) -> None:
        self.r = run

    def nodes(self, s: Session) -> Sequence[Node]:
        return s.cluster.agents

    def should_run(self, s: Session) -> bool:
        return not s.known.stop_reason and bool(self.nodes(s))

    def steps(self, s: Session, node: Node) -> list[Step]:
        first = s.cluster.bootstrap
        paths = s.cluster.paths(node)
        out: list[Step] = []
        if stale_node(self.r, node):
            cmd = rs.delete_node_command(node.name, s.cluster.paths(first))
            out.append(Step(first.name, "forget", (cmd,), note=stale_why(node)))
        cmds = []
        if rs.config_changed(s.known.context, node, s.known.facts[node.name].hashes):
            cmds.append(rs.config_command(s.known.context, node))
        cmds.append(rs.start_command(node, paths, s.settings.ready_timeout, restart=True))
        out.append(Step(node.name, "restart", tuple(cmds)))
        out.append(plan.wait_step(node, s.settings.ready_timeout, _target(s), paths=paths))
        return out

    def run(self, s: Session) -> None:
        launched: list[Node] = []
        lock = threading.Lock()

        def launch(s: Session, node: Node) -> None:
            for step in self.steps(s, node)[:-1]:  # the wait is shared, below
                s.execute(s.cluster.node(step.node), step)
            with lock:
                launched.append(node)

        nodes = [n for n in self.nodes(s) if s.known.alive(n)]
        s.parallel(nodes, lambda n: guarded(s, n, launch))
        deadline = time.monotonic() + s.settings.ready_timeout
        results = wait_all_ready(s.poller(), launched, s.settings.ready_timeout)
        listed = [s.cluster.node(n) for n, r in results.items() if not isinstance(r, Mk8sError)]
        results.update(confirm_active(s, listed, deadline))
        for name, result in results.items():
            node = s.cluster.node(name)
            if isinstance(result, Mk8sError):
                s.fail(node, explain(s.remote, node, result))
            else:
                s.mark_ready(node, result)


def node_names(listing: str) -> list[str]:
    try:
        items = json.loads(listing).get("items", [])
    except (ValueError, AttributeError):
        return []
    names = [i.get("metadata", {}).get("name") for i in items if isinstance(i, dict)]
    return [str(n) for n in names if isinstance(n, str)]


class CheckRestored(Phase):
    title = "check that the API serves the snapshot's datastore, every node at its version"

    def __init__(self, run: RestoreRun) -> None:
        self.r = run

    def nodes(self, s: Session) -> Sequence[Node]:
        return [s.cluster.bootstrap]

    def should_run(self, s: Session) -> bool:
        return s.dry_run or s.known.outcomes[s.cluster.bootstrap.name].state == NodeState.READY

    def steps(self, s: Session, node: Node) -> list[Step]:
        paths = s.cluster.paths(node)
        cmds = (kubectl.cluster_id_command(paths), kubectl.nodes_command(paths))
        return [Step(node.name, "check", cmds)]

    def run(self, s: Session) -> None:
        """DeployError when the API serves another datastore or a node another RKE2."""
        first = s.cluster.bootstrap
        ask_id, ask_nodes = self.steps(s, first)[0].commands
        found = snapshot.parse_cluster_id(s.remote.run(first, "check", ask_id).stdout)
        want = self.r.record.cluster_id
        if want and found != want:
            raise DeployError(
                f"the restored API serves kube-system uid {found or 'none'}, not the"
                f" snapshot's {want}: it does not serve the snapshot's datastore",
                "look at `journalctl -u rke2-server` on the first server, then run the"
                " same restore again",
            )
        listing = s.remote.run(first, "check", ask_nodes).stdout
        wrong = [
            f"{n.name} runs {v or 'unknown'}"
            for n in s.cluster.nodes
            if s.known.outcomes[n.name].state == NodeState.READY
            and (v := kubectl.node_ready(listing, n.name)[1]) != _target(s)
        ]
        if wrong:
            raise DeployError(
                f"after the restore {', '.join(wrong)}, not {_target(s)}",
                "run the same restore again",
            )
        known = {n.name for n in s.cluster.nodes}
        extra = [n for n in node_names(listing) if n not in known]
        if extra:
            ui.warn(
                f"the snapshot holds nodes that are not in cluster.yaml: {', '.join(extra)};"
                " once they are gone for good, delete them (kubectl delete node NAME)"
            )

    def plan(self, s: Session) -> list[str]:
        want = self.r.record.cluster_id
        head = [f"  the kube-system uid must be the snapshot's ({want})"] if want else []
        return head + super().plan(s)


class Finish(Phase):
    title = "remove the snapshot copy from the first server; the restore is done"

    def __init__(self, run: RestoreRun) -> None:
        self.r = run

    def nodes(self, s: Session) -> Sequence[Node]:
        return [s.cluster.bootstrap]

    def should_run(self, s: Session) -> bool:
        done = all(o.state == NodeState.READY for o in s.known.outcomes.values())
        return s.dry_run or (not s.known.stop_reason and done)

    def steps(self, s: Session, node: Node) -> list[Step]:
        path = rs.remote_snapshot(s.known.context, self.r.record.file)
        return [Step(node.name, "finish", (rs.remove_snapshot_command(path),))]

    def run(self, s: Session) -> None:
        first = s.cluster.bootstrap
        try:
            super().run_node(s, first)
        except Mk8sError as e:  # the cluster is restored: only a copy is left behind
            ui.warn(f"{first.name}: the snapshot copy was not removed: {e}")
        rec = self.r.record
        s.journal.read().pop("restore", None)
        s.journal.put("restored", {"file": rec.file, "sha256": rec.sha256, "at": index.utc_now()})


__all__ = ["CheckRestored", "Finish", "RestartAgents", "node_names"]
