"""The phases of ``mk8s certs`` (read every node's certificates) and ``mk8s certs rotate``.

Rotation follows rancher/rke2-docs docs/security/certificates.md ("Rotating Client and
Server Certificates Manually"): on each server stop rke2-server, ``rke2 certificate
rotate``, start it; then the agents restart, since an agent gets new kubelet
certificates from its server at every start (k3s-io/k3s pkg/agent/config/config.go
``get``). The servers go one at a time while the cluster serves; when it does not
(every server down, or certificates that expired while it was powered off), each server
is stopped and rotated, then all start at once: a lone restarted member would wait for
an etcd quorum its stopped or expired peers cannot give (see
:func:`mk8s.deploy.builders.certfiles.plan_rotation`). The agents go in batches of
``options.upgrade.maxUnavailable``, each batch Ready before the next.

A dry run reads the nodes (read-only: facts and certificates; which way the servers go
depends on them) and prints the plan from the same steps the real run executes.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass, field

from mk8s.deploy.builders import certfiles as certs
from mk8s.deploy.builders import facts, kubectl, plan
from mk8s.deploy.builders.units import start_command
from mk8s.deploy.cluster import Node
from mk8s.deploy.command import Command
from mk8s.deploy.engine.known import NodeState
from mk8s.deploy.engine.phase import Phase
from mk8s.deploy.engine.readiness import wait_ready
from mk8s.deploy.engine.session import Session
from mk8s.deploy.phases.status import FetchKubeconfig, ask_any_server
from mk8s.deploy.steps import Step, WaitReady
from mk8s.errors import DeployError, Mk8sError, PreflightError
from mk8s.untrusted import shown_list


@dataclass
class CertRun:
    """What the phases of one certs run learn and share."""

    now: datetime.datetime = field(default_factory=lambda: datetime.datetime.now(datetime.UTC))
    found: dict[str, certs.NodeCerts] = field(default_factory=dict)
    serving: bool = False
    rotation: certs.RotationPlan | None = None


class ConnectForCerts(Phase):
    """Connect to every node; with ``strict`` (a rotation) one that does not answer stops
    the run before anything changed."""

    title = "connect to every node"
    numbered = False

    def __init__(self, run: CertRun, *, strict: bool) -> None:
        self.cr, self.strict = run, strict

    def run(self, s: Session) -> None:
        errors = s.connect_nodes(s.cluster.nodes)
        for name, err in errors.items():
            self.cr.found[name] = certs.NodeCerts(s.cluster.node(name), error=err)
        if errors and self.strict:
            raise DeployError(
                f"cannot reach {shown_list(sorted(errors))}; nothing was changed: "
                + "; ".join(f"{n}: {e}" for n, e in sorted(errors.items())),
                "every node must be reachable to rotate certificates: fix the connection"
                " (mk8s status), then run again",
            )

    def plan(self, s: Session) -> list[str]:
        self.run(s)  # a rotation's dry run reads the nodes (nothing changes)
        return []


class ReadCerts(Phase):
    title = "read every node's certificates (read-only)"

    def __init__(self, run: CertRun, *, after: bool = False) -> None:
        self.cr, self.after = run, after
        if after:
            self.title = "read every node's certificates again (the report)"

    def nodes(self, s: Session) -> Sequence[Node]:
        return [n for n in s.cluster.nodes if s.remote.connected(n)]

    def steps(self, s: Session, node: Node) -> list[Step]:
        cmd = certs.read_command(s.cluster.paths(node), server=node.is_server)
        return [Step(node.name, "certs", (cmd,))]

    def should_run(self, s: Session) -> bool:
        return not (self.after and s.dry_run)

    def run(self, s: Session) -> None:
        def one(node: Node) -> None:
            try:
                out = s.remote.run(node, "certs", self.steps(s, node)[0].commands[0]).stdout
            except Mk8sError as e:
                self.cr.found[node.name] = certs.NodeCerts(node, error=str(e))
                return
            found, problems = certs.parse(out)
            self.cr.found[node.name] = certs.NodeCerts(node, tuple(found), "", tuple(problems))

        s.parallel(self.nodes(s), one)

    def plan(self, s: Session) -> list[str]:
        self.run(s)
        return super().plan(s)


class ReadState(Phase):
    """What each node runs (RKE2's prefix, its service) and whether the cluster serves."""

    title = "read what each node runs and ask a server for the node list (read-only)"

    def __init__(self, run: CertRun) -> None:
        self.cr = run

    def nodes(self, s: Session) -> Sequence[Node]:
        return s.cluster.nodes

    def steps(self, s: Session, node: Node) -> list[Step]:
        cmd = facts.gather("/nonexistent", s.cluster.rke2.prefixes, s.cluster.paths(node))
        return [Step(node.name, "facts", (cmd,))]

    def run(self, s: Session) -> None:
        def one(node: Node) -> None:
            out = s.remote.run(node, "facts", self.steps(s, node)[0].commands[0]).stdout
            s.known.facts[node.name] = facts.parse_gathered(out)

        s.parallel(self.nodes(s), one)
        missing = [n.name for n in s.cluster.nodes if not s.known.facts[n.name].rke2_tag]
        if missing:
            raise PreflightError(
                f"RKE2 is not installed on {shown_list(missing)}; nothing was changed",
                "deploy the cluster first (mk8s deploy), then rotate its certificates",
            )
        self.cr.serving = ask_any_server(s) is not None
        now = self.cr.now
        expired = [n.name for n in s.cluster.servers if self.cr.found[n.name].expired(now)]
        size = s.cluster.options.upgrade.batch_size(len(s.cluster.agents))
        self.cr.rotation = certs.plan_rotation(
            s.cluster.servers,
            s.cluster.agents,
            serving=self.cr.serving,
            expired=expired,
            batch=size,
        )
        s.log(f"certs rotate: {self.cr.rotation.why}")

    def plan(self, s: Session) -> list[str]:
        self.run(s)
        assert self.cr.rotation is not None
        return [*super().plan(s), f"  => {self.cr.rotation.why}"]


def _unit_steps(s: Session, node: Node, verb: str, *, block: bool) -> Step:
    unit = plan.service(node)
    cmd = start_command(unit, verb, block=block, timeout=s.settings.ready_timeout)
    return Step(node.name, "start", (cmd,))


def _wait(s: Session, node: Node) -> Step:
    return plan.wait_step(node, s.settings.ready_timeout, paths=s.cluster.paths(node))


def execute(s: Session, node: Node, step: Step) -> None:
    """Run a step's commands and waits, as :meth:`Session.execute` does, but record
    Readiness in this run's outcome only: the deploy journal keeps what the last deploy
    left (its inputs), which a rotation does not change."""
    for action in step.actions:
        if isinstance(action, Command):
            s.remote.run(node, step.name, action)
        elif isinstance(action, WaitReady):
            version = wait_ready(s.poller(), node, action)
            o = s.known.outcomes[node.name]
            o.state, o.version = NodeState.READY, version
            s.log(f"{node.name}: Ready ({version})")


class RotateServers(Phase):
    title = "rotate the servers' certificates"

    def __init__(self, run: CertRun) -> None:
        self.cr = run

    def nodes(self, s: Session) -> Sequence[Node]:
        return s.cluster.servers

    @property
    def together(self) -> bool:
        return self.cr.rotation is not None and self.cr.rotation.mode == "together"

    def steps(self, s: Session, node: Node) -> list[Step]:
        f = s.known.facts[node.name]
        unit = plan.service(node)
        change = (certs.stop_command(unit), certs.rotate_command(f.rke2_prefix))
        if self.together:  # every server stopped and rotated first, then all start
            return [
                Step(node.name, "certs", change),
                _unit_steps(s, node, "start", block=False),
                _wait(s, node),
            ]
        start = _unit_steps(s, node, "start", block=True).actions
        return [Step(node.name, "certs", (*change, *start)), _wait(s, node)]

    def plan(self, s: Session) -> list[str]:
        head = (
            "  (every server stopped and rotated in turn, then all started at once, then"
            " each waited for)"
            if self.together
            else "  (one server at a time: stop, rotate, start, Ready, then the next)"
        )
        return [head, *super().plan(s)]

    def run(self, s: Session) -> None:
        servers = list(self.nodes(s))
        try:
            if not self.together:
                for node in servers:
                    for step in self.steps(s, node):
                        execute(s, node, step)
                return
            per = {n.name: self.steps(s, n) for n in servers}
            for node in servers:
                execute(s, node, per[node.name][0])
            for node in servers:
                execute(s, node, per[node.name][1])
            _wait_all(s, servers, {n.name: per[n.name][2] for n in servers})
        except Mk8sError as e:
            raise _stopped(s, "the servers' rotation", e) from e


def _wait_all(s: Session, nodes: Sequence[Node], waits: dict[str, Step]) -> None:
    """Wait for every node in parallel; the first failure is raised after all ended."""
    errors: list[Mk8sError] = []

    def one(node: Node) -> None:
        try:
            execute(s, node, waits[node.name])
        except Mk8sError as e:
            o = s.known.outcomes[node.name]
            o.state, o.error = NodeState.FAILED, str(e)
            s.log(f"{node.name}: FAILED: {e}")
            errors.append(e)

    s.parallel(nodes, one)
    if errors:
        raise errors[0]


def _stopped(s: Session, where: str, e: Mk8sError) -> DeployError:
    s.known.stop(f"{where} stopped")
    return DeployError(
        f"{where} stopped: {e}",
        "fix the node (its journal: journalctl -u rke2-server or rke2-agent), then run"
        " mk8s certs rotate again (a rotation can be repeated)",
    )


class RestartAgents(Phase):
    title = "restart the agents in batches (they get new certificates at start)"

    def __init__(self, run: CertRun) -> None:
        self.cr = run

    def nodes(self, s: Session) -> Sequence[Node]:
        return s.cluster.agents

    def should_run(self, s: Session) -> bool:
        return not s.known.stop_reason and bool(s.cluster.agents)

    def steps(self, s: Session, node: Node) -> list[Step]:
        return [_unit_steps(s, node, "restart", block=False), _wait(s, node)]

    def plan(self, s: Session) -> list[str]:
        assert self.cr.rotation is not None
        groups = " ".join("[" + ", ".join(b) + "]" for b in self.cr.rotation.agent_batches)
        return [f"  batches: {groups}", *super().plan(s)]

    def run(self, s: Session) -> None:
        assert self.cr.rotation is not None
        for batch in self.cr.rotation.agent_batches:
            nodes = [s.cluster.node(n) for n in batch]
            try:
                for node in nodes:
                    execute(s, node, self.steps(s, node)[0])
                _wait_all(s, nodes, {n.name: self.steps(s, n)[1] for n in nodes})
            except Mk8sError as e:
                raise _stopped(s, "the agents' restart", e) from e


class RefreshKubeconfig(FetchKubeconfig):
    """The admin kubeconfig again: its client certificate was just renewed."""

    title = "write the admin kubeconfig again (its client certificate is new)"

    def nodes(self, s: Session) -> Sequence[Node]:
        return s.cluster.servers[:1]

    def should_run(self, s: Session) -> bool:
        return not s.known.stop_reason

    def steps(self, s: Session, node: Node) -> list[Step]:
        return [Step(node.name, "kubeconfig", (kubectl.kubeconfig_command(s.cluster.paths(node)),))]


__all__ = [
    "CertRun",
    "ConnectForCerts",
    "ReadCerts",
    "ReadState",
    "RefreshKubeconfig",
    "RestartAgents",
    "RotateServers",
]
