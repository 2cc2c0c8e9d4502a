"""``mk8s bundle``: create, inspect, verify and extract bundles."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from mk8s import ui
from mk8s.bundle import check
from mk8s.bundle.format import keys, parts, reader
from mk8s.bundle.format.manifest import Lock, bundle_id
from mk8s.cli import LazyGroup
from mk8s.cli.common import ALLOW_UNSIGNED, key_option, print_json
from mk8s.errors import BundleRejected

F = TypeVar("F", bound=Callable[..., Any])

BUNDLE_ARG = click.argument(
    "bundle_path", metavar="BUNDLE", type=click.Path(path_type=Path, dir_okay=False)
)


BASE = click.option(
    "--base",
    "base_path",
    type=click.Path(path_type=Path, dir_okay=True),
    help="The full bundle a delta was made against (deltas only).",
)


@click.group(
    cls=LazyGroup,
    lazy={
        "lock": "mk8s.cli.bundle_create:lock_cmd",
        "create": "mk8s.cli.bundle_create:create_cmd",
        "split": "mk8s.cli.bundle_parts:split_cmd",
        "join": "mk8s.cli.bundle_parts:join_cmd",
        "sbom": "mk8s.cli.provenance:sbom_cmd",
        "diff": "mk8s.cli.provenance:diff_cmd",
    },
)
def bundle() -> None:
    """Create, inspect, verify and extract bundles."""


def _trusted(key_paths: tuple[Path, ...], allow_unsigned: bool) -> list[keys.TrustedKey]:
    if not key_paths and not allow_unsigned:
        raise click.UsageError("give the signer's public key with --key")
    return keys.load_trusted_keys(key_paths)


def _summary(v: reader.VerifiedBundle) -> dict[str, object]:
    m = v.manifest
    return {
        "ok": True,
        "bundle": str(v.path),
        "bundleId": v.bundle_id,
        "sha256": v.file_sha256,
        "size": v.file_size,
        "rke2": m.release.tag,
        "arch": list(m.release.arch),
        "artifacts": len(m.artifacts),
        "artifactBytes": m.total_size,
        "signer": v.signer.key_id if v.signer else None,
        "signerKey": str(v.signer.path) if v.signer else None,
        "createdBy": m.created_by,
        "delta": None if v.delta is None else delta_info(v.delta),
    }


def delta_info(d: object) -> dict[str, object]:
    """What ``verify --json`` says about a delta and the base it was checked with."""
    assert isinstance(d, reader.DeltaVerified) and d.manifest.delta is not None
    ref = d.manifest.delta.base
    return {
        "bundleId": bundle_id(d.manifest_bytes),
        "carried": d.carried,
        "base": {"path": str(d.base_path), "bundleId": d.base_bundle_id, "needed": ref.to_json()},
    }


def _summary_line(v: reader.VerifiedBundle, verb: str) -> str:
    m = v.manifest
    signer = f"signed by key {v.signer.key_id}" if v.signer else "UNSIGNED"
    line = (
        f"{verb}: RKE2 {m.release.tag} linux/{','.join(m.release.arch)}, "
        f"{len(m.artifacts)} artifacts ({ui.human_bytes(m.total_size)}), {signer}, "
        f"bundle sha256 {v.file_sha256}"
    )
    if v.delta is not None:
        line += (
            f"\n  a delta ({ui.human_bytes(v.delta.carried)} carried) with its base"
            f" {v.delta.base_path} (bundle id {v.delta.base_bundle_id}): as the full bundle"
            f" {v.bundle_id}"
        )
    return ui.safe(line, keep_newlines=True)


def _warn_unsigned(v: reader.VerifiedBundle) -> None:
    if v.signer is None:
        ui.warn(reader.UNSIGNED_WARNING)


@bundle.command("verify")
@BUNDLE_ARG
@key_option(required=False)
@ALLOW_UNSIGNED
@BASE
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def verify(
    bundle_path: Path,
    key_paths: tuple[Path, ...],
    allow_unsigned: bool,
    base_path: Path | None,
    as_json: bool,
) -> None:
    """Check a bundle offline: signature, then every member, in one streaming pass.

    A delta is checked with its base (--base): both files, as if the whole release had
    been carried. Exits 0 when every check passes, 3 when the bundle (or the base) is
    rejected or missing (the message names the member and the reason), 2 when a key
    file is unusable.
    """
    trusted = _trusted(key_paths, allow_unsigned)
    try:
        split = parts.check_index(bundle_path, trusted, allow_unsigned=allow_unsigned)
        with ui.ProgressBar("verifying", 0) as bar:
            v = check.verify(
                bundle_path,
                trusted,
                allow_unsigned=allow_unsigned,
                progress=bar.update,
                base=base_path,
            )
        if split is not None:
            split.check_whole(v.file_sha256)
    except BundleRejected as e:
        if as_json:
            print_json({"ok": False, "bundle": str(bundle_path), "error": str(e)})
        raise
    _warn_unsigned(v)
    if as_json:
        print_json(_summary(v))
    else:
        click.echo(_summary_line(v, "verified"))


@bundle.command("extract")
@BUNDLE_ARG
@key_option(required=False)
@ALLOW_UNSIGNED
@BASE
@click.option(
    "-d",
    "--dir",
    "dest",
    required=True,
    type=click.Path(path_type=Path),
    help="Directory to extract into (created if missing).",
)
def extract(
    bundle_path: Path,
    key_paths: tuple[Path, ...],
    allow_unsigned: bool,
    base_path: Path | None,
    dest: Path,
) -> None:
    """Verify while extracting; nothing is left in DIR unless every check passes.

    A delta (with --base) extracts as the whole release: every artifact, rebuilt and
    checked against its pins, plus the delta's own signed manifest."""
    trusted = _trusted(key_paths, allow_unsigned)
    parts.check_index(bundle_path, trusted, allow_unsigned=allow_unsigned)  # split bundle
    v = check.extract(bundle_path, trusted, dest, allow_unsigned=allow_unsigned, base=base_path)
    _warn_unsigned(v)
    click.echo(_summary_line(v, "extracted"))
    click.echo(f"into {dest}")


