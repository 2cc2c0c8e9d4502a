"""``mk8s bundle lock`` and ``mk8s bundle create``: the connected side."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click

from mk8s import ui
from mk8s.bundle.create import Created, CreateSettings, create_bundle, default_jobs
from mk8s.bundle.format import keys, parts
from mk8s.bundle.lock import (
    LOCK_NAME,
    LockSettings,
    check_files,
    lock_release,
    read_lock,
    write_lock,
)
from mk8s.bundle.provenance.sbom import SbomFormat
from mk8s.bundle.upstream import releases
from mk8s.bundle.upstream.settings import UpstreamSettings
from mk8s.bundle.upstream.versions import SPEC_HELP
from mk8s.cli.common import F, gather_options, passphrase_reader
from mk8s.cli.workload_options import WorkloadArgs, workload_options


def _split(values: tuple[str, ...]) -> tuple[str, ...]:
    out: list[str] = []
    for v in values:
        out += [p.strip() for p in v.split(",") if p.strip()]
    return tuple(dict.fromkeys(out))


@dataclass(frozen=True)
class Selection:
    """What the selection options said: what of the release to carry."""

    arches: tuple[str, ...]
    cni: str
    groups: tuple[str, ...]
    allow_prerelease: bool
    files: tuple[Path, ...]


_SELECTION_OPTIONS = [
    click.option(
        "--arch",
        "arches",
        multiple=True,
        default=("amd64",),
        show_default=True,
        help="Architecture (amd64, arm64); repeat or comma-separate for both.",
    ),
    click.option(
        "--cni",
        type=click.Choice(releases.CNIS),
        default=releases.DEFAULT_CNI,
        show_default=True,
        help="CNI whose images to carry.",
    ),
    click.option(
        "--images-group",
        "groups",
        multiple=True,
        help="An extra image group (multus, vsphere, harvester, ...); repeat.",
    ),
    click.option(
        "--allow-prerelease",
        is_flag=True,
        help="Let -rc tags and prereleases match the spec.",
    ),
    click.option(
        "--file",
        "files",
        multiple=True,
        type=click.Path(path_type=Path, dir_okay=False, exists=True),
        help="Add one of your own files (an SELinux RPM, a manifest); repeat.",
    ),
]


def selection_options(f: F) -> F:
    """Add the selection options; the command gets them as ``selection=Selection``."""
    return gather_options(f, Selection, _SELECTION_OPTIONS, "selection")


def _lock_settings(
    spec: str,
    up: UpstreamSettings,
    cache_dir: Path | None,
    selection: Selection,
    workloads: WorkloadArgs,
) -> LockSettings:
    """LockSettings from the selection options and the workload options."""
    return LockSettings(
        spec=spec,
        upstream=up,
        arches=_split(selection.arches),
        cni=selection.cni,
        image_groups=_split(selection.groups),
        allow_prerelease=selection.allow_prerelease,
        files=selection.files,
        cache_dir=cache_dir,
        images=workloads.image_refs(),
        charts=workloads.charts,
        manifests=workloads.manifests,
        registry_auth_file=workloads.registry_auth_file,
        all_platforms=workloads.all_platforms,
    )


@dataclass(frozen=True)
class UpstreamArgs:
    """What the upstream options said: where releases come from, where the cache is."""

    github_api_url: str | None
    release_url: str | None
    raw_url: str | None
    cache_dir: Path | None

    def settings(self) -> UpstreamSettings:
        """The flags over the environment (InputError, exit 2, for a bad URL)."""
        return UpstreamSettings.from_env(
            api_url=self.github_api_url, release_url=self.release_url, raw_url=self.raw_url
        )


_UPSTREAM_OPTIONS = [
    click.option(
        "--github-api-url",
        envvar="MK8S_GITHUB_API_URL",
        help="GitHub API base [env MK8S_GITHUB_API_URL; default https://api.github.com].",
    ),
    click.option(
        "--release-url",
        envvar="MK8S_RELEASE_URL",
        help="Release downloads base [env MK8S_RELEASE_URL].",
    ),
    click.option(
        "--raw-url",
        envvar="MK8S_RAW_URL",
        help="Raw files base, for install.sh at the tag [env MK8S_RAW_URL].",
    ),
    click.option(
        "--cache",
        "cache_dir",
        type=click.Path(path_type=Path, file_okay=False),
        help="Content cache directory [default ~/.cache/mk8s].",
    ),
]


def upstream_options(f: F) -> F:
    """Add the upstream options; the command gets them as ``upstream=UpstreamArgs``."""
    return gather_options(f, UpstreamArgs, _UPSTREAM_OPTIONS, "upstream")


@click.command("lock")
@click.option("--rke2", "spec", required=True, help=f"RKE2 version: {SPEC_HELP}.")
@selection_options
@upstream_options
@workload_options
@click.option(
    "-o",
    "--output",
    "out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path(LOCK_NAME),
    show_default=True,
    help="Lockfile to write.",
)
def lock_cmd(
    spec: str,
    selection: Selection,
    upstream: UpstreamArgs,
    workloads: WorkloadArgs,
    out: Path,
) -> None:
    """Resolve a version and pin every artifact in a lockfile; downloads nothing large
    (images given with --image are pulled, to pin their archives)."""
    check_files(
        selection.files, workloads.charts, workloads.manifests, workloads.registry_auth_file
    )
    up = upstream.settings()
    settings = _lock_settings(spec, up, upstream.cache_dir, selection, workloads)
    lock = lock_release(settings)
    write_lock(lock, out)
    click.echo(
        f"locked RKE2 {lock.release.tag} ({', '.join(lock.release.arch)}): "
        f"{len(lock.artifacts)} artifacts, {ui.human_bytes(lock.total_size)} -> {out}"
    )


def _split_size(text: str | None) -> int | None:
    """``--split SIZE`` in bytes (InputError, exit 2, for a bad size)."""
    if text is None:
        return None
    size = parts.parse_size(text)
    note = parts.media_note(size)
    if note:
        ui.note(note)
    return size


def _where(created: Created) -> str:
    if created.parts is None:
        return str(created.bundle.path)
    return f"{created.parts.index_path} ({len(created.parts.part_paths)} parts)"


@click.command("create")
@click.option("--rke2", "spec", help=f"RKE2 version: {SPEC_HELP}.")
@click.option(
    "--lock",
    "lock_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Build exactly what this lockfile pins (instead of --rke2).",
)
@click.option(
    "--key",
    "key_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Private signing key (from `mk8s key generate`).",
)
@click.option("--unsigned", is_flag=True, help="Write an unsigned bundle (not recommended).")
@click.option(
    "-o",
    "--output",
    "out",
    type=click.Path(path_type=Path),
    help="Bundle file or directory [default: ./mk8s-rke2-TAG-linux-ARCH.tar.zst].",
)
@selection_options
@upstream_options
@workload_options
@click.option(
    "--jobs",
    type=click.IntRange(1, 64),
    default=None,
    help="Parallel downloads [default: 2 per CPU, at most 8].",
)
@click.option(
    "--include-self", is_flag=True, help="Carry the mk8s single-file executable in the bundle too."
)
@click.option("--force", is_flag=True, help="Replace the bundle file if it exists.")
@click.option("--split", "split_size", help="Write numbered parts of at most SIZE (4095M, 700M).")
@click.option(
    "--sbom",
    type=click.Choice(["cyclonedx", "spdx"]),
    is_flag=False,
    flag_value="cyclonedx",
    help="Embed an SBOM as a signed artifact (--sbom alone: cyclonedx).",
)
@click.option(
    "--base",
    "base_path",
    type=click.Path(path_type=Path, dir_okay=True),
    help="Write a delta: carry only what this earlier bundle (or its lock) lacks.",
)
@click.pass_context
def create_cmd(
    ctx: click.Context,
    spec: str | None,
    lock_path: Path | None,
    key_path: Path | None,
    unsigned: bool,
    out: Path | None,
    selection: Selection,
    upstream: UpstreamArgs,
    workloads: WorkloadArgs,
    jobs: int | None,
    include_self: bool,
    force: bool,
    split_size: str | None,
    sbom: str | None,
    base_path: Path | None,
) -> None:
    """Resolve, download, check and write one signed bundle plus its lockfile.

    Every byte is checked against upstream's sha256sum-ARCH.txt (or the lockfile);
    any difference is a supply-chain alarm (exit 3) and nothing is written. With
    --lock, the lock decides the selection: --arch, --cni, --images-group,
    --allow-prerelease and --file are refused.
    """
    if (spec is None) == (lock_path is None):
        raise click.UsageError("give exactly one of --rke2 SPEC or --lock FILE")
    if lock_path is not None:
        _refuse_selection_with_lock(ctx)
    check_files(
        selection.files, workloads.charts, workloads.manifests, workloads.registry_auth_file
    )
    split = _split_size(split_size)
    started = time.monotonic()
    signature, signer = _signer(key_path, unsigned)
    up = upstream.settings()
    settings = CreateSettings(
        upstream=up,
        signature=signature,
        out=out,
        jobs=jobs or default_jobs(),
        cache_dir=upstream.cache_dir,
        self_executable=_self_executable() if include_self else None,
        force=force,
        split=split,
        sbom=SbomFormat(sbom) if sbom else None,
        registry_auth_file=workloads.registry_auth_file,
        base=base_path,
    )
    with ui.Transfers("fetched") as progress:
        if lock_path is not None:
            lock = read_lock(lock_path)
        else:
            assert spec is not None
            pins = _lock_settings(spec, up, upstream.cache_dir, selection, workloads)
            lock = lock_release(pins, progress)
        created = create_bundle(lock, settings, progress)
    if created.delta is not None:
        for note in created.delta.notes:
            ui.warn(note)
    click.echo(_summary(created, signer, time.monotonic() - started))


def _self_executable() -> Path:
    """``--include-self``: the single-file mk8s to carry (imported only then)."""
    from mk8s.selfexe import executable_for_bundle

    return executable_for_bundle()


# The options that choose what to carry: a lock has already chosen.
_SELECTION = {
    "arches": "--arch",
    "cni": "--cni",
    "groups": "--images-group",
    "allow_prerelease": "--allow-prerelease",
    "files": "--file",
    "images": "--image",
    "images_file": "--images-file",
    "charts": "--chart",
    "manifests": "--manifest",
    "all_platforms": "--all-platforms",
}


def _refuse_selection_with_lock(ctx: click.Context) -> None:
    given = [
        flag
        for param, flag in _SELECTION.items()
        if ctx.get_parameter_source(param) not in (None, click.core.ParameterSource.DEFAULT)
    ]
    if given:
        raise click.UsageError(
            f"{', '.join(given)} cannot be combined with --lock: the lock already pins what"
            " the bundle carries; lock again with `mk8s bundle lock` to change it"
        )


def _signer(key_path: Path | None, unsigned: bool) -> tuple[Callable[[bytes], keys.Signature], str]:
    """The signing function and how the summary names it; UsageError without a choice."""
    if key_path is None and not unsigned:
        raise click.UsageError("give --key to sign the bundle (or --unsigned, not recommended)")
    if key_path is not None and unsigned:
        raise click.UsageError("--key and --unsigned contradict each other")
    if key_path is None:
        ui.warn("writing an UNSIGNED bundle: nothing will prove where it came from")
        return (lambda data: keys.unsigned()), "UNSIGNED"
    private = keys.load_private_key(key_path, passphrase_reader())
    return (lambda data: keys.sign(private, data)), (
        f"signed by key {keys.key_id(private.public_key())}"
    )


def _summary(created: Created, signer: str, seconds: float) -> str:
    b = created.bundle
    delta = ""
    if created.delta is not None:
        d = created.delta.delta
        delta = (
            f"  a delta of {d.base.describe()}: it carries"
            f" {ui.human_bytes(d.carried_bytes)} of {ui.human_bytes(b.artifact_bytes)}\n"
        )
    return (
        f"created {_where(created)}\n"
        f"  RKE2 {created.lock.release.tag} linux/{','.join(created.lock.release.arch)}, "
        f"{b.artifacts} files, {ui.human_bytes(b.artifact_bytes)} "
        f"({ui.human_bytes(b.size)} compressed), {signer}\n"
        f"{delta}"
        f"  bundle sha256 {b.sha256}\n"
        f"  lock {created.lock_path}\n"
        f"  {created.downloaded} downloaded, {seconds:.1f}s"
    )
