"""What each node was left running with, in the journal, for ``--dry-run``.

A dry run contacts no node: it assumes every node is as the last deploy left it. To
tell which nodes a changed start-only input (config.yaml, registries.yaml, the
registry CA, image archives) would restart, the journal keeps, per node that ended
Ready, the sha256 of each such file as that run left it (the charts and manifests a
server applies are kept beside, see :func:`mk8s.deploy.phases.dropcharts.journal_placed`).
The digests of files holding secrets are kept only in the journal
(0600, beside the token itself).
"""

from __future__ import annotations

import posixpath
from typing import Any

from mk8s.deploy.builders import facts, restart
from mk8s.deploy.builders.nodeconfig import config_bytes, registries_bytes, sha256_hex
from mk8s.deploy.cluster import Node
from mk8s.deploy.engine.known import NodeState
from mk8s.deploy.engine.session import Session
from mk8s.deploy.rke2config import DEFAULT_PATHS, NodePaths


def node_inputs(s: Session, node: Node) -> dict[str, Any]:
    """The start-only inputs ``node`` has once this run's steps are done, as digests."""
    ctx = s.known.context
    paths = ctx.cluster.paths(node)
    f = s.known.facts.get(node.name)
    arch = (f.arch if f else None) or ctx.manifest.release.arch[0]
    hashes = {facts.CONFIG_PATH: sha256_hex(config_bytes(ctx, node)[0])}
    registries = registries_bytes(ctx)
    if registries is not None:
        hashes[paths.registries] = sha256_hex(registries[0])
    ca = restart.registry_ca(ctx)
    if ca is not None:
        hashes[facts.REGISTRY_CA_PATH] = sha256_hex(ca)
    for art in restart.wanted_images(ctx, node, arch):
        hashes[posixpath.join(paths.images_dir, art.name)] = art.sha256
    return {"hashes": hashes}


def record_inputs(s: Session) -> None:
    """Keep in the journal what every node that ended Ready now runs with."""
    if s.known.ctx is None:
        return
    journal = s.journal.read()
    for node in s.cluster.nodes:
        entry = journal.get("nodes", {}).get(node.name)
        if s.known.outcomes[node.name].state == NodeState.READY and isinstance(entry, dict):
            entry["inputs"] = node_inputs(s, node)
    s.journal.write()


def assumed(entry: object, paths: NodePaths = DEFAULT_PATHS) -> dict[str, Any]:
    """NodeFacts fields a dry run takes from a node's journal entry (none if unknown),
    for a node whose files are at ``paths``."""
    inputs = entry.get("inputs") if isinstance(entry, dict) else None
    if not isinstance(inputs, dict):
        return {}
    raw = inputs.get("hashes")
    hashes = {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
    return {
        "hashes": hashes,
        "placed_images": {
            posixpath.basename(p): h
            for p, h in hashes.items()
            if posixpath.dirname(p) == paths.images_dir
        },
    }


__all__ = ["assumed", "node_inputs", "record_inputs"]
