"""The operator's workloads in a bundle: images by digest, Helm charts, manifests.

* ``--image REF[@sha256:DIGEST]`` / ``--images-file FILE``: each image is pulled from
  its registry into a deterministic OCI image-layout archive (every blob checked
  against its digest), one artifact of kind ``image`` whose source is
  ``oci://REGISTRY/REPO:TAG@DIGEST``; a tag is resolved once and the digest pinned.
  The image's index is kept byte for byte (its digest is the pin a pod uses); only the
  bundle's platforms of it are carried unless ``--all-platforms``.
  With ``--lock`` the image is pulled again by that digest and must give the same
  archive, byte for byte (anything else is drift: a supply-chain alarm).
* ``--chart PATH.tgz``: a Helm chart archive (``NAME/Chart.yaml`` with apiVersion,
  name and version), carried as kind ``chart``.
* ``--manifest PATH.yaml``: Kubernetes manifests (every YAML document a mapping with
  ``apiVersion`` and ``kind``), carried as kind ``manifest``.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from mk8s import rke2gates
from mk8s.bundle.format.artifact import CHART_NAME, CHART_VERSION
from mk8s.bundle.format.manifest import Artifact, ArtifactKind, Lock, artifact_path
from mk8s.bundle.provenance import chartarchive
from mk8s.errors import ChecksumMismatch, InputError, OutputError
from mk8s.files import open_regular, read_regular
from mk8s.untrusted import resolve_tag, shown, yaml_nodes

if TYPE_CHECKING:
    from mk8s.images import PulledImage, Reference

OCI_SCHEME = "oci://"
MAX_CHART = 64 << 20
MAX_MANIFEST = 16 << 20
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def read_images_file(path: Path) -> list[str]:
    """Image references, one per line; blank lines and ``#`` comments are skipped."""
    text = read_regular(path, what="images file", max_size=1 << 20, fix="one reference a line")
    try:
        lines = text.decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise InputError(f"images file {path} is not UTF-8 text", "save it as UTF-8") from e
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def image_name(registry: str, repository: str, tag: str | None, digest: str) -> str:
    """A safe, unique artifact name: ``repo-path_tag_<12 hex of the digest>.oci.tar``."""
    stem = _UNSAFE.sub("-", f"{registry}_{repository}".replace("/", "_"))
    tail = f"_{_UNSAFE.sub('-', tag)}" if tag else ""
    short = digest.removeprefix("sha256:")[:12]
    room = 80 - len(f"_{short}.oci.tar") - len(tail)
    return f"{stem[: max(8, room)].strip('.-')}{tail}_{short}.oci.tar".lstrip(".")


def image_ref(art: Artifact) -> str:
    """The pinned reference an image artifact came from (without ``oci://``)."""
    return (art.url or "").removeprefix(OCI_SCHEME)


def _platforms(arches: Sequence[str]) -> tuple[str, ...]:
    return tuple(f"linux/{a}" for a in arches)


@dataclass(frozen=True)
class ImagePins:
    """How ``--image`` references are pinned: which platforms of an index to carry
    (``all_platforms``, else those of the bundle's ``arches``) for RKE2 ``tag``."""

    arches: tuple[str, ...]
    tag: str
    all_platforms: bool = False
    auth_file: Path | None = None


def pin_images(refs: Sequence[str], pins: ImagePins, cache_dir: Path) -> list[Artifact]:
    """Pull each reference (a tag is resolved once) and pin its archive in the cache.

    The archive keeps the image's own index, so the digest pinned is the digest a node
    imports; an index whose other platforms are left out is recorded as such
    (``Artifact.platforms``). InputError when RKE2 ``pins.tag`` cannot import such an
    index (the releases before WithSkipMissing: :mod:`mk8s.rke2gates`)."""
    from mk8s.images import parse_reference  # requests & co.: only when there are images

    platforms = None if pins.all_platforms else _platforms(pins.arches)
    out: list[Artifact] = []
    for text in dict.fromkeys(refs):
        ref = parse_reference(text)
        pulled, sha, size = _pull(ref, platforms, cache_dir, pins.auth_file)
        pinned = ref.with_digest(pulled.source_digest)
        if pulled.partial and not rke2gates.imports_partial_index(pins.tag):
            raise InputError(
                f"{pinned} is a multi-platform image of which the bundle would carry"
                f" {', '.join(pulled.platforms)}, and RKE2 {pins.tag} cannot import an image"
                " index whose other platforms are absent (it can from"
                f" {rke2gates.first_releases(rke2gates.Feature.IMPORT_PARTIAL_INDEX)})",
                "pass --all-platforms to carry every platform of it, or bundle a newer RKE2",
            )
        name = image_name(ref.registry, ref.repository, ref.tag, pulled.source_digest)
        out.append(
            Artifact(
                name=name,
                kind=ArtifactKind.IMAGE,
                path=artifact_path(name, ArtifactKind.IMAGE),
                size=size,
                sha256=sha,
                url=OCI_SCHEME + str(pinned),
                platforms=pulled.platforms if pulled.partial else (),
            )
        )
    return out


