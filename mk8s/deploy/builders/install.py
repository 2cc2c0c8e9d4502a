"""Installing RKE2 on a node (pure): install.sh in tar mode, the image tarballs, and
registries.yaml, as command values."""

from __future__ import annotations

import posixpath

from mk8s.bundle.format.manifest import Artifact, ArtifactKind, Lock
from mk8s.deploy import registryca
from mk8s.deploy.builders import restart
from mk8s.deploy.builders.addons import place_workloads
from mk8s.deploy.builders.context import Context, remote_path
from mk8s.deploy.builders.facts import (
    RECORD_TEMPLATE,
    REGISTRY_CA_PATH,
    VERSION_RECORD,
    NodeFacts,
    record_values,
    sums_dir,
)
from mk8s.deploy.builders.nodeconfig import registries_bytes, sha256_hex
from mk8s.deploy.cluster import Node
from mk8s.deploy.command import Command, Secret, write_file
from mk8s.deploy.rke2config import NodePaths
from mk8s.deploy.steps import Step


def install_dir(ctx: Context, arch: str) -> str:
    return posixpath.join(ctx.staging, f"install-{arch}")


def install_step(ctx: Context, node: Node, f: NodeFacts, *, run_install: bool = True) -> Step:
    """install.sh in tar mode (when RKE2 at the bundle's tag is absent and
    ``run_install``: an upgrade runs it in the node's own turn), then the image
    tarballs (and, on a node not being upgraded, the removal of those mk8s placed that
    the bundle no longer has) and registries.yaml. On a running node, the start-only
    inputs this changes are first recorded as a pending restart (:mod:`.restart`)."""
    arch = f.arch or ctx.manifest.release.arch[0]
    cmds: list[Command] = []
    if run_install and f.rke2_tag != ctx.manifest.release.tag:
        cmds.append(install_command(ctx, arch))
    pending = restart.registry_changes(ctx, node, f) + restart.image_changes(ctx, node, f)
    if pending and restart.active(node, f):
        cmds.append(restart.mark_pending(ctx.cluster.paths(node), pending))
    cmds += place_images(ctx, node, f, arch)
    if run_install:
        cmds += remove_unneeded_images(ctx, node, f, arch)
    if node.is_server:
        cmds += place_workloads(ctx, node, f)
    cmds += write_registry_ca(ctx, f)
    cmds += write_registries(ctx, node, f)
    return Step(
        node.name,
        "install",
        tuple(cmds),
        note="" if cmds else "RKE2 and images already in place",
    )


def install_command(ctx: Context, arch: str) -> Command:
    """The bundle's install.sh in tar mode, from a directory with just its two files."""
    tarball = _one(ctx.manifest, ArtifactKind.RKE2, arch)
    sums = _one(ctx.manifest, ArtifactKind.CHECKSUMS, arch)
    script = _one(ctx.manifest, ArtifactKind.INSTALL_SCRIPT, None)
    idir = install_dir(ctx, arch)
    # install.sh would also copy every image tarball it finds in its artifact
    # directory, unchecked; give it a directory with just the two files it needs.
    prefix = ctx.cluster.rke2.tar_prefix
    return Command.script(
        "mkdir -p {idir} && ln -f {tar} {idir}/ && ln -f {sums} {idir}/ && "
        + ("INSTALL_RKE2_TAR_PREFIX={prefix} " if prefix else "")
        + "INSTALL_RKE2_ARTIFACT_PATH={idir} INSTALL_RKE2_METHOD=tar sh {script} && "
        # then remember the version it installed (facts.VERSION_RECORD)
        + "{{ sums={records}; prefixes={prefixes}; "
        + VERSION_RECORD.replace("{", "{{").replace("}", "}}")
        + "; }}",
        {
            "idir": idir,
            "tar": remote_path(ctx, tarball),
            "sums": remote_path(ctx, sums),
            "script": remote_path(ctx, script),
            "records": sums_dir(ctx.cluster.options.staging_dir),
            "prefixes": " ".join(ctx.cluster.rke2.prefixes),
            **({"prefix": prefix} if prefix else {}),
        },
        sudo=True,
        description=f"install RKE2 {ctx.manifest.release.tag} (install.sh, tar mode)",
        timeout=600,
    )


