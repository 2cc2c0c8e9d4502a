"""Connect to every node, then gather its facts: both in parallel, changing nothing."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import PurePosixPath

from mk8s.deploy.builders import facts, kubectl, restart, serverprobe
from mk8s.deploy.cluster import Node
from mk8s.deploy.command import Command, as_user
from mk8s.deploy.engine.phase import Phase
from mk8s.deploy.engine.session import Session
from mk8s.deploy.phases import inputs
from mk8s.deploy.phases.dropcharts import journal_placed
from mk8s.errors import Mk8sError, PreflightError


class ConnectAll(Phase):
    title = "connect to every node (in parallel, strict host keys)"
    pipelined = True  # each node gathers its facts as soon as it is connected

    def __init__(self) -> None:
        self.errors: dict[str, str] = {}
        self._lock = threading.Lock()

    def nodes(self, s: Session) -> Sequence[Node]:
        return s.cluster.nodes

    def begin(self, s: Session) -> None:
        s.log(f"connecting to {len(self.nodes(s))} nodes")

    def run_node(self, s: Session, node: Node) -> None:
        try:
            s.remote.open(node)
        except Mk8sError as e:
            with self._lock:
                self.errors[node.name] = str(e)

    def finish(self, s: Session) -> None:
        """PreflightError naming every unreachable node; nothing was changed then."""
        if self.errors:
            order = [n.name for n in self.nodes(s) if n.name in self.errors]
            lines = "; ".join(f"{n}: {self.errors[n]}" for n in order)
            raise PreflightError(
                f"cannot reach {len(self.errors)} of {len(self.nodes(s))} nodes, nothing was"
                f" changed: {lines}"
            )

    def plan(self, s: Session) -> list[str]:
        lines = []
        for n in self.nodes(s):
            via = f" via {n.ssh.bastion.user}@{n.ssh.bastion.address}" if n.ssh.bastion else ""
            lines.append(f"[{n.name} {n.address} {n.role}]")
            lines.append(f"  ssh {n.ssh.user}@{n.address}:{n.ssh.port}{via}")
        return lines


def staging_dir(s: Session) -> str:
    """This bundle's staging directory on the nodes: ``stagingDir/<bundle id>``."""
    assert s.known.verified is not None
    return str(PurePosixPath(s.cluster.options.staging_dir) / s.known.verified.bundle_id)


class GatherFacts(Phase):
    title = "gather facts (arch, OS, disk, sudo, RKE2, what is staged): read-only"
    pipelined = True

    def __init__(self) -> None:
        self.error: Mk8sError | None = None

    def nodes(self, s: Session) -> Sequence[Node]:
        return s.cluster.nodes

    def command(self, s: Session, node: Node) -> Command:
        """The node's facts in one round trip: a server adds its own API's answers, and
        the first server the cluster's node list (:mod:`~mk8s.deploy.builders.serverprobe`)."""
        paths = s.cluster.paths(node)
        probe = (
            serverprobe.probe(paths, list_nodes=node.name == s.cluster.bootstrap.name)
            if node.is_server
            else None
        )
        return facts.gather(staging_dir(s), s.cluster.rke2.prefixes, paths, server=probe)

    def run_node(self, s: Session, node: Node) -> None:
        if not s.remote.connected(node):
            return  # ConnectAll names it
        try:
            out = s.remote.run(node, "facts", self.command(s, node)).stdout
        except Mk8sError as e:
            self.error = self.error or e
            return
        s.known.facts[node.name] = facts.parse_gathered(out)

    def finish(self, s: Session) -> None:
        if self.error is not None:
            raise self.error
        running_versions(s)

    def plan(self, s: Session) -> list[str]:
        # A dry run contacts no node: it assumes each node as the journal says the last
        # run left it (its RKE2 version, running, its start-only inputs), or fresh, of
        # the bundle's first arch.
        assert s.known.verified is not None
        arch = s.known.verified.manifest.release.arch[0]
        journal = s.journal.read().get("nodes", {})
        lines = []
        for n in self.nodes(s):
            entry = journal.get(n.name, {}) if isinstance(journal, dict) else {}
            version = entry.get("version") if isinstance(entry, dict) else None
            known = isinstance(version, str) and entry.get("state") == "ready"
            s.known.facts[n.name] = facts.NodeFacts(
                arch=arch,
                uname_m=arch,
                os="",
                hostname="",
                root=True,
                sudo=True,
                rke2_version=f"rke2 version {version}" if known else None,
                server_active=known and n.is_server,
                agent_active=known and not n.is_server,
                datastore=known and n.is_server,
                running_version=version if known else None,
                readyz="ok" if known and n.is_server else None,
                **(inputs.assumed(entry, s.cluster.paths(n)) if known else {}),
                placed=journal_placed(s, n) if known and n.is_server else frozenset(),
            )
            state = f"runs {version} (journal)" if known else "fresh"
            lines.append(f"[{n.name} {n.address} {n.role}] {state}")
            lines.append(f"  $ {as_user(self.command(s, n), n.ssh.user).display()}")
            if n.name == s.cluster.bootstrap.name:
                ask = kubectl.nodes_command(s.cluster.paths(n))
                lines += [
                    "  (with the cluster's node list: what each node's running RKE2 reports,"
                    " its kubeletVersion; when it does not answer, the next running server:)",
                    f"  $ {as_user(ask, n.ssh.user).display()}",
                ]
        s.known.listed = assumed_listing(s, journal)
        return lines


def assumed_listing(s: Session, journal: object) -> dict[str, kubectl.Listed]:
    """What a dry run assumes the cluster lists: the nodes the journal left Ready, at
    the version it recorded."""
    out: dict[str, kubectl.Listed] = {}
    for n in s.cluster.nodes:
        entry = journal.get(n.name) if isinstance(journal, dict) else None
        version = entry.get("version") if isinstance(entry, dict) else None
        if isinstance(version, str) and entry.get("state") == "ready":  # type: ignore[union-attr]
            out[n.name] = kubectl.Listed(True, version)
    return out


def running_versions(s: Session) -> None:
    """What each running node's RKE2 reports, from the cluster's node list (its node's
    ``status.nodeInfo.kubeletVersion``: the kubelet runs from the release RKE2 staged at
    its own start, so an RKE2 binary replaced on disk without a restart still reports
    the old version). The first server's facts carry the list; when they do not, the
    next running server is asked. Nodes stay as their binary says when no server
    answers. The list is kept (``known.listed``) to tell which nodes are converged."""
    listing = s.known.facts[s.cluster.bootstrap.name].listing
    for node in s.cluster.servers if listing is None else ():
        if not s.known.facts[node.name].server_active:
            continue
        try:
            r = s.remote.run(node, "facts", kubectl.nodes_command(s.cluster.paths(node)))
        except Mk8sError:
            continue
        if r.exit_code == 0:
            listing = r.stdout
            break
    if listing is None:
        return
    s.known.listed = kubectl.listed_nodes(listing)
    for node in s.cluster.nodes:
        f = s.known.facts[node.name]
        if f.listing is not None:
            f = s.known.facts[node.name] = replace(f, listing=None)  # read once: drop it
        seen = s.known.listed.get(node.name)
        if seen and seen.version and restart.active(node, f):
            s.known.facts[node.name] = replace(f, running_version=seen.version)
