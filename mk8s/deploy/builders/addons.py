"""The operator's charts and manifests as RKE2 AddOns on the servers (pure: commands
as values).

RKE2 applies every file in ``DATA_DIR/server/manifests/`` as an AddOn (rancher/rke2-docs
docs/install/packaged_components.md, "User AddOns") and its helm-controller installs
each ``HelmChart`` there; a chart travels as a HelmChart whose
``chartContent`` is the chart archive in base64. Files are named
``mk8s-{chart,manifest}-<name>-<12 hex of the sha256>.yaml``, so a converged re-run
finds them by name and changes nothing.

helm-controller keeps one Helm release per HelmChart *object name*, and deleting a file
from ``server/manifests`` deletes nothing in the cluster (rancher/rke2-docs
docs/install/packaged_components.md; k3s-io/helm-controller
pkg/controllers/chart/chart.go: the release NAME is the HelmChart's name). So a chart's
HelmChart is named after the chart (its Chart.yaml name, :func:`release_name`), never
its version: a new version replaces the file and upgrades that one release. A chart
the bundle no longer carries is uninstalled on purpose: its HelmChart is deleted with
kubectl on a server (helm-controller then runs ``helm uninstall``), then its file is
removed (:func:`uninstall_dropped`).

A placed file is known by its name (the digest of what mk8s placed), never by its
bytes: each time a server starts, RKE2 rewrites every HelmChart file there in place to
pass its cluster settings as ``spec.set["global.*"]`` (rancher/rke2
pkg/bootstrap/bootstrap.go: setChartValues), so the bytes on the node are not the bytes
mk8s wrote, and comparing them would re-place (and re-install) the chart on every run.
"""

from __future__ import annotations

import posixpath
import re

from mk8s import rke2gates
from mk8s.bundle.format.manifest import Artifact, ArtifactKind, Lock
from mk8s.bundle.workload_sources import image_ref, release_name
from mk8s.deploy.builders.context import Context, remote_path
from mk8s.deploy.builders.facts import SERVER_MANIFESTS_DIR, NodeFacts
from mk8s.deploy.cluster import Cluster, Node
from mk8s.deploy.command import Command

HELMCHART_NAMESPACE = "kube-system"
# kubectl delete waits (by default) for helm-controller's uninstall job (its finalizer).
UNINSTALL_TIMEOUT = 300

# Written on the node: the chart's base64 inside a HelmChart. Values are arguments.
_HELMCHART = (
    "{ printf 'apiVersion: helm.cattle.io/v1\\nkind: HelmChart\\nmetadata:\\n"
    "  name: %s\\n  namespace: kube-system\\nspec:\\n  targetNamespace: default\\n"
    '  chartContent: \' "$1"; base64 -w0 "$2"; echo; } > "$3.mk8s-tmp" '
    '&& chmod 0600 "$3.mk8s-tmp" && mv -f "$3.mk8s-tmp" "$3"'
)
_COPY = 'cp -f "$2" "$3.mk8s-tmp" && chmod 0600 "$3.mk8s-tmp" && mv -f "$3.mk8s-tmp" "$3"'
_PLACED = re.compile(
    r"mk8s-(?P<kind>chart|manifest)-(?P<name>[a-z0-9-]+)-(?P<sha>[0-9a-f]{12})\.yaml"
)


def resource_name(art: Artifact) -> str:
    """A DNS-1123 name: a chart's Helm release (its Chart.yaml name); for a manifest,
    or a chart of a bundle made before charts carried their name, the file name
    (``extra.yaml`` -> ``extra``)."""
    if art.kind == ArtifactKind.CHART and art.chart is not None:
        return release_name(art.chart[0])
    stem = re.sub(r"\.(tgz|tar\.gz|ya?ml)$", "", art.name.lower())
    return re.sub(r"[^a-z0-9-]+", "-", stem).strip("-")[:53].strip("-") or "mk8s"


def _kind(art: Artifact) -> str:
    return "chart" if art.kind == ArtifactKind.CHART else "manifest"


