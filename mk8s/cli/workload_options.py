"""The workload options of ``bundle lock`` and ``bundle create`` (--image, --chart, ...),
gathered into one :class:`WorkloadArgs` the command receives as ``workloads``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click

from mk8s.bundle.workload_sources import read_images_file
from mk8s.cli.common import F, gather_options
from mk8s.images import parse_reference


@dataclass(frozen=True)
class WorkloadArgs:
    """What the workload options said."""

    images: tuple[str, ...]
    images_file: Path | None
    charts: tuple[Path, ...]
    manifests: tuple[Path, ...]
    registry_auth_file: Path | None
    all_platforms: bool

    def image_refs(self) -> tuple[str, ...]:
        """``--image`` then the ``--images-file`` lines, each once (InputError for an
        unreadable file or a malformed reference)."""
        listed = read_images_file(self.images_file) if self.images_file is not None else []
        refs = tuple(dict.fromkeys([*self.images, *listed]))
        for ref in refs:
            parse_reference(ref)  # a bad reference is refused before anything is downloaded
        return refs


_OPTIONS = [
    click.option(
        "--image",
        "images",
        multiple=True,
        metavar="REF",
        help="Carry one of your images (REF or REF@sha256:DIGEST; a tag is pinned"
        " to its digest); repeat. Credentials from the Docker config.",
    ),
    click.option(
        "--images-file",
        type=click.Path(path_type=Path, dir_okay=False),
        help="Image references to carry, one a line.",
    ),
    click.option(
        "--all-platforms",
        is_flag=True,
        help="Carry every platform of a multi-platform --image, not just --arch's"
        " (needed to push it into a registry: registry mode).",
    ),
    click.option(
        "--chart",
        "charts",
        multiple=True,
        type=click.Path(path_type=Path, dir_okay=False),
        help="A Helm chart archive (.tgz) deploy installs; repeat.",
    ),
    click.option(
        "--manifest",
        "manifests",
        multiple=True,
        type=click.Path(path_type=Path, dir_okay=False),
        help="Kubernetes manifests (YAML) deploy applies; repeat.",
    ),
    click.option(
        "--registry-auth-file",
        type=click.Path(path_type=Path, dir_okay=False),
        help="Registry credentials for --image: a Docker config.json"
        " [default: REGISTRY_AUTH_FILE, else ~/.docker/config.json].",
    ),
]


def workload_options(f: F) -> F:
    """Add the workload options; the command gets them as ``workloads=WorkloadArgs``."""
    return gather_options(f, WorkloadArgs, _OPTIONS, "workloads")
