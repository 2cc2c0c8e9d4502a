"""The phases of a rolling upgrade (when the bundle is newer than what nodes run).

Preflight (every node Ready, no downgrade, no skipped minor), an etcd snapshot copied
home, then (after every node has the new artifacts staged and the new image tarballs
placed) the servers one at a time and the agents in batches: cordon, drain, install,
restart, Ready at the new version, uncordon. A node that fails stops the upgrade before
the next node is touched; the same command resumes (upgraded nodes are skipped).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from mk8s.deploy.builders import kubectl, upgradeplan
from mk8s.deploy.cluster import Node
from mk8s.deploy.engine import diagnose
from mk8s.deploy.engine.known import NodeState
from mk8s.deploy.engine.phase import Phase
from mk8s.deploy.engine.session import Session
from mk8s.deploy.lifecycle import index, snapshot
from mk8s.deploy.steps import Step
from mk8s.errors import Mk8sError, PreflightError


def upgrade_plan(s: Session) -> upgradeplan.UpgradePlan:
    """What this run upgrades, computed once from the facts."""
    if s.known.upgrade is None:
        assert s.known.verified is not None
        s.known.upgrade = upgradeplan.plan_upgrade(
            s.cluster, s.known.verified.manifest, s.known.facts
        )
    return s.known.upgrade


def upgrading(s: Session, node: Node) -> bool:
    return node.name in upgrade_plan(s).nodes


class UpgradePreflight(Phase):
    title = "upgrade preflight: every node Ready, no downgrade, no skipped minor"

    def should_run(self, s: Session) -> bool:
        plan = upgrade_plan(s)
        return not s.known.stop_reason and (plan.needed or bool(upgradeplan.refusals(plan)))

    def run(self, s: Session) -> None:
        """PreflightError (nothing changed) for a refusal or a node not Ready."""
        plan = upgrade_plan(s)
        problems = upgradeplan.refusals(plan)
        if not problems:
            first = s.cluster.bootstrap
            cmd = kubectl.nodes_command(s.cluster.paths(first))
            listing = s.remote.run(first, "upgrade", cmd).stdout
            for name, tag in plan.versions.items():
                if tag and not kubectl.node_ready(listing, name)[0]:
                    problems.append(
                        f"{name}: runs {tag} but is not Ready; an upgrade starts only on a"
                        " healthy cluster: fix the node (mk8s status) and run again"
                    )
        if problems:
            raise PreflightError(
                f"upgrade preflight failed on {len(problems)} check(s), nothing was changed: "
                + "; ".join(problems)
            )
        s.log(_summary(s, plan))

    def plan(self, s: Session) -> list[str]:
        plan = upgrade_plan(s)
        problems = upgradeplan.refusals(plan)
        if problems:
            raise PreflightError("the upgrade would be refused: " + "; ".join(problems))
        return [f"  {_summary(s, plan)}", "  every node must be Ready before anything changes"]


def _summary(s: Session, plan: upgradeplan.UpgradePlan) -> str:
    servers = [n for n in s.cluster.servers if n.name in plan.nodes]
    agents = [n for n in s.cluster.agents if n.name in plan.nodes]
    size = s.cluster.options.upgrade.batch_size(len(s.cluster.agents))
    groups = " ".join(
        "[" + ", ".join(n.name for n in b) + "]" for b in upgradeplan.batches(agents, size)
    )
    froms = sorted({plan.versions[n] for n in plan.nodes})
    return (
        f"upgrade from {', '.join(froms)} to {plan.target}: servers one at a time"
        f" ({', '.join(n.name for n in servers) or 'none'}), then agents in batches of"
        f" {size} ({groups or 'none'})"
    )


class Snapshot(Phase):
    title = "etcd snapshot on the first server, copied to .mk8s/<name>/snapshots/"

    def nodes(self, s: Session) -> Sequence[Node]:
        return [s.cluster.bootstrap]

    def should_run(self, s: Session) -> bool:
        # Once the first server runs the new version the snapshot was taken already.
        return not s.known.stop_reason and upgrading(s, s.cluster.bootstrap)

    def steps(self, s: Session, node: Node) -> list[Step]:
        cmd = upgradeplan.snapshot_command(
            s.known.facts[node.name], upgrade_plan(s).target, s.cluster.paths(node)
        )
        ask = kubectl.cluster_id_command(s.cluster.paths(node))  # recorded in the index
        return [Step(node.name, "snapshot", (cmd, ask))]

    def run(self, s: Session) -> None:
        first = s.cluster.bootstrap
        index.check_home(snapshot.snapshots_home(s))  # recordable before it is taken
        cmd = self.steps(s, first)[0].commands[0]
        path = s.remote.run(first, "snapshot", cmd).stdout.strip().splitlines()[-1:]
        if not path or not path[0].startswith(s.cluster.paths(first).snapshot_dir + "/"):
            raise PreflightError(
                f"{first.name}: the etcd snapshot was not found after `rke2 etcd-snapshot"
                f" save`; nothing was upgraded",
                "check `journalctl -u rke2-server` on the first server, then run again",
            )
        # Into the snapshot index, as mk8s backup's are: the rollback of this upgrade is
        # `mk8s restore` of this snapshot with the bundle of the version it records.
        plan = upgrade_plan(s)
        taken = snapshot.Taken(
            name=upgradeplan.snapshot_name(plan.target),
            kind=index.PRE_UPGRADE,
            rke2_version=snapshot.newest([plan.versions[n.name] for n in s.cluster.servers])
            or plan.versions[first.name],
            bundle_id=snapshot.deployed_bundle(s, first),
            token=s.known.context.token.reveal(),
            cluster_id=snapshot.cluster_id(s, first),
        )
        snapshot.copy_home(s, first, path[0], taken)

    def plan(self, s: Session) -> list[str]:
        name = upgradeplan.snapshot_name(upgrade_plan(s).target)
        return [*super().plan(s), f"  copy it to {s.state.path}/snapshots/{name}-... (0600)"]


def _all_prepared(s: Session) -> bool:
    """Every node staged and its new images placed; else the upgrade must not start."""
    for node in s.cluster.nodes:
        s.wait_prepared(node)
    failed = [o.node.name for o in s.known.outcomes.values() if o.state == NodeState.FAILED]
    if failed:
        s.known.stop(f"staging failed on {', '.join(failed)}; no node was restarted")
        return False
    return True


def upgrade_node(s: Session, node: Node) -> None:
    """One node's turn; its cordon, drain and uncordon run where kubectl_node says."""
    steps = upgradeplan.node_steps(
        s.known.context, node, s.known.facts[node.name], ready_timeout=s.settings.ready_timeout
    )
    s.log(f"{node.name}: upgrading to {upgrade_plan(s).target}")
    s.journal.mark_cordoned(node.name, True)
    for step in steps:
        try:
            s.execute(s.cluster.node(step.node), step)
        except Mk8sError as e:
            if step.node == node.name and step.name in ("install", "wait"):
                raise diagnose.explain(s.remote, node, e) from e  # the restart or the wait
            raise
    s.journal.mark_cordoned(node.name, False)


