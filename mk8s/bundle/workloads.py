"""The operator's workloads in a bundle: images by digest, Helm charts, manifests.

* ``--image REF[@sha256:DIGEST]`` / ``--images-file FILE``: each image is pulled from
  its registry into a deterministic OCI image-layout archive (every blob checked
  against its digest), one artifact of kind ``image`` whose source is
  ``oci://REGISTRY/REPO:TAG@DIGEST``; a tag is resolved once and the digest pinned.
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
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from mk8s.bundle import charts
from mk8s.bundle.manifest import Artifact, ArtifactKind, Lock, artifact_path
from mk8s.errors import ChecksumMismatch, InputError, OutputError
from mk8s.files import open_regular, read_regular
from mk8s.untrusted import resolve_tag, yaml_nodes

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


def pin_images(
    refs: Sequence[str], arches: Sequence[str], cache_dir: Path, auth_file: Path | None = None
) -> list[Artifact]:
    """Pull each reference (a tag is resolved once) and pin its archive in the cache."""
    from mk8s.images import parse_reference

    out: list[Artifact] = []
    for text in dict.fromkeys(refs):
        ref = parse_reference(text)
        pulled, sha, size = _pull(ref, arches, cache_dir, auth_file)
        pinned = ref.with_digest(pulled.source_digest)
        name = image_name(ref.registry, ref.repository, ref.tag, pulled.source_digest)
        out.append(
            Artifact(
                name=name,
                kind=ArtifactKind.IMAGE,
                path=artifact_path(name, ArtifactKind.IMAGE),
                size=size,
                sha256=sha,
                url=OCI_SCHEME + str(pinned),
            )
        )
    return out


def fetch_images(lock: Lock, cache_dir: Path, auth_file: Path | None = None) -> dict[str, Path]:
    """Pull every image the lock pins (by digest) again; ChecksumMismatch when the
    archive is not the one pinned (naming the image and both hashes)."""
    from mk8s.images import parse_reference

    files: dict[str, Path] = {}
    for art in lock.find(kind=ArtifactKind.IMAGE):
        ref = parse_reference(image_ref(art))
        cached = cache_dir / "sha256" / art.sha256
        if cached.is_file() and cached.stat().st_size == art.size:
            files[art.path] = cached
            continue
        _pulled, sha, size = _pull(ref, lock.release.arch, cache_dir, auth_file)
        if sha != art.sha256 or size != art.size:
            raise ChecksumMismatch(
                f"image {image_ref(art)} gives another archive than the lock pins: expected"
                f" sha256 {art.sha256}, got {sha}",
                "do not use it: the registry changed what the digest serves; lock again and review",
            )
        files[art.path] = cached
    return files


def _pull(
    ref: Reference, arches: Sequence[str], cache_dir: Path, auth_file: Path | None
) -> tuple[PulledImage, str, int]:
    from mk8s.images import RegistrySettings, pull_image

    # Credentials from the Docker config; --registry-auth-file names another such file.
    env = {**os.environ, "REGISTRY_AUTH_FILE": str(auth_file)} if auth_file else None
    settings = RegistrySettings(env=env)

    tmp = cache_dir / "tmp" / f"image-{secrets.token_hex(6)}.part"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        pulled = pull_image(
            ref, tmp, cache_dir=cache_dir, platforms=_platforms(arches), settings=settings
        )
        final = cache_dir / "sha256" / pulled.archive_sha256
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)
    except OSError as e:
        raise OutputError(f"cannot write to the cache {cache_dir}: {e}", "pass --cache DIR") from e
    finally:
        tmp.unlink(missing_ok=True)
    return pulled, pulled.archive_sha256, pulled.size


def check_chart(path: Path) -> str:
    """The chart's name; InputError unless ``path`` is a Helm chart archive within the
    bounds of :mod:`mk8s.bundle.charts` (read as a stream, never whole in memory)."""
    fix = "give a chart archive made by `helm package`"
    with open_regular(path, what="chart", fix=fix) as f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_CHART:
            raise InputError(f"--chart {path} is larger than {MAX_CHART} bytes", fix)
        try:
            return charts.read_chart(f, whole=True).name
        except charts.ChartProblem as e:
            raise InputError(f"--chart {path}: {e.problem}", fix) from e


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
    lines += [f"chart    {a.name}" for a in lock.find(kind=ArtifactKind.CHART)]
    lines += [f"manifest {a.name}" for a in lock.find(kind=ArtifactKind.MANIFEST)]
    return lines
