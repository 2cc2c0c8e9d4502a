"""``mk8s bundle sbom | diff``: provenance for a transfer review.

Thin commands over :mod:`mk8s.bundle.provenance.sbom` and
:mod:`mk8s.bundle.provenance.diff`. Bundles are verified first (the same ``--key``
trust as ``bundle verify``): nothing is reported from an unverified bundle.
"""

from __future__ import annotations

from pathlib import Path

import click

from mk8s import ui
from mk8s.bundle.format import keys, parts
from mk8s.bundle.format.manifest import Lock
from mk8s.bundle.format.reader import UNSIGNED_WARNING
from mk8s.bundle.provenance import inventory, sbom
from mk8s.bundle.provenance.diff import diff, render_text
from mk8s.bundle.provenance.inventory import Inventory
from mk8s.cli.bundle import BASE, BUNDLE_ARG
from mk8s.cli.common import ALLOW_UNSIGNED, key_option, print_json
from mk8s.errors import InputError, OutputError
from mk8s.files import atomic_write, open_regular, read_regular

MAX_LOCK = 16 << 20


def _trusted(key_paths: tuple[Path, ...], allow_unsigned: bool) -> list[keys.TrustedKey]:
    if not key_paths and not allow_unsigned:
        raise click.UsageError(
            "give the signer's public key with --key: a bundle is verified before "
            "anything is reported from it"
        )
    return keys.load_trusted_keys(key_paths)


def _from_bundle(
    path: Path, trusted: list[keys.TrustedKey], allow_unsigned: bool, base: Path | None = None
) -> Inventory:
    with ui.ProgressBar(f"verifying {path.name}", 0) as bar:
        inv, verified = inventory.from_bundle(
            path, trusted, allow_unsigned=allow_unsigned, progress=bar.update, base=base
        )
    if verified.signer is None:
        ui.warn(UNSIGNED_WARNING)
    for art in inv.artifacts:
        problem = inv.contents_of(art).problem
        if problem:
            ui.warn(f"{path.name}: {art.path}: {problem}")
    return inv


@click.command("sbom")
@BUNDLE_ARG
@key_option(required=False)
@ALLOW_UNSIGNED
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["cyclonedx", "spdx"]),
    default="cyclonedx",
    show_default=True,
    help="CycloneDX 1.5 JSON or SPDX 2.3 JSON.",
)
@click.option(
    "-o", "--output", "out", type=click.Path(path_type=Path, dir_okay=False), help="SBOM file."
)
@BASE
def sbom_cmd(
    bundle_path: Path,
    key_paths: tuple[Path, ...],
    allow_unsigned: bool,
    fmt: str,
    out: Path | None,
    base_path: Path | None,
) -> None:
    """Write the SBOM of a bundle (split or not) after verifying it: every artifact
    with its sha256, the RKE2 release, every container image in the image archives
    (name, tag, digest) and the Helm charts. Same bundle, same bytes. A delta (with
    --base) gives the SBOM of the whole release, as its full bundle would."""
    trusted = _trusted(key_paths, allow_unsigned)
    inv = _from_bundle(bundle_path, trusted, allow_unsigned, base_path)
    data = sbom.render(inv, sbom.SbomFormat(fmt))
    if out is None:
        click.echo(data.decode("ascii"), nl=False)
        return
    try:
        atomic_write(out, data)
    except OSError as e:
        raise OutputError(f"cannot write {out}: {e.strerror or e}") from e
    click.echo(ui.safe(f"wrote {fmt} SBOM of {bundle_path.name} to {out}"), err=True)


def _is_lock(path: Path) -> bool:
    """A lock (or an extracted manifest) is JSON; a bundle is zstd or a parts index."""
    if parts.locate(path) is not None:
        return False
    with open_regular(path, what="bundle or lock", fix="give a bundle or an mk8s.lock") as f:
        return f.read(64).lstrip()[:1] == b"{"


def _read_lock(path: Path) -> Lock:
    data = read_regular(path, what="lockfile", max_size=MAX_LOCK, fix="give an mk8s.lock")
    return Lock.from_bytes(data, source=str(path))


def _base_of(path: Path, given: Path | None, other: Path | None) -> Path | None:
    """The base to read ``path`` with: none for a lock or a full bundle; ``given``, else
    ``other`` (OLD, for NEW) for a delta; a delta without either names what it needs."""
    from mk8s.bundle.format.reader import read_head

    if _is_lock(path):
        return None
    head = read_head(path)
    if head.manifest is None or head.manifest.delta is None:
        return None
    if given is not None:
        return given
    if other is not None and not _is_lock(other):
        return other
    return None  # verifying it then names the base it needs (exit 3)


@click.command("diff")
@click.argument("old", metavar="OLD", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("new", metavar="NEW", type=click.Path(path_type=Path, dir_okay=False))
@key_option(required=False)
@ALLOW_UNSIGNED
@click.option("--json", "as_json", is_flag=True, help="Print the differences as JSON.")
@click.option(
    "--base",
    "base_path",
    type=click.Path(path_type=Path, dir_okay=True),
    help="The base of a delta among OLD and NEW [default: OLD, for a delta NEW].",
)
def diff_cmd(
    old: Path,
    new: Path,
    key_paths: tuple[Path, ...],
    allow_unsigned: bool,
    as_json: bool,
    base_path: Path | None,
) -> None:
    """What changed from OLD to NEW (bundles or locks): the RKE2 release, artifacts
    added, removed or changed, and container images by digest (bundles only, verified
    first with --key). A delta is compared as its whole release, read with its base:
    --base, or OLD when NEW is a delta and OLD a bundle. Exits 0 whether or not
    anything changed."""
    if old.resolve() == new.resolve():
        raise InputError(f"OLD and NEW are the same file {old}", "give two different files")
    bases = {p: _base_of(p, base_path, old if p == new else None) for p in (old, new)}
    if base_path is not None and base_path not in bases.values():
        raise InputError(
            f"--base {base_path} is for a delta, and neither {old} nor {new} is one",
            "drop --base",
        )
    sides: list[Inventory] = []
    trusted: list[keys.TrustedKey] | None = None
    for path in (old, new):
        if _is_lock(path):
            sides.append(inventory.from_lock(_read_lock(path)))
            continue
        if trusted is None:
            trusted = _trusted(key_paths, allow_unsigned)
        sides.append(_from_bundle(path, trusted, allow_unsigned, bases[path]))
    result = diff(sides[0], sides[1])
    if as_json:
        print_json(result.to_json())
        return
    for line in render_text(result):
        click.echo(ui.safe(line))
