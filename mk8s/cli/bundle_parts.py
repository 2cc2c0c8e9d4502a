"""``mk8s bundle split | join``: a bundle in parts for size-limited media.

Thin commands over :mod:`mk8s.bundle.format.split`.
"""

from __future__ import annotations

from pathlib import Path

import click

from mk8s import ui
from mk8s.bundle.format import keys, parts, split
from mk8s.cli.bundle import BUNDLE_ARG
from mk8s.cli.common import passphrase_reader


@click.command("split")
@BUNDLE_ARG
@click.option("--size", "size_text", required=True, help="Largest part: e.g. 4095M, 700M, 4GB.")
@click.option(
    "--key",
    "key_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Sign the parts index with this private key (otherwise it is unsigned).",
)
@click.option(
    "-o", "--output", "out", type=click.Path(path_type=Path), help="Directory for the parts."
)
@click.option("--force", is_flag=True, help="Replace existing parts.")
def split_cmd(
    bundle_path: Path, size_text: str, key_path: Path | None, out: Path | None, force: bool
) -> None:
    """Cut a bundle into numbered parts plus a parts index; the bundle is not re-signed.

    `cat NAME.000 NAME.001 ... > NAME` gives back the exact bundle. Without --key the
    index is unsigned: verify then checks each part by its hash, and the contents, as
    always, by the bundle's own signature.
    """
    size = parts.parse_size(size_text)
    note = parts.media_note(size)
    if note:
        ui.note(note)
    if key_path is not None:
        private = keys.load_private_key(key_path, passphrase_reader())

        def signature(data: bytes) -> keys.Signature:
            return keys.sign(private, data)
    else:

        def signature(data: bytes) -> keys.Signature:
            return keys.unsigned()

    target = (out / bundle_path.name) if out is not None else None
    result = split.split_bundle(bundle_path, size, signature, out=target, force=force)
    click.echo(_split_summary(result))


def _split_summary(result: split.SplitResult) -> str:
    ix = result.index
    signed = "signed" if result.signed else "UNSIGNED"
    return ui.safe(
        f"split {ix.bundle_name} ({ui.human_bytes(ix.bundle_size)}) into {len(ix.parts)} "
        f"parts of at most {ui.human_bytes(ix.part_size)}\n"
        f"  index {result.index_path} ({signed})\n"
        f"  bundle sha256 {ix.bundle_sha256}",
        keep_newlines=True,
    )


@click.command("join")
@click.argument("parts_path", metavar="PARTS", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "-o", "--output", "out", type=click.Path(path_type=Path), help="Bundle file or directory."
)
@click.option("--force", is_flag=True, help="Replace the bundle file if it exists.")
def join_cmd(parts_path: Path, out: Path | None, force: bool) -> None:
    """Join a split bundle's parts (give the .parts index or the first part) into one
    file, checking every part's hash and the whole bundle's sha256 on the way.

    Joining checks integrity, not origin: run `mk8s bundle verify` on the result.
    """
    result = split.join_parts(parts_path, out, force=force)
    click.echo(
        ui.safe(
            f"joined {result.parts} parts into {result.path} "
            f"({ui.human_bytes(result.size)}), sha256 {result.sha256}"
        )
    )