def place_images(ctx: Context, node: Node, f: NodeFacts, arch: str) -> list[Command]:
    """The image tarballs the node lacks, checked into place (none when all are there),
    in ``DATA_DIR/agent/images`` of the node's data-dir, each recorded as placed by mk8s
    (``NodePaths.placed_images``); archives already in place with no record yet
    (placed by an older mk8s) get theirs."""
    paths = ctx.cluster.paths(node)
    # Every missing image tarball in one command: hard-linked (or copied) from the
    # staging directory, checked, and its hash recorded.
    parts: list[str] = []
    values: dict[str, str] = {"dir": paths.images_dir, "recdir": paths.placed_images}
    names = []
    adopt: list[str] = []
    for i, art in enumerate(restart.wanted_images(ctx, node, arch)):
        dest = posixpath.join(paths.images_dir, art.name)
        placed = posixpath.join(paths.placed_images, art.name)
        if f.hashes.get(dest) == art.sha256:
            if f.placed_images.get(art.name) != art.sha256:
                adopt += [placed, art.sha256]
            continue
        names.append(art.name)
        rec = record_values(ctx.cluster.options.staging_dir, dest, art.sha256)
        template = (
            "(ln -f {src} {dest} 2>/dev/null || "
            "(cp -f {src} {dest}.mk8s-tmp && mv -f {dest}.mk8s-tmp {dest})) && "
            "printf '%s  %s\\n' {sha} {dest} | sha256sum -c --quiet - && "
            + RECORD_TEMPLATE
            + " && echo {sha} > {placed}"
        )
        keys = {"src": remote_path(ctx, art), "dest": dest, "sha": art.sha256, "placed": placed}
        for k, v in {**keys, **rec}.items():
            template = template.replace("{" + k + "}", "{" + f"{k}{i}" + "}")
            values[f"{k}{i}"] = v
        parts.append(template)
    cmds = [_record_placed(paths, adopt)] if adopt else []
    if not parts:
        return cmds
    return [
        *cmds,
        Command.script(
            "mkdir -p {dir} {recdir} && " + " && ".join(parts),
            values,
            sudo=True,
            description=f"place image tarballs: {', '.join(names)}",
            timeout=900,
        ),
    ]


def _record_placed(paths: NodePaths, pairs: list[str]) -> Command:
    """Record (RECORD SHA256 pairs) image archives already in place as mk8s's."""
    return Command.argv(
        "sh",
        "-c",
        'mkdir -p "$0" && while [ "$#" -ge 2 ]; do echo "$2" > "$1" && shift 2; done',
        paths.placed_images,
        *pairs,
        sudo=True,
        timeout=60,
        description="record the image archives mk8s placed",
    )


def remove_unneeded_images(ctx: Context, node: Node, f: NodeFacts, arch: str) -> list[Command]:
    """``rm`` the image archives mk8s placed in agent/images (by its records) that this
    bundle no longer has for the node, and their records. A file mk8s did not place
    (the operator's own archive, another image group) is never touched, nor one whose
    bytes changed since mk8s placed it (then only mk8s's record of it goes)."""
    paths = ctx.cluster.paths(node)
    keep = {a.name for a in restart.wanted_images(ctx, node, arch)}
    gone = sorted(n for n in f.placed_images if n not in keep)
    if not gone:
        return []
    files = [
        posixpath.join(paths.images_dir, n)
        for n in gone
        if f.hashes.get(posixpath.join(paths.images_dir, n)) == f.placed_images[n]
    ]
    records = [posixpath.join(paths.placed_images, n) for n in gone]
    return [
        Command.argv(
            "rm",
            "-f",
            *files,
            *records,
            sudo=True,
            timeout=60,
            description=f"remove image archives mk8s placed that {ctx.manifest.release.tag}"
            f" no longer needs: {', '.join(gone)}",
        )
    ]


def write_registry_ca(ctx: Context, f: NodeFacts) -> list[Command]:
    """The registry's CA (spec.images.registry.caFile) where registries.yaml names it."""
    reg = ctx.cluster.images.registry
    pem = restart.registry_ca(ctx)  # certificates only: 0644 on the node
    if reg is None or reg.ca_file is None or pem is None:
        return []
    if f.hashes.get(REGISTRY_CA_PATH) == sha256_hex(pem):
        return []
    return [
        write_file(
            REGISTRY_CA_PATH,
            pem,
            mode=0o644,
            description="write the registry's CA",
            shown=registryca.describe(pem, reg.ca_file),
        )
    ]


def write_registries(ctx: Context, node: Node, f: NodeFacts) -> list[Command]:
    """registries.yaml (0600) when the cluster has one and the node's differs, where the
    node's ``private-registry`` says (default /etc/rancher/rke2/registries.yaml)."""
    registries = registries_bytes(ctx)
    path = ctx.cluster.paths(node).registries
    if registries is None or f.hashes.get(path) == sha256_hex(registries[0]):
        return []
    return [
        write_file(
            path,
            Secret(registries[0].decode()),
            mode=0o600,
            description="write registries.yaml (0600)",
            shown=registries[1].decode(),
        )
    ]


def _one(manifest: Lock, kind: ArtifactKind, arch: str | None) -> Artifact:
    found = [a for a in manifest.artifacts if a.kind == kind and (arch is None or a.arch == arch)]
    if not found:
        raise ValueError(f"the bundle has no {kind} artifact for {arch or 'any arch'}")
    return found[0]
