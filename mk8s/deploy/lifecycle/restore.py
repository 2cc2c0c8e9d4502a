"""The phases of a restore that change the cluster, in RKE2's documented order, and the
whole list (:func:`restore_phases`).

[rancher/rke2-docs docs/datastore/backup_restore.md; docs/upgrades/roll-back.md] Every
node is staged (the bundle, and the snapshot on the first server) before anything
stops. Then: RKE2 stopped on every server (``rke2-killall.sh``) and on each agent that
changes version; the snapshot's RKE2 installed where another runs (fresh hosts, or the
older release of a rollback); ``rke2 server --cluster-reset
--cluster-reset-restore-path`` on the first server, which is then started; each other
server's ``server/db`` moved aside and the server started, one at a time; the agents
restarted; then the API must serve the snapshot's datastore.

Progress goes to the journal as it is made (the reset done, each server rejoined), so
the same command run again after Ctrl-C goes on from there: a server whose rejoin was
cut off is first deleted from the cluster (its etcd member goes with its Node).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mk8s.bundle.format import keys
from mk8s.deploy.builders import plan, units
from mk8s.deploy.cluster import Node
from mk8s.deploy.engine.diagnose import explain
from mk8s.deploy.engine.known import NodeState
from mk8s.deploy.engine.phase import Phase, guarded
from mk8s.deploy.engine.session import Session
from mk8s.deploy.fileupload import FileUpload
from mk8s.deploy.lifecycle import restore_steps as rs
from mk8s.deploy.lifecycle.restore_agents import CheckRestored, Finish, RestartAgents
from mk8s.deploy.lifecycle.restore_checks import (
    CheckSnapshot,
    MatchInputs,
    ProbeRestore,
    RestoreContext,
    RestorePreflight,
    RestoreRun,
    VerifyRestoreBundle,
    mark,
    save_progress,
    stale_node,
    stale_why,
)
from mk8s.deploy.phases.connect import ConnectAll, GatherFacts
from mk8s.deploy.phases.kubeconfig import WriteKubeconfig
from mk8s.deploy.phases.stage import Stage, prepare_order
from mk8s.deploy.steps import Step
from mk8s.errors import Mk8sError


def target(s: Session) -> str:
    return s.known.context.manifest.release.tag


def changes_version(s: Session, node: Node) -> bool:
    """RKE2 of another version is installed on ``node`` (it is stopped, then installed)."""
    tag = s.known.facts[node.name].rke2_tag
    return tag is not None and tag != target(s)


class StageSnapshot(Phase):
    title = "stage the snapshot on the first server (after every node is staged)"

    def __init__(self, run: RestoreRun) -> None:
        self.r = run

    def nodes(self, s: Session) -> Sequence[Node]:
        return [s.cluster.bootstrap]

    def steps(self, s: Session, node: Node) -> list[Step]:
        rec = self.r.record
        dest = rs.remote_snapshot(s.known.context, rec.file)
        if s.known.facts[node.name].hashes.get(dest) == rec.sha256:
            return [Step(node.name, "stage", note="the snapshot is staged already")]
        assert self.r.checked is not None
        up = FileUpload(
            source=self.r.checked.path,
            remote_path=dest,
            sha256=rec.sha256,
            size=rec.size,
            mode=0o600,
            description=f"etcd snapshot {rec.file}",
        )
        place = plan.place_uploads(s.known.context, [up])
        return [
            Step(node.name, "stage", (rs.staged_snapshot_dir(s.known.context, node), up, place))
        ]

    def run(self, s: Session) -> None:
        for node in s.cluster.nodes:
            s.wait_prepared(node)
        failed = [o.node.name for o in s.known.outcomes.values() if o.state == NodeState.FAILED]
        if failed:
            s.known.stop(f"staging failed on {', '.join(failed)}; nothing was stopped")
            return
        super().run(s)
        if s.known.outcomes[s.cluster.bootstrap.name].state == NodeState.FAILED:
            s.known.stop("the snapshot could not be staged; nothing was stopped")


def _parallel_phase(s: Session, phase: Phase, nodes: Sequence[Node], what: str) -> None:
    s.parallel([n for n in nodes if s.known.alive(n)], lambda n: guarded(s, n, phase.run_node))
    failed = [n.name for n in nodes if s.known.outcomes[n.name].state == NodeState.FAILED]
    if failed:
        s.known.stop(f"{what} failed on {', '.join(failed)}; run the same restore again")


class StopNodes(Phase):
    title = "stop RKE2 on every server (and on agents that change version): rke2-killall.sh"

    def __init__(self, run: RestoreRun) -> None:
        self.r = run

    def nodes(self, s: Session) -> Sequence[Node]:
        # After the reset (an earlier run's), the restored cluster's members run on:
        # stopping one could take etcd's quorum from the others.
        members = self.r.members(s.cluster.bootstrap)
        servers = [n for n in s.cluster.servers if n.name not in members]
        agents = [n for n in s.cluster.agents if changes_version(s, n)]
        return [n for n in [*servers, *agents] if s.known.facts[n.name].rke2_tag is not None]

    def steps(self, s: Session, node: Node) -> list[Step]:
        return [Step(node.name, "stop", (rs.killall_command(s.cluster.rke2.prefixes),))]

    def run(self, s: Session) -> None:
        save_progress(s, self.r)  # from here on the cluster changes: a re-run resumes
        s.log(f"stopping RKE2 on {', '.join(n.name for n in self.nodes(s)) or 'no node'}")
        _parallel_phase(s, self, self.nodes(s), "stopping RKE2")


class InstallNodes(Phase):
    title = "install the snapshot's RKE2 where another runs, place its images (in parallel)"

    def nodes(self, s: Session) -> Sequence[Node]:
        return prepare_order(s)

    def steps(self, s: Session, node: Node) -> list[Step]:
        return [
            plan.install_step(s.known.context, node, s.known.facts[node.name], run_install=True)
        ]

    def run(self, s: Session) -> None:
        _parallel_phase(s, self, self.nodes(s), "installing")


class ClusterReset(Phase):
    title = "restore the snapshot on the first server (rke2 server --cluster-reset)"

    def __init__(self, run: RestoreRun) -> None:
        self.r = run

    def nodes(self, s: Session) -> Sequence[Node]:
        return [s.cluster.bootstrap]

    def should_run(self, s: Session) -> bool:
        return not s.known.stop_reason and not self.r.reset_done

    def steps(self, s: Session, node: Node) -> list[Step]:
        f = s.known.facts[node.name]
        config = (
            [rs.config_command(s.known.context, node)]
            if rs.config_changed(s.known.context, node, f.hashes)
            else []
        )
        path = rs.remote_snapshot(s.known.context, self.r.record.file)
        reset = rs.reset_command(s.cluster.rke2.prefixes, path)
        return [Step(node.name, "cluster-reset", (*config, reset))]

    def run_node(self, s: Session, node: Node) -> None:
        super().run_node(s, node)
        self.r.progress["reset"] = True
        self.r.reset_now = True
        save_progress(s, self.r)
        s.log(f"{node.name}: the snapshot is restored; starting it")

    def run(self, s: Session) -> None:
        super().run(s)
        if s.known.outcomes[s.cluster.bootstrap.name].state == NodeState.FAILED:
            s.known.stop("the cluster reset failed on the first server; run the same restore again")


def server_start(s: Session, node: Node, *, skip_start: bool) -> list[Step]:
    """Write config.yaml when it differs, start rke2-server, wait until Ready at the
    snapshot's version."""
    f = s.known.facts[node.name]
    paths = s.cluster.paths(node)
    cmds = []
    if rs.config_changed(s.known.context, node, f.hashes):
        cmds.append(rs.config_command(s.known.context, node))
    if not skip_start:
        cmds.append(rs.start_command(node, paths, s.settings.ready_timeout, restart=False))
    start = Step(node.name, "start", tuple(cmds), note="" if cmds else "rke2-server is up")
    return [start, plan.wait_step(node, s.settings.ready_timeout, target(s), paths=paths)]


