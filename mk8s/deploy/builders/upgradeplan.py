"""A rolling upgrade as values (pure): who is upgraded, what is refused, each node's steps.

[RKE2 air-gap upgrade: the new image tarballs into ``agent/images`` on every node
before any restart (the first upgraded server rolls new system charts out to every
node), then per node: install.sh with the new artifacts, the old image tarballs the new
release lacks removed, the unit restarted; servers first, one at a time, then agents.
Kubernetes version skew: servers within one minor of each other, a kubelet never newer
than the API servers; so no minor may be skipped and nothing is downgraded.]
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from mk8s.bundle.format.manifest import Lock
from mk8s.bundle.upstream.versions import Version, parse_tag
from mk8s.deploy.builders import kubectl
from mk8s.deploy.builders.context import Context
from mk8s.deploy.builders.facts import NodeFacts
from mk8s.deploy.builders.install import install_command, remove_unneeded_images
from mk8s.deploy.builders.plan import service, start_step, wait_step
from mk8s.deploy.cluster import Cluster, Node
from mk8s.deploy.command import Command
from mk8s.deploy.rke2config import DEFAULT_PATHS, NodePaths
from mk8s.deploy.steps import Step

SNAPSHOT_DIR = DEFAULT_PATHS.snapshot_dir  # a node's config may move it (NodePaths)


@dataclass(frozen=True)
class UpgradePlan:
    """Which nodes move from which version to ``target``; empty when none."""

    target: str
    nodes: tuple[str, ...]  # in upgrade order: servers (file order), then agents
    versions: Mapping[str, str]  # node -> version it runs now
    on_disk: Mapping[str, str] = field(default_factory=dict)  # node -> its binary's version

    @property
    def needed(self) -> bool:
        return bool(self.nodes)


def _version(tag: str) -> Version | None:
    return parse_tag(tag) if tag else None


def _target(manifest_tag: str) -> Version:
    v = parse_tag(manifest_tag)
    if v is None:  # the manifest schema only lets real tags through
        raise ValueError(f"not an RKE2 tag: {manifest_tag!r}")
    return v


def plan_upgrade(cluster: Cluster, manifest: Lock, facts: Mapping[str, NodeFacts]) -> UpgradePlan:
    """The nodes that run an older RKE2 than the bundle (nodes without RKE2 are new and
    join at the bundle's version after the upgrade). What a node runs is what its
    running RKE2 reports when a server told (``NodeFacts.effective_tag``), else its
    binary on disk: after an interrupted upgrade the disk holds the new version while
    the old one still runs, and such a node is upgraded (restarted), not skipped."""
    target = _target(manifest.release.tag)
    versions = {n.name: facts[n.name].effective_tag or "" for n in cluster.nodes}
    on_disk = {n.name: facts[n.name].rke2_tag or "" for n in cluster.nodes}
    older = [
        n.name
        for n in [*cluster.servers, *cluster.agents]
        if (v := _version(versions[n.name])) is not None and v < target
    ]
    return UpgradePlan(manifest.release.tag, tuple(older), versions, on_disk)


def refusals(plan: UpgradePlan) -> list[str]:
    """Why this upgrade must not start, one line each: a downgrade (a node newer than
    the bundle) or a skipped minor (naming the intermediate bundle needed)."""
    target = _target(plan.target)
    problems: list[str] = []
    for name, tag in plan.versions.items():
        disk = plan.on_disk.get(name, "")
        if (d := _version(disk)) is not None and d > target:
            tag = disk  # installing the bundle over a newer binary is a downgrade too
        v = _version(tag)
        if v is None:
            continue
        if v > target:
            problems.append(
                f"{name}: runs {tag}, newer than the bundle's {plan.target}; RKE2 is never"
                " downgraded: deploy a bundle of the cluster's version or newer"
            )
        elif (v.major, v.minor) != (target.major, target.minor) and (
            v.major != target.major or target.minor - v.minor > 1
        ):
            step = f"v{v.major}.{v.minor + 1}"
            problems.append(
                f"{name}: runs {tag}; going to {plan.target} skips a minor version, which"
                f" Kubernetes does not allow: deploy a {step}.x bundle first"
                f" (mk8s bundle create --rke2 {step}.x)"
            )
    return problems


def batches(agents: Sequence[Node], size: int) -> list[list[Node]]:
    return [list(agents[i : i + size]) for i in range(0, len(agents), size)]


def kubectl_on_server(
    *args: str, paths: NodePaths, timeout: float = 120, description: str = ""
) -> Command:
    return Command.argv(
        paths.kubectl,
        "--kubeconfig",
        paths.kubeconfig,
        *args,
        sudo=True,
        timeout=timeout,
        description=description,
    )


def cordon_command(name: str, paths: NodePaths) -> Command:
    return kubectl_on_server("cordon", name, paths=paths, description=f"cordon {name}")


def uncordon_command(name: str, paths: NodePaths) -> Command:
    return kubectl_on_server("uncordon", name, paths=paths, description=f"uncordon {name}")


def drain_command(name: str, timeout: int, paths: NodePaths) -> Command:
    return kubectl_on_server(
        "drain",
        name,
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--force",
        f"--timeout={timeout}s",
        paths=paths,
        timeout=timeout + 60,
        description=f"cordon and drain {name} (at most {timeout}s)",
    )


def snapshot_command(f: NodeFacts, target: str, paths: NodePaths = DEFAULT_PATHS) -> Command:
    """``rke2 etcd-snapshot save --name mk8s-pre-<target>``; prints the snapshot's path
    (in the node's etcd-snapshot-dir: RKE2 reads it and data-dir from config.yaml)."""
    prefix = f.rke2_prefix or "/usr/local"
    name = snapshot_name(target)
    return Command.script(
        "{rke2} etcd-snapshot save --name {name} >&2 && ls -t {dir}/{name}* | head -n 1",
        {"rke2": posixpath.join(prefix, "bin", "rke2"), "name": name, "dir": paths.snapshot_dir},
        sudo=True,
        timeout=600,
        description=f"etcd snapshot {name} before the upgrade",
    )


def snapshot_name(target: str) -> str:
    return "mk8s-pre-" + target.replace("+", "-")


def node_steps(ctx: Context, node: Node, f: NodeFacts, *, ready_timeout: float) -> list[Step]:
    """One node's turn: cordon and drain (``kubectl drain`` cordons first; without
    drain a plain cordon), install, remove old images, restart (with its config), wait
    until Ready at the new version, uncordon. kubectl runs on the node
    itself for a server, on the first server for an agent (see :func:`kubectl_node`)."""
    opts = ctx.cluster.options.upgrade
    arch = f.arch or ctx.manifest.release.arch[0]
    # kubectl drain cordons the node before it evicts: one command, one round trip.
    where = kubectl_node(ctx.cluster, node)
    kpaths = ctx.cluster.paths(where)
    before = (
        [drain_command(node.name, opts.drain_timeout, kpaths)]
        if opts.drain
        else [cordon_command(node.name, kpaths)]
    )
    # The binary on disk may be the target already (an interrupted upgrade): then the
    # node only restarts.
    install = [install_command(ctx, arch)] if f.rke2_tag != ctx.manifest.release.tag else []
    change = [*install, *remove_unneeded_images(ctx, node, f, arch)]
    start = start_step(ctx, node, f, installed_now=True, timeout=ready_timeout)
    return [
        Step(where.name, "cordon", tuple(before)),
        Step(node.name, "install", (*change, *start.commands)),
        wait_step(node, ready_timeout, ctx.manifest.release.tag, paths=ctx.cluster.paths(node)),
        Step(where.name, "uncordon", (uncordon_command(node.name, kpaths),)),
    ]


def kubectl_node(cluster: Cluster, node: Node) -> Node:
    """Where a node's cordon, drain and uncordon run: itself if a server (its API
    answers before and after its own restart), else the first server."""
    return node if node.is_server else cluster.bootstrap


__all__ = [
    "SNAPSHOT_DIR",
    "UpgradePlan",
    "batches",
    "kubectl",
    "node_steps",
    "plan_upgrade",
    "refusals",
    "service",
    "snapshot_command",
    "snapshot_name",
]
