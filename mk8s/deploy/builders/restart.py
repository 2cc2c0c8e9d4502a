"""When RKE2 must restart on a node to take a change (pure: facts in, reasons out).

RKE2 reads some inputs only when it starts, so writing them on a running node changes
nothing until the service restarts:

* ``config.yaml`` (rancher/rke2-docs docs/install/configuration.md: "If the
  configuration is changed after starting RKE2, the service must be restarted");
* ``registries.yaml`` (docs/install/private_registry.md: "Upon startup, RKE2 will
  check to see if /etc/rancher/rke2/registries.yaml exists"): containerd's
  configuration, credentials included, is generated from it at start (k3s
  pkg/agent/containerd/config.go); the registry CA it names is read at start by RKE2's
  own pull of its runtime image (rancher/rke2 pkg/bootstrap/bootstrap.go ``Stage``),
  while containerd reads the CA file at each pull: mk8s restarts when it changes, so
  that both use the same CA;
* image archives in ``agent/images``: imported only at start before the January 2025
  releases (:func:`mk8s.rke2gates.imports_while_running`); from them on, a watcher
  imports a new file, but a replaced one only when its size changed (k3s
  pkg/agent/containerd/watcher.go), so a replaced archive always restarts.

A run that changes such an input on a running node first records why in
``mk8s/restart-pending`` of the node's data-dir; the (re)start command removes it once
the service is up. A later run that finds the record restarts even though the files on
disk are already right (an earlier run was interrupted between writing and restarting).
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence

from mk8s import rke2gates
from mk8s.bundle.format.manifest import Artifact, ArtifactKind
from mk8s.deploy import registryca
from mk8s.deploy.builders.context import Context
from mk8s.deploy.builders.facts import CONFIG_PATH, REGISTRY_CA_PATH, NodeFacts
from mk8s.deploy.builders.nodeconfig import (
    config_bytes,
    config_variants,
    registries_bytes,
    sha256_hex,
)
from mk8s.deploy.cluster import Node
from mk8s.deploy.command import Command
from mk8s.deploy.rke2config import NodePaths

# The words a pending-restart record holds, one a line.
CONFIG = "config.yaml"
REGISTRIES = "registries.yaml"
REGISTRY_CA = "registry-ca"
IMAGES = "images"


def active(node: Node, f: NodeFacts) -> bool:
    """Whether the node's RKE2 service runs now."""
    return f.server_active if node.is_server else f.agent_active


def registry_ca(ctx: Context) -> bytes | None:
    """The registry CA mk8s writes to every node (spec.images.registry.caFile, its
    certificates only), or None."""
    reg = ctx.cluster.images.registry
    if ctx.cluster.images.distribution != "registry" or reg is None or reg.ca_file is None:
        return None
    return registryca.read_ca(reg.ca_file)


def config_changes(ctx: Context, node: Node, f: NodeFacts) -> bool:
    """Whether this run writes config.yaml: the node's differs from every form RKE2
    would take as the same (a server with a datastore ignores ``server:``)."""
    accepted = {sha256_hex(config_bytes(ctx, node)[0])}
    if node.is_server and f.datastore:  # server: is ignored once a datastore exists
        accepted |= {sha256_hex(b) for b in config_variants(ctx, node)}
    return f.hashes.get(CONFIG_PATH) not in accepted


def registry_changes(ctx: Context, node: Node, f: NodeFacts) -> list[str]:
    """registries.yaml (where the node's ``private-registry`` says) and the registry CA,
    when this run writes them."""
    out = []
    registries = registries_bytes(ctx)
    path = ctx.cluster.paths(node).registries
    if registries is not None and f.hashes.get(path) != sha256_hex(registries[0]):
        out.append(REGISTRIES)
    ca = registry_ca(ctx)
    if ca is not None and f.hashes.get(REGISTRY_CA_PATH) != sha256_hex(ca):
        out.append(REGISTRY_CA)
    return out


def wanted_images(ctx: Context, node: Node, arch: str) -> list[Artifact]:
    """The image archives ``node`` keeps in agent/images: the release's image tarballs
    of its arch and the operator's images (all platforms); none when the node gets its
    images from peers or a registry."""
    if not ctx.cluster.images.local_tarballs(node):
        return []
    return [
        *ctx.manifest.find(kind=ArtifactKind.IMAGES, arch=arch),
        *ctx.manifest.find(kind=ArtifactKind.IMAGE),
    ]


def image_changes(ctx: Context, node: Node, f: NodeFacts) -> list[str]:
    """``[IMAGES]`` when this run places image archives that the running RKE2 will not
    import unless it restarts."""
    arch = f.arch or ctx.manifest.release.arch[0]
    images_dir = ctx.cluster.paths(node).images_dir
    replaced = added = False
    for art in wanted_images(ctx, node, arch):
        have = f.hashes.get(posixpath.join(images_dir, art.name))
        replaced |= have is not None and have != art.sha256
        added |= have is None
    running = f.effective_tag
    if replaced or (added and not (running and rke2gates.imports_while_running(running))):
        return [IMAGES]
    return []


def reasons(ctx: Context, node: Node, f: NodeFacts) -> list[str]:
    """Every start-only input this run changes on ``node``, and those an earlier run
    changed without restarting (in that order, each once). Only meaningful for a node
    whose service is active: a stopped service reads everything when it starts."""
    found = [CONFIG] if config_changes(ctx, node, f) else []
    found += registry_changes(ctx, node, f) + image_changes(ctx, node, f)
    found += list(f.restart_pending)
    return list(dict.fromkeys(found))


def mark_pending(paths: NodePaths, words: Sequence[str]) -> Command:
    """Record on the node, before the inputs change, that RKE2 must restart (and why), in
    the node's data-dir (``paths``)."""
    return Command.argv(
        "sh",
        "-c",
        'f="$1"; shift; mkdir -p "$(dirname "$f")" && printf "%s\\n" "$@" >> "$f"',
        "mk8s-pending",
        paths.restart_pending,
        *words,
        sudo=True,
        timeout=60,
        description=f"remember that RKE2 must restart ({', '.join(words)})",
    )


def describe(words: Sequence[str]) -> str:
    """The reasons as the plan prints them."""
    names = {
        CONFIG: "config.yaml changed",
        REGISTRIES: "registries.yaml changed",
        REGISTRY_CA: "the registry CA changed",
        IMAGES: "image archives changed that the running RKE2 imports only at start",
    }
    shown = [names.get(w, f"{w} changed") for w in words]
    return "RKE2 reads these only at start: " + "; ".join(shown)


__all__ = [
    "active",
    "describe",
    "image_changes",
    "mark_pending",
    "reasons",
    "registry_ca",
    "registry_changes",
    "wanted_images",
]