def fetch_images(lock: Lock, cache_dir: Path, auth_file: Path | None = None) -> dict[str, Path]:
    """Pull every image the lock pins (by digest) again, the platforms it carried;
    ChecksumMismatch when the archive is not the one pinned (naming the image and both
    hashes)."""
    from mk8s.images import parse_reference  # requests & co.: only when there are images

    files: dict[str, Path] = {}
    for art in lock.find(kind=ArtifactKind.IMAGE):
        ref = parse_reference(image_ref(art))
        cached = cache_dir / "sha256" / art.sha256
        if cached.is_file() and cached.stat().st_size == art.size:
            files[art.path] = cached
            continue
        _pulled, sha, size = _pull(ref, art.platforms or None, cache_dir, auth_file)
        if sha != art.sha256 or size != art.size:
            raise ChecksumMismatch(
                f"image {image_ref(art)} gives another archive than the lock pins: expected"
                f" sha256 {art.sha256}, got {sha}",
                "do not use it: the registry changed what the digest serves; lock again and review",
            )
        files[art.path] = cached
    return files


def _pull(
    ref: Reference, platforms: Sequence[str] | None, cache_dir: Path, auth_file: Path | None
) -> tuple[PulledImage, str, int]:
    from mk8s.images import RegistryClientSettings, pull_image  # (as parse_reference)

    # Credentials from the Docker config; --registry-auth-file names another such file.
    env = {**os.environ, "REGISTRY_AUTH_FILE": str(auth_file)} if auth_file else None
    settings = RegistryClientSettings(env=env)

    tmp = cache_dir / "tmp" / f"image-{secrets.token_hex(6)}.part"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        pulled = pull_image(ref, tmp, cache_dir=cache_dir, platforms=platforms, settings=settings)
        final = cache_dir / "sha256" / pulled.archive_sha256
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)
    except OSError as e:
        raise OutputError(f"cannot write to the cache {cache_dir}: {e}", "pass --cache DIR") from e
    finally:
        tmp.unlink(missing_ok=True)
    return pulled, pulled.archive_sha256, pulled.size


# helm-controller keeps a HelmChart's chartContent (the chart's base64) in one ConfigMap,
# chart-content-NAME (k3s-io/helm-controller pkg/controllers/chart/chart.go,
# contentConfigMap), and Kubernetes refuses a ConfigMap whose data exceeds 1 MiB
# ("[]: Too long: must have at most 1048576 bytes", k3s-io/helm-controller#267): the
# HelmChart is accepted but its install job never runs. A chart's base64 is 4/3 its size.
CONFIGMAP_MAX = 1 << 20
MAX_CHART_BYTES = CONFIGMAP_MAX // 4 * 3  # 786432 bytes (768 KiB): base64 of exactly 1 MiB
# helm-controller names the release and its HelmChart alike and runs helm-install-NAME,
# a Job whose name is also a label value (at most 63 characters).
MAX_RELEASE = 50


def release_name(chart_name: str) -> str:
    """The Helm release (and HelmChart object) name deploy installs a chart as: its
    Chart.yaml name, lower-cased, other characters than ``a-z0-9-`` made ``-``."""
    name = re.sub(r"[^a-z0-9-]+", "-", chart_name.lower()).strip("-")
    return name[:MAX_RELEASE].strip("-") or "chart"


