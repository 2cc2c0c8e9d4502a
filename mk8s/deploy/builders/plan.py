"""Facts + cluster + manifest -> the steps of a deploy, as values. No I/O.

Every function here is pure: given what the nodes reported (:class:`NodeFacts`), the
validated cluster file and the verified manifest, it returns the actions each node
needs, skipping what is already in place. The phases (:mod:`mk8s.deploy.phases`) ask
for these steps; ``--dry-run`` prints them and the session executes exactly them.

RKE2 facts this encodes (README, "Deploying"):
* install.sh in tar mode installs from ``INSTALL_RKE2_ARTIFACT_PATH``, a directory with
  ``rke2.linux-ARCH.tar.gz`` and ``sha256sum-ARCH.txt``; it starts nothing.
* Image tarballs must be in ``/var/lib/rancher/rke2/agent/images/`` before the first
  start (no registry in an air gap); mk8s places them itself, checked.
* The first server starts without ``server:`` when the whole cluster is new; every
  other node gets ``server: https://<first server or serverUrl>:9345`` and ``token:``;
  a first server without a datastore in an existing cluster joins a live member
  (:mod:`mk8s.deploy.builders.membership`).
* Server joins happen one at a time (parallel etcd joins fail).
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from mk8s import rke2gates as gates
from mk8s.bundle.format.manifest import EXECUTABLE_KINDS, Artifact, ArtifactKind, Lock
from mk8s.deploy.builders import restart
from mk8s.deploy.builders.addons import partial_image_problems
from mk8s.deploy.builders.context import (
    API_PORT,
    SUPERVISOR_PORT,
    Context,
    api_host,
    remote_path,
    server_url,
)
from mk8s.deploy.builders.facts import (
    CONFIG_PATH,
    RECORD_TEMPLATE,
    NodeFacts,
    record_values,
)
from mk8s.deploy.builders.install import install_step
from mk8s.deploy.builders.kubectl import nodes_command, readyz_command, rewrite_kubeconfig
from mk8s.deploy.builders.nodeconfig import (
    config_bytes,
    mask_secrets,
    node_config,
    registries_bytes,
)
from mk8s.deploy.builders.requirements import host_problems
from mk8s.deploy.builders.units import (
    active_command,
    journal_command,
    rke2_state_problems,
    start_command,
)
from mk8s.deploy.cluster import Cluster, Node
from mk8s.deploy.command import Command, Secret, write_file
from mk8s.deploy.fileupload import FileUpload
from mk8s.deploy.rke2config import NodePaths
from mk8s.deploy.steps import PlaceUploads, Step, WaitReady

START_TIMEOUT = 900.0
# Room for the staged files plus a copy of the images, and some slack.
DISK_SLACK = 512 << 20


# -- what a node needs -------------------------------------------------------------------
# What only servers need: RKE2 applies manifests (and charts) from the servers.
SERVER_ONLY = frozenset({ArtifactKind.CHART, ArtifactKind.MANIFEST})
IMAGE_KINDS = frozenset({ArtifactKind.IMAGES, ArtifactKind.IMAGE})


def node_artifacts(
    manifest: Lock, arch: str, images: bool = True, server: bool = True
) -> list[Artifact]:
    """The artifacts a node of ``arch`` needs: its arch's files plus arch-free ones (not
    the mk8s executable the bundle may carry: that is for the operator; not the image
    tarballs and image archives when ``images`` is False: the node pulls from peers or a
    registry; charts and manifests only on a ``server``)."""
    return [
        a
        for a in manifest.artifacts
        if a.arch in (None, arch)
        and a.kind != ArtifactKind.MK8S
        and (images or a.kind not in IMAGE_KINDS)
        and (server or a.kind not in SERVER_ONLY)
    ]


def needs(ctx: Context, node: Node, arch: str) -> list[Artifact]:
    """What ``node`` gets staged, given spec.images and its role."""
    images = ctx.cluster.images.local_tarballs(node)
    return node_artifacts(ctx.manifest, arch, images, node.is_server)


def preflight(cluster: Cluster, manifest: Lock, facts: Mapping[str, NodeFacts]) -> list[str]:
    """Every reason a node is unfit, as one line each naming the node and the fix."""
    problems: list[str] = missing_sans(cluster) + embedded_registry_problems(cluster, manifest)
    problems += partial_image_problems(cluster, manifest)
    problems += host_problems(cluster, facts)
    for node in cluster.nodes:
        f = facts[node.name]
        name = node.name
        if not f.can_root:
            problems.append(
                f"{name}: user {node.ssh.user} cannot run sudo without a password; "
                "add a NOPASSWD sudoers rule or log in as root"
            )
            continue
        if f.arch is None:
            problems.append(f"{name}: unsupported architecture {f.uname_m!r}")
        elif f.arch not in manifest.release.arch:
            problems.append(
                f"{name}: is {f.arch} but the bundle holds only "
                f"{', '.join(manifest.release.arch)}; create a bundle with --arch {f.arch}"
            )
        if f.rpm_installed:
            problems.append(
                f"{name}: RKE2 RPMs are installed (rke2-common), which the tarball install "
                "refuses; remove them first (rpm -e rke2-common ...)"
            )
        if f.nm_cloud_setup_enabled:
            problems.append(
                f"{name}: nm-cloud-setup is enabled, which breaks RKE2 networking (RKE2"
                " before "
                + gates.first_releases(gates.Feature.NM_CLOUD_SETUP_ALLOWED)
                + " refuses to start); disable it"
                " (systemctl disable nm-cloud-setup.service nm-cloud-setup.timer) and reboot"
            )
        problems += rke2_state_problems(node, f)
        if f.arch in manifest.release.arch and f.disk_free is not None:
            need = _bytes_needed(cluster, manifest, node, f)
            if f.disk_free < need:
                problems.append(
                    f"{name}: {cluster.options.staging_dir} has {f.disk_free >> 20} MiB free, "
                    f"needs {need >> 20} MiB; free space or set options.stagingDir"
                )
    return problems


def embedded_registry_problems(cluster: Cluster, manifest: Lock) -> list[str]:
    """``distribution: servers`` needs an RKE2 whose agents can pull from the embedded
    registry mirror (the version gates are in :mod:`mk8s.rke2gates`)."""
    if cluster.images.distribution != "servers":
        return []
    problem = gates.embedded_mirror_problem(manifest.release.tag)
    return [problem] if problem else []


def missing_sans(cluster: Cluster) -> list[str]:
    """The serverUrl host must be a name the API certificate carries: a server's
    address or a ``tlsSan`` (RKE2 adds the node addresses, localhost and the
    kubernetes names itself). Otherwise kubectl and joining nodes refuse the server."""
    if not cluster.rke2.server_url:
        return []
    host = urlsplit(cluster.rke2.server_url).hostname or ""
    known = {s.lower() for s in cluster.rke2.tls_san} | {n.address.lower() for n in cluster.servers}
    if host.lower() in known:
        return []
    return [
        f"spec.rke2.serverUrl names {host}, which is not in spec.rke2.tlsSan nor a server's"
        f" address: the API certificate would not carry it and kubectl would refuse it;"
        f" add {host} to spec.rke2.tlsSan"
    ]


def _bytes_needed(cluster: Cluster, manifest: Lock, node: Node, f: NodeFacts) -> int:
    """Disk this run writes on the node: the artifacts not yet staged and the image
    tarballs not yet placed, plus slack; nothing for a node that has them all."""
    images_dir = cluster.paths(node).images_dir
    staged = [(p, h) for p, h in f.hashes.items() if p.startswith(cluster.options.staging_dir)]
    need = 0
    images = cluster.images.local_tarballs(node)
    for art in node_artifacts(manifest, f.arch or "", images, node.is_server):
        rel = "/" + art.path.removeprefix("artifacts/")
        if not any(p.endswith(rel) and h == art.sha256 for p, h in staged):
            need += art.size
        placed = f.hashes.get(posixpath.join(images_dir, art.name)) == art.sha256
        if art.kind in IMAGE_KINDS and not placed:
            need += art.size
    return need + DISK_SLACK if need else 0


# -- steps -------------------------------------------------------------------------------
def upload_step(ctx: Context, node: Node, f: NodeFacts) -> Step:
    """Stage the artifacts not yet on the node with the right hash: create the staging
    directory (owned by the login user, who uploads over SFTP), send each file as
    ``NAME.part`` (partial ones resume), then check every part's sha256 on the node and
    move it into place in one command."""
    arch = f.arch or ctx.manifest.release.arch[0]
    uploads = []
    for art in needs(ctx, node, arch):
        dest = remote_path(ctx, art)
        if f.hashes.get(dest) == art.sha256:
            continue
        local = ctx.local_artifacts.get(art.path) or Path(f"<bundle>/{art.path}")
        uploads.append(
            FileUpload(
                source=local,
                remote_path=dest,
                sha256=art.sha256,
                size=art.size,
                mode=0o755 if art.kind in EXECUTABLE_KINDS else 0o644,
                description=art.name,
            )
        )
    if not uploads:
        return Step(node.name, "stage", note="all artifacts already staged")
    dirs = sorted({posixpath.dirname(u.remote_path) for u in uploads} | {ctx.staging})
    mkdir = Command.script(
        "mkdir -p "
        + " ".join(f"{{d{i}}}" for i in range(len(dirs)))
        + " && chown {user} "
        + " ".join(f"{{d{i}}}" for i in range(len(dirs))),
        {"user": node.ssh.user, **{f"d{i}": d for i, d in enumerate(dirs)}},
        sudo=True,
        timeout=60,
        description="create the staging directory",
    )
    place = place_uploads(ctx, uploads)
    return Step(node.name, "stage", (mkdir, *uploads, place))


def place_uploads(ctx: Context, uploads: Sequence[FileUpload]) -> PlaceUploads:
    """One command that checks each ``NAME.part`` and moves it into place (printing
    ``ok PATH`` or ``bad PATH``); per file, the commands that discard a bad part and
    check it again after it was sent once more."""
    return PlaceUploads(
        _check_and_place(ctx, uploads),
        tuple(uploads),
        tuple(
            Command.argv(
                "rm",
                "-f",
                up.remote_path + ".part",
                sudo=True,
                timeout=60,
                description="discard a bad partial upload",
            )
            for up in uploads
        ),
        tuple(_check_and_place(ctx, [up]) for up in uploads),
    )


def _check_and_place(ctx: Context, uploads: Sequence[FileUpload]) -> Command:
    parts: list[str] = []
    values: dict[str, str] = {}
    for i, up in enumerate(uploads):
        part = up.remote_path + ".part"
        template = (
            "if printf '%s  %s\\n' {sha} {part} | sha256sum -c --quiet - >/dev/null 2>&1 && "
            "mv -f {part} {dest} && " + RECORD_TEMPLATE + "; "
            "then echo ok {dest}; else echo bad {dest}; fi"
        )
        keys = {
            "sha": up.sha256,
            "part": part,
            "dest": up.remote_path,
            **record_values(ctx.cluster.options.staging_dir, up.remote_path, up.sha256),
        }
        for k, v in keys.items():
            template = template.replace("{" + k + "}", "{" + f"{k}{i}" + "}")
            values[f"{k}{i}"] = v
        parts.append(template)
    return Command.script(
        "; ".join(parts),
        values,
        sudo=True,
        timeout=900,
        description=f"check the sha256 of {len(uploads)} uploaded file(s) and move them in place",
    )


def missing_for_deploy(manifest: Lock) -> list[str]:
    """What a signed, intact bundle still lacks to install RKE2 (empty when complete):
    install.sh, and for every arch the RKE2 tarball, its checksum file and images."""
    missing = [] if manifest.find(kind=ArtifactKind.INSTALL_SCRIPT) else ["install.sh"]
    for arch in manifest.release.arch:
        for kind, what in (
            (ArtifactKind.RKE2, f"rke2.linux-{arch}.tar.gz"),
            (ArtifactKind.CHECKSUMS, f"sha256sum-{arch}.txt"),
            (ArtifactKind.IMAGES, f"an image tarball for {arch}"),
        ):
            if not manifest.find(kind=kind, arch=arch):
                missing.append(what)
    return missing


def service(node: Node) -> str:
    return "rke2-server" if node.is_server else "rke2-agent"


def start_step(
    ctx: Context,
    node: Node,
    f: NodeFacts,
    *,
    installed_now: bool | None = None,
    timeout: float = START_TIMEOUT,
) -> Step:
    """Write config.yaml if it differs, then enable and start (or restart) the service.

    A running service is restarted when RKE2 was just installed (by default: the facts
    show another version than the bundle's) or when a start-only input changes, in this
    run or an earlier one that did not get to restart (:func:`restart.reasons`);
    otherwise it is left alone: no restart on a converged cluster. The (re)start clears
    the node's pending-restart record once the service is up (an agent's, which does
    not block, once it is queued). A service still activating is restarted when its
    config changed or RKE2 was just installed, else its start is joined.
    """
    if installed_now is None:
        installed_now = f.rke2_tag != ctx.manifest.release.tag
    real, masked = config_bytes(ctx, node)
    unit = service(node)
    active = restart.active(node, f)
    activating = f.server_activating if node.is_server else f.agent_activating
    changed = restart.config_changes(ctx, node, f)
    why = restart.reasons(ctx, node, f) if active else []
    pending = ctx.cluster.paths(node).restart_pending
    cmds: list[Command] = []
    if changed:
        if active:
            cmds.append(restart.mark_pending(ctx.cluster.paths(node), [restart.CONFIG]))
        cmds.append(
            write_file(
                CONFIG_PATH,
                Secret(real.decode()),
                mode=0o600,
                description="write config.yaml (0600)",
                shown=masked.decode(),
            )
        )
    if active and not why and not installed_now:
        return Step(node.name, "start", note=f"{unit} already active with this config")
    # A service still activating (an agent retrying a refused join) runs with what it
    # read when it started: restart it when that changed, else join its start.
    verb = "restart" if active or (activating and (changed or installed_now)) else "start"
    cmds.append(start_command(unit, verb, block=node.is_server, timeout=timeout, pending=pending))
    note = restart.describe(why) if why and not installed_now else ""
    return Step(node.name, "start", tuple(cmds), note=note)


def wait_step(node: Node, timeout: float, version: str | None = None, *, paths: NodePaths) -> Step:
    """Poll until the node is Ready (at ``version``, when given); a server must also
    answer ``/readyz`` itself (with its kubectl and kubeconfig, at ``paths``). An agent
    counts once its own unit is active too; the unit's journal names why a node does not
    come up."""
    readyz = readyz_command(paths) if node.is_server else None
    explain = journal_command(service(node))
    active = None if node.is_server else active_command(service(node))
    wait = WaitReady(node.name, readyz, nodes_command(paths), timeout, version, explain, active)
    return Step(node.name, "wait", (wait,))


def order(cluster: Cluster) -> tuple[Node, Sequence[Node], Sequence[Node]]:
    """(bootstrap server, other servers in file order, agents)."""
    first = cluster.bootstrap
    return first, [n for n in cluster.servers if n.name != first.name], list(cluster.agents)


__all__ = [
    "API_PORT",
    "SUPERVISOR_PORT",
    "Context",
    "Step",
    "api_host",
    "config_bytes",
    "install_step",
    "mask_secrets",
    "missing_for_deploy",
    "node_artifacts",
    "node_config",
    "order",
    "preflight",
    "registries_bytes",
    "remote_path",
    "rewrite_kubeconfig",
    "server_url",
    "service",
    "start_step",
    "upload_step",
    "wait_step",
]
