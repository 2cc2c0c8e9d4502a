"""SSH key pairs made by the real ssh-keygen, as an operator makes them."""

from __future__ import annotations

import subprocess
from pathlib import Path


def ssh_keygen(path: Path, passphrase: str = "") -> Path:
    """An ed25519 key pair at ``path`` (and ``path``.pub), encrypted when ``passphrase``."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", "t", "-f", str(path)],
        check=True,
    )
    return path
