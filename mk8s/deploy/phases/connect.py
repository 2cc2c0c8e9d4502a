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

    def command(self, s: Session) -> Command:
        return facts.gather(staging_dir(s), s.cluster.rke2.prefixes)

    def run(self, s: Session) -> None:
        cmd = self.command(s)

        def one(node: Node) -> None:
            s.facts[node.name] = facts.parse_gathered(s.run(node, "facts", cmd).stdout)

        s.parallel(self.nodes(s), one)

    def plan(self, s: Session) -> list[str]:
        # A dry run assumes fresh nodes of the bundle's first arch.
        assert s.verified is not None
        arch = s.verified.manifest.release.arch[0]
        cmd = self.command(s)
        lines = []
        for n in self.nodes(s):
            s.facts[n.name] = facts.NodeFacts(
                arch=arch, uname_m=arch, os="", hostname="", root=True, sudo=True
            )
            lines += [
                f"[{n.name} {n.address} {n.role}]",
                f"  $ {as_user(cmd, n.ssh.user).display()}",
            ]
        return lines
