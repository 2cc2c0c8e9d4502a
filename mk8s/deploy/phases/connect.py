"""Connect to every node, then gather its facts: both in parallel, changing nothing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import PurePosixPath

from mk8s.deploy.builders import facts, kubectl, restart
from mk8s.deploy.cluster import Node
from mk8s.deploy.command import Command, as_user
from mk8s.deploy.engine.phase import Phase
from mk8s.deploy.engine.session import Session
from mk8s.deploy.phases import inputs
from mk8s.deploy.phases.dropcharts import journal_placed
from mk8s.errors import Mk8sError, PreflightError


class ConnectAll(Phase):
    title = "connect to every node (in parallel, strict host keys)"

    def nodes(self, s: Session) -> Sequence[Node]:
        return s.cluster.nodes

    def run(self, s: Session) -> None:
        """PreflightError naming every unreachable node; nothing was changed then."""
        nodes = self.nodes(s)
        s.log(f"connecting to {len(nodes)} nodes")
        errors = s.connect_nodes(nodes)
        if errors:
            lines = "; ".join(f"{n}: {e}" for n, e in errors.items())
            raise PreflightError(
                f"cannot reach {len(errors)} of {len(nodes)} nodes, nothing was changed: {lines}"
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

    def nodes(self, s: Session) -> Sequence[Node]:
        return s.cluster.nodes

    def command(self, s: Session, node: Node) -> Command:
        return facts.gather(staging_dir(s), s.cluster.rke2.prefixes, s.cluster.paths(node))

    def run(self, s: Session) -> None:
        def one(node: Node) -> None:
            out = s.remote.run(node, "facts", self.command(s, node)).stdout
            s.known.facts[node.name] = facts.parse_gathered(out)

        s.parallel(self.nodes(s), one)
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
                **(inputs.assumed(entry, s.cluster.paths(n)) if known else {}),
                placed=journal_placed(s, n) if known and n.is_server else frozenset(),
            )
            state = f"runs {version} (journal)" if known else "fresh"
            lines.append(f"[{n.name} {n.address} {n.role}] {state}")
            lines.append(f"  $ {as_user(self.command(s, n), n.ssh.user).display()}")
            if n.name == s.cluster.servers[0].name:
                ask = kubectl.nodes_command(s.cluster.paths(n))
                lines += [
                    "  then, here or on the next running server: what each node's running"
                    " RKE2 reports (its kubeletVersion)",
                    f"  $ {as_user(ask, n.ssh.user).display()}",
                ]
        return lines


def running_versions(s: Session) -> None:
    """Ask the first running server what each running node's RKE2 reports (its node's
    ``status.nodeInfo.kubeletVersion``: the kubelet runs from the release RKE2 staged at
    its own start, so an RKE2 binary replaced on disk without a restart still reports
    the old version). Nodes stay as their binary says when no server answers."""
    listing = None
    for node in s.cluster.servers:
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
    for node in s.cluster.nodes:
        f = s.known.facts[node.name]
        version = kubectl.node_ready(listing, node.name)[1]
        if version and restart.active(node, f):
            s.known.facts[node.name] = replace(f, running_version=version)
