"""``mk8s key``: signing keys."""

from __future__ import annotations

from pathlib import Path

import click

from mk8s import ui
from mk8s.bundle.format import keys
from mk8s.cli.common import passphrase_for_new_key


@click.group()
def key() -> None:
    """Manage bundle signing keys."""


@key.command("generate")
@click.option(
    "--out",
    "prefix",
    default="mk8s",
    show_default=True,
    type=click.Path(path_type=Path),
    help="Write PREFIX.key (private) and PREFIX.pub (public).",
)
@click.option(
    "--algorithm",
    type=click.Choice([str(a) for a in keys.ALGORITHMS]),
    default="ed25519",
    show_default=True,
    help="Key type.",
)
@click.option(
    "--no-passphrase", is_flag=True, help="Leave the private key unencrypted (not recommended)."
)
@click.option("--force", is_flag=True, help="Overwrite existing key files.")
def generate(prefix: Path, algorithm: str, no_passphrase: bool, force: bool) -> None:
    """Generate a signing key pair.

    The private key is PKCS#8 PEM, encrypted with the passphrase from
    MK8S_KEY_PASSPHRASE (or asked for on a terminal), written 0600. The public key is
    SubjectPublicKeyInfo PEM: carry it across the air gap out of band.
    """
    keys.check_key_pair_free(prefix, force=force)
    passphrase = None if no_passphrase else passphrase_for_new_key()
    if no_passphrase:
        ui.warn("the private key is written unencrypted; anyone who reads it can sign bundles")
    key = keys.generate_private_key(keys.SignatureAlgorithm(algorithm))
    files = keys.write_key_pair(key, prefix, passphrase, force=force)
    click.echo(f"private key: {files.private}")
    click.echo(f"public key:  {files.public}")
    click.echo(f"key id:      {files.key_id} ({files.algorithm})")