class _UpgradeRole(Phase):
    """The nodes of one role that run an older RKE2, in file order."""

    servers = True

    def nodes(self, s: Session) -> Sequence[Node]:
        role = s.cluster.servers if self.servers else s.cluster.agents
        return [n for n in role if upgrading(s, n)]

    def should_run(self, s: Session) -> bool:
        return not s.known.stop_reason and bool(self.nodes(s))

    def steps(self, s: Session, node: Node) -> list[Step]:
        return upgradeplan.node_steps(
            s.known.context, node, s.known.facts[node.name], ready_timeout=s.settings.ready_timeout
        )


class UpgradeServers(_UpgradeRole):
    title = "upgrade the servers one at a time"

    def run(self, s: Session) -> None:
        if not _all_prepared(s):
            return
        for node in self.nodes(s):
            try:
                upgrade_node(s, node)
            except Mk8sError as e:
                s.fail(node, e)
                s.known.stop(f"the upgrade stopped at {node.name}; run the same command again")
                return


class UpgradeAgents(_UpgradeRole):
    title = "upgrade the agents in batches (options.upgrade.maxUnavailable)"
    servers = False

    def run(self, s: Session) -> None:
        if not _all_prepared(s):
            return
        size = s.cluster.options.upgrade.batch_size(len(s.cluster.agents))
        for batch in upgradeplan.batches(self.nodes(s), size):
            failed = _upgrade_batch(s, batch)
            if failed:
                s.known.stop(
                    f"the upgrade stopped at {', '.join(failed)}; run the same command again"
                )
                return


def _upgrade_batch(s: Session, batch: list[Node]) -> list[str]:
    """Upgrade ``batch`` in parallel; return the names of the nodes that failed."""
    failed: list[str] = []
    lock = threading.Lock()

    def one(node: Node) -> None:
        try:
            upgrade_node(s, node)
        except Mk8sError as e:
            s.fail(node, e)
            with lock:
                failed.append(node.name)

    s.parallel(batch, one)
    return failed


class UncordonLeftovers(Phase):
    title = "uncordon nodes an interrupted upgrade left cordoned"

    def nodes(self, s: Session) -> Sequence[Node]:
        left = s.journal.cordoned()
        return [
            n
            for n in s.cluster.nodes
            if n.name in left and s.known.outcomes[n.name].state == NodeState.READY
        ]

    def should_run(self, s: Session) -> bool:
        return not s.dry_run and bool(self.nodes(s))

    def run(self, s: Session) -> None:
        for node in self.nodes(s):
            where = upgradeplan.kubectl_node(s.cluster, node)
            try:
                cmd = upgradeplan.uncordon_command(node.name, s.cluster.paths(where))
                s.remote.run(where, "uncordon", cmd)
            except Mk8sError as e:
                s.fail(node, e)
                continue
            s.journal.mark_cordoned(node.name, False)