def placed_path(art: Artifact, manifests_dir: str = SERVER_MANIFESTS_DIR) -> str:
    name = f"mk8s-{_kind(art)}-{resource_name(art)}-{art.sha256[:12]}.yaml"
    return posixpath.join(manifests_dir, name)


def placed_name(path: str) -> tuple[str, str] | None:
    """(kind, name) of a file mk8s placed in server/manifests, or None."""
    m = _PLACED.fullmatch(posixpath.basename(path))
    return (m["kind"], m["name"]) if m else None


def workload_artifacts(ctx: Context) -> list[Artifact]:
    """The bundle's charts and manifests, in the order they are placed."""
    return [
        *ctx.manifest.find(kind=ArtifactKind.CHART),
        *ctx.manifest.find(kind=ArtifactKind.MANIFEST),
    ]


def place_workloads(ctx: Context, node: Node, f: NodeFacts) -> list[Command]:
    """Each chart and manifest the server lacks (in ``DATA_DIR/server/manifests`` of
    the node's data-dir); the file it replaces (the same release or manifest name: an
    upgrade in place) is removed."""
    manifests_dir = ctx.cluster.paths(node).manifests_dir
    cmds: list[Command] = []
    for art in workload_artifacts(ctx):
        dest = placed_path(art, manifests_dir)
        if dest in f.placed:
            continue
        script = _HELMCHART if art.kind == ArtifactKind.CHART else _COPY
        me = (_kind(art), resource_name(art))
        old = sorted(p for p in f.placed if placed_name(p) == me)
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


def dropped_charts(ctx: Context, f: NodeFacts) -> dict[str, list[str]]:
    """Releases of charts mk8s placed on this server that the bundle no longer
    carries, with their files."""
    carried = {resource_name(a) for a in ctx.manifest.find(kind=ArtifactKind.CHART)}
    out: dict[str, list[str]] = {}
    for path in sorted(f.placed):
        found = placed_name(path)
        if found and found[0] == "chart" and found[1] not in carried:
            out.setdefault(found[1], []).append(path)
    return out


def uninstall_dropped(ctx: Context, node: Node, f: NodeFacts) -> list[Command]:
    """For each chart the bundle dropped: delete its HelmChart (helm-controller
    uninstalls the release; kubectl waits for that), then remove its file, so a
    restart of RKE2 cannot apply it again. Deleting an absent HelmChart succeeds, so
    every server may run this and a failed run is simply run again."""
    script = (
        '"$0" --kubeconfig "$1" delete helmchart --namespace "$2" "$3" --ignore-not-found'
        ' --timeout="$4" && shift 4 && rm -f "$@"'
    )
    paths = ctx.cluster.paths(node)
    return [
        Command.argv(
            "sh",
            "-c",
            script,
            paths.kubectl,
            paths.kubeconfig,
            HELMCHART_NAMESPACE,
            name,
            f"{UNINSTALL_TIMEOUT}s",
            *files,
            sudo=True,
            timeout=UNINSTALL_TIMEOUT + 60,
            description=f"uninstall chart {name}: the bundle no longer carries it",
        )
        for name, files in dropped_charts(ctx, f).items()
    ]


def partial_image_problems(cluster: Cluster, manifest: Lock) -> list[str]:
    """Images whose index the bundle carries in part (``--all-platforms`` not given)
    keep their pinned digest on a node whose RKE2 imports a partial index (rke2gates),
    but a registry refuses such an index: registry mode, or an older RKE2, needs them
    whole."""
    partial = [a for a in manifest.find(kind=ArtifactKind.IMAGE) if a.platforms]
    if not partial:
        return []
    names = ", ".join(f"{image_ref(a)} ({', '.join(a.platforms)})" for a in partial)
    fix = "create the bundle with --all-platforms"
    if cluster.images.distribution == "registry":
        return [
            f"spec.images.distribution: registry pushes each image under its pinned digest,"
            f" but the bundle carries only some platforms of {names}, and a registry stores"
            f" an image index only with every platform it lists; {fix}, or use"
            " distribution: all or servers"
        ]
    tag = manifest.release.tag
    if not rke2gates.imports_partial_index(tag):
        return [
            f"RKE2 {tag} cannot import an image index without its other platforms: {names}; {fix}"
        ]
    return []
