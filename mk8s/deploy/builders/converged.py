"""Whether a node is converged: this run has nothing to do there (docs/scale.md).

A node is converged when its facts and the cluster's node list, gathered in its one
round trip (:mod:`.serverprobe`), show it running the bundle's release, Ready, with
every step of a deploy empty: nothing to stage, install or place, config.yaml and
every start-only input as this run would write them, no restart pending; a server
also answers ``/readyz`` itself. Such a node gets no other command (no port probe, no
readiness poll); every check that exists for a node that joins or changes still runs
for every other node. Pure: from data only.
"""

from __future__ import annotations

from mk8s.deploy.builders import restart
from mk8s.deploy.builders.context import Context
from mk8s.deploy.builders.facts import NodeFacts
from mk8s.deploy.builders.install import install_step
from mk8s.deploy.builders.kubectl import Listed
from mk8s.deploy.builders.plan import start_step, upload_step
from mk8s.deploy.cluster import Node


def converged(ctx: Context, node: Node, f: NodeFacts, listed: Listed | None) -> bool:
    """Whether ``node`` (its facts ``f``, its row ``listed`` in the node list) needs
    nothing from this run."""
    tag = ctx.manifest.release.tag
    if listed is None or not listed.ready or listed.version != tag:
        return False
    if not restart.active(node, f) or f.rke2_tag != tag or f.effective_tag != tag:
        return False
    if node.is_server and f.readyz != "ok":
        return False
    return (
        not upload_step(ctx, node, f).actions
        and not install_step(ctx, node, f).commands
        and not start_step(ctx, node, f).commands
    )


__all__ = ["converged"]
