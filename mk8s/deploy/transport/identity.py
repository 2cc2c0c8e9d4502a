"""SSH identities: private key files, decrypted once per process and file."""

from __future__ import annotations

import getpass
import os
import sys
import threading
from pathlib import Path
from typing import Any, cast

import paramiko

from mk8s.callbacks import PassphrasePrompt
from mk8s.errors import ConnectError
from mk8s.files import open_regular

PASSPHRASE_ENV = "MK8S_SSH_PASSPHRASE"  # noqa: S105  (a variable name, not a secret)
MAX_IDENTITY_FILE = 64 << 10  # an RSA-16384 key in PEM is under 13 KiB

_identity_cache: dict[tuple[str, float], paramiko.PKey] = {}
_identity_lock = threading.Lock()


def _tty_prompt(text: str) -> str:
    return getpass.getpass(text)


def load_identity(path: Path, prompt: PassphrasePrompt | None = None) -> paramiko.PKey:
    """Load a private key, decrypting it with ``MK8S_SSH_PASSPHRASE`` or ``prompt``.

    Without a prompt, a terminal is asked; with no terminal either, ConnectError says
    to set the variable. Decrypted keys are cached per file (and mtime) for this
    process, so many nodes ask once. Raises ConnectError for an unreadable or
    malformed file and for a wrong passphrase.
    """
    with _identity_lock:
        try:
            cache_key = (str(path), path.stat().st_mtime)
        except OSError as e:
            raise ConnectError(
                f"cannot read identity file {path}: {e.strerror or e}",
                "fix ssh.identityFile, or remove it to use the ssh-agent",
            ) from e
        if cache_key in _identity_cache:
            return _identity_cache[cache_key]
        passphrase = os.environ.get(PASSPHRASE_ENV)
        try:
            key = _load_key(path, passphrase)
        except paramiko.PasswordRequiredException as e:
            if prompt is None:
                if not (sys.stdin.isatty() and sys.stderr.isatty()):
                    raise ConnectError(
                        f"identity file {path} is encrypted and there is no terminal to ask"
                        " for its passphrase",
                        f"set {PASSPHRASE_ENV}, or load the key into ssh-agent and remove"
                        " ssh.identityFile",
                    ) from e
                prompt = _tty_prompt
            key = _load_key(path, prompt(f"Passphrase for {path}: "))
        _identity_cache[cache_key] = key
        return key


def _load_key(path: Path, passphrase: str | None) -> paramiko.PKey:
    # paramiko reads the whole file: a FIFO or a huge file is refused first.
    with open_regular(path, what="identity file", error=ConnectError) as f:
        if os.fstat(f.fileno()).st_size > MAX_IDENTITY_FILE:
            raise ConnectError(
                f"identity file {path} is larger than {MAX_IDENTITY_FILE} bytes",
                "point ssh.identityFile at an OpenSSH or PEM private key",
            )
    try:
        # from_path wants bytes (cryptography does the decryption).
        secret = None if passphrase is None else passphrase.encode()
        return paramiko.PKey.from_path(path, cast(Any, secret))
    except paramiko.PasswordRequiredException:
        raise
    except (paramiko.SSHException, ValueError, TypeError) as e:
        # PKey.from_path reports an encrypted OpenSSH-format key as a plain
        # SSHException ("Key is password-protected, but password was not provided").
        if passphrase is None and "password-protected" in str(e):
            raise paramiko.PasswordRequiredException(str(e)) from e
        if passphrase is not None:
            raise ConnectError(
                f"cannot load identity file {path}: {e}",
                f"check the passphrase ({PASSPHRASE_ENV} or the prompt) and the file",
            ) from e
        raise ConnectError(
            f"identity file {path} is not a usable private key: {e}",
            "point ssh.identityFile at an OpenSSH or PEM private key",
        ) from e
    except OSError as e:
        raise ConnectError(f"cannot read identity file {path}: {e.strerror or e}", None) from e