def start_and_wait(s: Session, node: Node, steps: list[Step]) -> None:
    try:
        for step in steps:
            if not step.empty:
                s.execute(s.cluster.node(step.node), step)
    except Mk8sError as e:
        raise explain(s.remote, node, e) from e


class StartMembers(Phase):
    title = "resuming: start the restored cluster's members an earlier run left stopped"

    def __init__(self, run: RestoreRun) -> None:
        self.r = run

    def nodes(self, s: Session) -> Sequence[Node]:
        members = self.r.members(s.cluster.bootstrap)
        return [n for n in s.cluster.servers if n.name in members]

    def should_run(self, s: Session) -> bool:
        return not s.known.stop_reason and self.r.resumed_after_reset

    def steps(self, s: Session, node: Node) -> list[Step]:
        """Started together, not waited for one by one: each may need the others for
        etcd's quorum before it is Ready."""
        f = s.known.facts[node.name]
        if f.server_active or f.server_activating:
            return [Step(node.name, "start", note="rke2-server runs")]
        cmd = units.start_command("rke2-server", "start", block=False, timeout=60, pending=None)
        return [Step(node.name, "start", (cmd,))]

    def run(self, s: Session) -> None:
        _parallel_phase(s, self, self.nodes(s), "starting the restored cluster's members")