def check_chart(path: Path) -> tuple[str, str]:
    """The chart's (name, version) from its Chart.yaml; InputError unless ``path`` is a
    Helm chart archive within the bounds of :mod:`mk8s.bundle.provenance.chartarchive` (read as a
    stream, never whole in memory) that helm-controller can install (at most
    MAX_CHART_BYTES)."""
    fix = "give a chart archive made by `helm package`"
    with open_regular(path, what="chart", fix=fix) as f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_CHART:
            raise InputError(f"--chart {path} is larger than {MAX_CHART} bytes", fix)
        too_big(path.name, size, f"--chart {path}")
        try:
            meta = chartarchive.read_chart(f, whole=True)
        except chartarchive.ChartProblem as e:
            raise InputError(f"--chart {path}: {e.problem}", fix) from e
    if not CHART_NAME.fullmatch(meta.name) or not CHART_VERSION.fullmatch(meta.version):
        raise InputError(
            f"--chart {path}: Chart.yaml name {shown(meta.name)!r} or version"
            f" {shown(meta.version)!r} is not a plain chart name and version",
            "fix the chart's Chart.yaml (letters, digits, . _ - and a semver version)",
        )
    return meta.name, meta.version


def too_big(name: str, size: int, what: str) -> None:
    """InputError when a chart of ``size`` bytes cannot be installed by helm-controller."""
    if size > MAX_CHART_BYTES:
        raise InputError(
            f"{what} is {size} bytes: helm-controller keeps a chart's base64 in one"
            f" ConfigMap, which Kubernetes limits to {CONFIGMAP_MAX} bytes, so a chart over"
            f" {MAX_CHART_BYTES} bytes (768 KiB) never installs",
            "make the chart smaller (a .helmignore for docs, tests and images; fewer vendored"
            " subcharts), or push it to a chart repository inside the air gap instead",
        )


def pin_charts(paths: Sequence[Path], pin: Callable[[Path], Artifact]) -> list[Artifact]:
    """The ``--chart`` artifacts (``pin`` hashes a file), each with its Chart.yaml name
    and version; InputError when two would install as one Helm release."""
    out = [replace(pin(p), chart=check_chart(p)) for p in paths]
    check_releases(out)
    return out


def check_releases(arts: Sequence[Artifact]) -> None:
    """InputError when a chart is too big to install, or two charts share a release:
    helm-controller keeps one release per HelmChart name, so the later would replace
    the earlier one."""
    seen: dict[str, Artifact] = {}
    for art in arts:
        too_big(art.name, art.size, f"chart {art.name}")
        if art.chart is None:
            continue
        rel = release_name(art.chart[0])
        if rel in seen:
            raise InputError(
                f"charts {seen[rel].name} and {art.name} both install as Helm release"
                f" {rel!r}: one would replace the other",
                "carry one version of each chart",
            )
        seen[rel] = art


def check_manifest(path: Path) -> int:
    """How many resources ``path`` holds; InputError unless every YAML document is a
    mapping with ``apiVersion`` and ``kind`` (non-empty strings, as Kubernetes takes
    them). Linear: each document is composed, checked and dropped, never constructed."""
    data = read_regular(path, what="manifest", max_size=MAX_MANIFEST, fix="give a YAML file")
    fix = "give Kubernetes manifests: YAML documents with apiVersion and kind"

    def error(problem: str) -> InputError:
        return InputError(problem, fix)

    count = 0
    docs = yaml_nodes(
        data, what=f"--manifest {path}", error=error, max_bytes=MAX_MANIFEST, tags=False
    )
    for node in docs:
        if isinstance(node, yaml.ScalarNode) and resolve_tag(node) == _NULL:
            continue  # an empty document, as between two "---"
        count += 1
        if not _has_type_fields(node):
            raise error(f"--manifest {path}: document {count} lacks apiVersion or kind")
    if not count:
        raise InputError(f"--manifest {path} holds no document", fix)
    return count


_STR = "tag:yaml.org,2002:str"
_NULL = "tag:yaml.org,2002:null"


def _has_type_fields(node: yaml.Node) -> bool:
    if not isinstance(node, yaml.MappingNode):
        return False
    found = {
        k.value: v
        for k, v in node.value
        if isinstance(k, yaml.ScalarNode) and k.value in ("apiVersion", "kind")
    }
    return all(
        isinstance(v, yaml.ScalarNode) and v.value and resolve_tag(v) == _STR
        for v in (found.get("apiVersion"), found.get("kind"))
    )


def summary(lock: Lock) -> list[str]:
    """One line per workload the bundle carries (for inspect and status)."""
    lines = [f"image    {image_ref(a)}" for a in lock.find(kind=ArtifactKind.IMAGE)]
    lines += [
        f"chart    {a.name}" + (f" ({a.chart[0]} {a.chart[1]})" if a.chart else "")
        for a in lock.find(kind=ArtifactKind.CHART)
    ]
    lines += [f"manifest {a.name}" for a in lock.find(kind=ArtifactKind.MANIFEST)]
    return lines
