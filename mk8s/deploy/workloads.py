"""The operator's charts and manifests on the servers (pure: commands as values).

RKE2 applies every file in ``/var/lib/rancher/rke2/server/manifests/`` and its
helm-controller installs each ``HelmChart`` there; a chart travels as a HelmChart whose
``chartContent`` is the chart archive in base64. Files are named
``mk8s-{chart,manifest}-<name>-<12 hex of the sha256>.yaml``, so a converged re-run
finds them by name and changes nothing, and a new version replaces the old file.
"""

from __future__ import annotations

import posixpath
import re

from mk8s.bundle.manifest import Artifact, ArtifactKind
from mk8s.deploy.cluster import Node
from mk8s.deploy.command import Command
from mk8s.deploy.context import Context, remote_path
from mk8s.deploy.facts import SERVER_MANIFESTS_DIR, NodeFacts

# Written on the node: the chart's base64 inside a HelmChart. Values are arguments.
_HELMCHART = (
    "{ printf 'apiVersion: helm.cattle.io/v1\\nkind: HelmChart\\nmetadata:\\n"
    "  name: %s\\n  namespace: kube-system\\nspec:\\n  targetNamespace: default\\n"
    '  chartContent: \' "$1"; base64 -w0 "$2"; echo; } > "$3.mk8s-tmp" '
    '&& chmod 0600 "$3.mk8s-tmp" && mv -f "$3.mk8s-tmp" "$3"'
)
_COPY = 'cp -f "$2" "$3.mk8s-tmp" && chmod 0600 "$3.mk8s-tmp" && mv -f "$3.mk8s-tmp" "$3"'


def resource_name(art: Artifact) -> str:
    """A DNS-1123 name from the artifact's file name (``hello-0.1.0.tgz`` ->
    ``hello-0-1-0``)."""
    stem = re.sub(r"\.(tgz|tar\.gz|ya?ml)$", "", art.name.lower())
    return re.sub(r"[^a-z0-9-]+", "-", stem).strip("-")[:53].strip("-") or "mk8s"


def placed_path(art: Artifact, manifests_dir: str = SERVER_MANIFESTS_DIR) -> str:
    kind = "chart" if art.kind == ArtifactKind.CHART else "manifest"
    name = f"mk8s-{kind}-{resource_name(art)}-{art.sha256[:12]}.yaml"
    return posixpath.join(manifests_dir, name)


def place_workloads(ctx: Context, node: Node, f: NodeFacts) -> list[Command]:
    """Each chart and manifest the server lacks, and the older versions removed (in
    ``DATA_DIR/server/manifests`` of the node's data-dir)."""
    manifests_dir = ctx.cluster.paths(node).manifests_dir
    cmds: list[Command] = []
    for art in [
        *ctx.manifest.find(kind=ArtifactKind.CHART),
        *ctx.manifest.find(kind=ArtifactKind.MANIFEST),
    ]:
        dest = placed_path(art, manifests_dir)
        if dest in f.placed:
            continue
        script = _HELMCHART if art.kind == ArtifactKind.CHART else _COPY
        old = sorted(p for p in f.placed if p.startswith(dest.rsplit("-", 1)[0] + "-"))
        cmds.append(
            Command.argv(
                "sh",
                "-c",
                f'mkdir -p "$(dirname "$3")" && {script} && shift 3 && rm -f "$@"',
                "mk8s",
                resource_name(art),
                remote_path(ctx, art),
                dest,
                *old,
                sudo=True,
                timeout=120,
                description=f"place {art.kind} {art.name} for RKE2 to apply",
            )
        )
    return cmds