class StartFirst(Phase):
    title = "start the first server from the restored datastore"

    def __init__(self, run: RestoreRun) -> None:
        self.r = run

    def nodes(self, s: Session) -> Sequence[Node]:
        return [s.cluster.bootstrap]

    def steps(self, s: Session, node: Node) -> list[Step]:
        # An earlier run reset it: StartMembers started it (with its peers) if need be.
        return server_start(s, node, skip_start=self.r.resumed_after_reset)

    def run_node(self, s: Session, node: Node) -> None:
        start_and_wait(s, node, self.steps(s, node))

    def run(self, s: Session) -> None:
        super().run(s)
        if s.known.outcomes[s.cluster.bootstrap.name].state != NodeState.READY:
            s.known.stop("the first server did not come up from the snapshot")


class RejoinServers(Phase):
    title = "the other servers, one at a time: server/db moved aside, started, Ready"

    def __init__(self, run: RestoreRun) -> None:
        self.r = run

    def nodes(self, s: Session) -> Sequence[Node]:
        return plan.order(s.cluster)[1]

    def should_run(self, s: Session) -> bool:
        return not s.known.stop_reason and bool(self.nodes(s))

    def steps(self, s: Session, node: Node) -> list[Step]:
        """Its Node deleted first when it is a new host; ``server/db`` moved aside (not
        on a later try: then the server is half joined and keeps the datastore it
        began, to come back as the etcd member it became; a new datastore would be a
        second member of its node name, which k3s refuses: "duplicate node name
        found"); started; Ready."""
        paths = s.cluster.paths(node)
        if node.name in self.r.listed("rejoined"):
            return [plan.wait_step(node, s.settings.ready_timeout, target(s), paths=paths)]
        first = s.cluster.bootstrap
        before: list[Step] = []
        if stale_node(self.r, node):
            cmd = rs.delete_node_command(node.name, s.cluster.paths(first))
            before.append(Step(first.name, "forget", (cmd,), note=stale_why(node)))
        if node.name not in self.r.listed("attempted"):
            before.append(Step(node.name, "rejoin", (rs.move_db_command(paths),)))
        return [*before, *server_start(s, node, skip_start=False)]

    def retry_steps(self, s: Session, node: Node) -> list[Step]:
        """A server an earlier try left half joined that does not come back as the
        member it became: its datastore goes, and it joins afresh."""
        wipe = Step(node.name, "rejoin", (rs.wipe_db_command(s.cluster.paths(node)),))
        return [wipe, *server_start(s, node, skip_start=False)]

    def run(self, s: Session) -> None:
        for node in self.nodes(s):
            if not s.known.alive(node):
                continue
            # a try cut off before: it may come back only with a new datastore
            again = node.name in self.r.listed("attempted") - self.r.listed("rejoined")
            steps = self.steps(s, node)
            try:
                if node.name not in self.r.listed("rejoined"):
                    s.log(f"{node.name}: rejoining the restored cluster")
                    for step in steps[: len(steps) - 2]:  # its Node, its old datastore
                        s.execute(s.cluster.node(step.node), step)
                    mark(s, self.r, "attempted", node)
                start_and_wait(s, node, steps[-2:])
            except Mk8sError as e:
                if not again:
                    s.fail(node, e)
                else:
                    s.log(f"{node.name}: did not come back as the member it became ({e})")
                    guarded(s, node, lambda s, n: start_and_wait(s, n, self.retry_steps(s, n)))
            if s.known.outcomes[node.name].state != NodeState.READY:
                s.known.stop(f"server {node.name} did not rejoin; run the same restore again")
                return
            mark(s, self.r, "rejoined", node)

    def plan(self, s: Session) -> list[str]:
        lines = super().plan(s)
        for node in self.nodes(s):
            if node.name in self.r.listed("attempted") - self.r.listed("rejoined"):
                lines.append(f"  if {node.name} does not come back as the member it became:")
                for step in self.retry_steps(s, node):
                    lines += [f"    {ln}" for ln in step.describe(node.ssh.user)]
        return lines


def restore_phases(
    snapshot: Path,
    bundle: Path,
    trusted: Sequence[keys.TrustedKey],
    *,
    allow_unsigned: bool = False,
    kubeconfig_out: Path | None = None,
) -> tuple[RestoreRun, list[Phase]]:
    """The restore, in order, and the state its phases share."""
    run = RestoreRun(snapshot)
    return run, [
        CheckSnapshot(run),
        VerifyRestoreBundle(bundle, trusted, allow_unsigned),
        MatchInputs(run),
        ConnectAll(),
        GatherFacts(),
        ProbeRestore(run),
        RestorePreflight(),
        RestoreContext(run),
        Stage(bundle, trusted, allow_unsigned),
        StageSnapshot(run),
        StopNodes(run),
        InstallNodes(),
        ClusterReset(run),
        StartMembers(run),
        StartFirst(run),
        RejoinServers(run),
        RestartAgents(run),
        CheckRestored(run),
        WriteKubeconfig(kubeconfig_out),
        Finish(run),
    ]


__all__ = ["restore_phases"]
