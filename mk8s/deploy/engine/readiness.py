"""Waiting until nodes are Ready: bounded, and sharing one node list per poll.

A server is Ready when its own ``/readyz`` answers ``ok`` and the cluster lists it
Ready; an agent when the cluster lists it Ready and its own ``rke2-agent`` is active
(RKE2 reported ready: it joined). One ``kubectl get nodes`` per poll
interval answers for every node waiting (twelve agents do not run twelve kubectls).
A wait polls soon after it starts and then less often (0.1 s, doubling up to the
poll interval): a node that comes up fast is seen fast, a slow one costs no more
polls than before.
Every wait is bounded by the session's ``ready_timeout``: running out is a DeployError
naming the node and where to look. The session keeps one :class:`NodesPoller` per run
(``session.poller()``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence

from mk8s.deploy.builders import kubectl
from mk8s.deploy.builders.plan import service
from mk8s.deploy.cluster import Cluster, Node
from mk8s.deploy.engine.remote import Remote
from mk8s.deploy.steps import WaitReady
from mk8s.errors import DeployError, Mk8sError


class NodesPoller:
    """``kubectl get nodes -o json`` on a server, at most once per poll interval
    (asking ``first`` unless told otherwise: the server the cluster is reached
    through)."""

    def __init__(self, remote: Remote, cluster: Cluster, first: Node, interval: float) -> None:
        self.remote = remote
        self.cluster = cluster
        self.first = first
        self.interval = interval
        self._lock = threading.Lock()
        self._at = -1e9
        self._nodes: dict[str, kubectl.Listed] = {}

    def nodes(
        self, asker: Node | None = None, max_age: float | None = None
    ) -> dict[str, kubectl.Listed]:
        """The node list (parsed once per fetch), fetched again if older than
        ``max_age`` (the poll interval)."""
        age = self.interval if max_age is None else max_age
        with self._lock:
            if time.monotonic() - self._at >= age:
                node = asker or self.first
                cmd = kubectl.nodes_command(self.cluster.paths(node))
                r = self.remote.run(node, "wait-ready", cmd)
                self._nodes, self._at = kubectl.listed_nodes(r.stdout), time.monotonic()
            return self._nodes


FIRST_POLL_DELAY = 0.1


def _delays(interval: float) -> Iterator[float]:
    """Seconds between polls: 0.1, 0.2, 0.4, ... then ``interval`` (never above it)."""
    d = min(FIRST_POLL_DELAY, interval)
    while True:
        yield d
        d = min(d * 2, interval)


def _status(listed: dict[str, kubectl.Listed], node: Node) -> tuple[bool, str, str]:
    s = listed.get(node.name)
    return (s.ready, s.version, s.why) if s else (False, "", "")


def _timeout(node: Node, seconds: float, last: str) -> DeployError:
    return DeployError(
        f"{node.name} was not Ready within {seconds:.0f}s" + (f" ({last[:200]})" if last else ""),
        f"look at `journalctl -u {service(node)}` on the node, then deploy again",
    )


def _unit_state(remote: Remote, node: Node, wait: WaitReady) -> str:
    """The node's own unit state when the wait asks for it (agents), else ``active``:
    a Node object stays Ready for a grace period after its kubelet is gone
    (kube-controller-manager's node-monitor-grace-period), so a just restarted agent is
    listed Ready before it has fetched its new certificates and joined again."""
    if wait.active is None:
        return "active"
    return remote.run(node, "wait-ready", wait.active).stdout.strip()


def wait_ready(shared: NodesPoller, node: Node, wait: WaitReady) -> str:
    """Block until ``node`` is Ready (an agent: and its own unit active); return its
    kubelet version. DeployError after ``wait.timeout`` seconds."""
    deadline = time.monotonic() + wait.timeout
    delays = _delays(shared.interval)
    delay = min(FIRST_POLL_DELAY, shared.interval)  # max age, first poll
    last = ""
    while True:
        api_ok = True
        if wait.readyz is not None:
            r = shared.remote.run(node, "wait-ready", wait.readyz)
            api_ok = r.exit_code == 0 and r.stdout.strip() == "ok"
            last = r.stderr.strip() or r.stdout.strip()
        if api_ok:
            # Before any server answers, the first server is the one to ask; a server
            # that is itself up answers for the whole cluster.
            listed = shared.nodes(node if node.is_server else None, max_age=delay)
            ready, version, why = _status(listed, node)
            if ready and wait.version in (None, version):
                unit = _unit_state(shared.remote, node, wait)
                if unit == "active":
                    return version
                last = (
                    f"the cluster lists {node.name} Ready, but its {service(node)} is"
                    f" {unit or 'unknown'}: it has not joined yet"
                )
            else:
                last = f"node {node.name} is not Ready yet" + (
                    f" at {wait.version} (it runs {version or 'unknown'})" if wait.version else ""
                )
                last += f": {why}" if why and not ready else ""
        if time.monotonic() >= deadline:
            raise _timeout(node, wait.timeout, last)
        delay = next(delays)
        time.sleep(delay)


def wait_all_ready(
    shared: NodesPoller, nodes: Sequence[Node], timeout: float
) -> dict[str, str | Mk8sError]:
    """Wait until every node in ``nodes`` is Ready: name -> version, or DeployError."""
    results: dict[str, str | Mk8sError] = {}
    deadline = time.monotonic() + timeout
    delays = _delays(shared.interval)
    delay = min(FIRST_POLL_DELAY, shared.interval)  # max age, first poll
    pending = list(nodes)
    while pending:
        try:
            listed, last = shared.nodes(max_age=delay), ""
        except Mk8sError as e:
            listed, last = {}, str(e)
        why: dict[str, str] = {}
        for node in list(pending):
            ready, version, why[node.name] = _status(listed, node)
            if ready:
                results[node.name] = version
                pending.remove(node)
        if not pending:
            break
        if time.monotonic() >= deadline:
            for node in pending:
                results[node.name] = _timeout(node, timeout, last or why.get(node.name, ""))
            break
        delay = next(delays)
        time.sleep(delay)
    return results


__all__ = ["NodesPoller", "wait_all_ready", "wait_ready"]