@bundle.command("inspect")
@BUNDLE_ARG
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def inspect(bundle_path: Path, as_json: bool) -> None:
    """Print the manifest. Reads only the head of the file: this is NOT verification."""
    head = reader.read_head(bundle_path)
    if head.manifest is None:
        raise BundleRejected(f"cannot inspect {bundle_path}: {head.problem}")
    sig = head.signature
    if as_json:
        print_json(
            {
                "verified": False,
                "note": "inspect does not verify; run `mk8s bundle verify`",
                "bundleId": head.bundle_id,
                "manifest": head.manifest.to_json(),
                "signature": None
                if sig is None
                else {"algorithm": sig.algorithm, "keyId": sig.key_id or None},
                "problem": head.problem,
            }
        )
        return
    click.echo(_inspect_text(head.manifest, head.bundle_id, sig, head.problem))


def _inspect_text(m: Lock, bid: str, sig: keys.Signature | None, problem: str | None) -> str:
    if sig is None:
        signed = f"unreadable signature ({problem})"
    elif not sig.signed:
        signed = "UNSIGNED"
    else:
        signed = f"key {sig.key_id} ({sig.algorithm}), not checked"
    lines = [
        "NOT VERIFIED: inspect only reads the manifest; run `mk8s bundle verify` to check it.",
        f"bundle id:   {bid}",
        f"rke2:        {m.release.tag} (requested {m.release.requested})",
        f"arch:        {', '.join(m.release.arch)}",
        f"cni:         {m.release.cni}",
        f"images:      {', '.join(m.release.image_groups) or '(default)'}",
        f"resolved at: {m.resolved_at}",
        f"created by:  {m.created_by}",
        f"signature:   {signed}",
        f"artifacts:   {len(m.artifacts)} ({ui.human_bytes(m.total_size)})",
    ]
    width = max(len(a.path) for a in m.artifacts)
    for a in m.artifacts:
        lines.append(f"  {a.path:<{width}}  {ui.human_bytes(a.size):>10}  sha256:{a.sha256}")
    if m.delta is not None:
        from mk8s.bundle.delta.describe import inspect_lines

        lines += inspect_lines(m)
    # Imported here: only inspect pays for the workload module (yaml, chart archives).
    from mk8s.bundle.workload_sources import summary

    carried = summary(m)
    if carried:
        lines.append(f"workloads:   {len(carried)}")
        lines += [f"  {w}" for w in carried]
    # An unverified manifest is attacker-controlled text: escape it line by line.
    return "\n".join(ui.safe(line) for line in lines)
