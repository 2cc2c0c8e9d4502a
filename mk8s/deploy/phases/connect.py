"""Connect to every node, then gather its facts: both in parallel, changing nothing."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePosixPath

from mk8s.deploy import facts
from mk8s.deploy.cluster import Node
from mk8s.deploy.command import Command, as_user
from mk8s.deploy.engine import Phase
from mk8s.deploy.session import Session
from mk8s.errors import PreflightError


class Connect(Phase):
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
    assert s.verified is not None
    return str(PurePosixPath(s.cluster.options.staging_dir) / s.verified.bundle_id)


class GatherFacts(Phase):
    title = "gather facts (arch, OS, disk, sudo, RKE2, what is staged): read-only"

    def nodes(self, s: Session) -> Sequence[Node]:
        return s.cluster.nodes

    def command(self, s: Session, node: Node) -> Command:
        return facts.gather(staging_dir(s), s.cluster.rke2.prefixes, s.cluster.paths(node))

    def run(self, s: Session) -> None:
        def one(node: Node) -> None:
            out = s.run(node, "facts", self.command(s, node)).stdout
            s.facts[node.name] = facts.parse_gathered(out)

        s.parallel(self.nodes(s), one)

    def plan(self, s: Session) -> list[str]:
        # A dry run contacts no node: it assumes each node as the journal says the last
        # run left it (its RKE2 version, running), or fresh, of the bundle's first arch.
        assert s.verified is not None
        arch = s.verified.manifest.release.arch[0]
        journal = s.journal().get("nodes", {})
        lines = []
        for n in self.nodes(s):
            entry = journal.get(n.name, {}) if isinstance(journal, dict) else {}
            version = entry.get("version") if isinstance(entry, dict) else None
            known = isinstance(version, str) and entry.get("state") == "ready"
            s.facts[n.name] = facts.NodeFacts(
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
            )
            state = f"runs {version} (journal)" if known else "fresh"
            lines.append(f"[{n.name} {n.address} {n.role}] {state}")
            lines.append(f"  $ {as_user(self.command(s, n), n.ssh.user).display()}")
        return lines
