"""Registry credentials: explicit, or from the Docker / containers auth files.

Looks in, first match wins: ``$REGISTRY_AUTH_FILE`` (podman, skopeo), then
``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``. An ``auths`` entry
matches a registry whether its key is ``host``, ``host:port``, ``https://host/v2/`` or,
for Docker Hub, ``https://index.docker.io/v1/``. Entries hold ``auth`` (base64 of
``user:password``) or ``username`` and ``password``. Credential helpers (``credsStore``,
``credHelpers``) and identity tokens are not run or used: give such credentials
explicitly.

A :class:`Credentials` never shows its password: not in ``repr``, not in any log line,
not in any exception message (malformed entries are named by file and registry only).
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mk8s.errors import CredentialsFileError
from mk8s.files import read_regular
from mk8s.images.reference import DOCKER_HUB
from mk8s.untrusted import load_json

#: A Docker config holds a few registries' entries: a few KiB.
MAX_AUTH_FILE = 1 << 20
_HUB_KEYS = ("docker.io", "index.docker.io", "registry-1.docker.io")


@dataclass(frozen=True)
class Credentials:
    """A username and password (or token used as a password) for one registry."""

    username: str
    password: str = field(repr=False)

    def basic_header(self) -> str:
        """The ``Authorization: Basic ...`` value; for requests only, never for logs."""
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


def auth_file_candidates(env: Mapping[str, str] | None = None) -> list[Path]:
    """The auth files consulted, in order (they need not exist)."""
    env = os.environ if env is None else env
    out: list[Path] = []
    if env.get("REGISTRY_AUTH_FILE"):
        out.append(Path(env["REGISTRY_AUTH_FILE"]))
    if env.get("DOCKER_CONFIG"):
        out.append(Path(env["DOCKER_CONFIG"]) / "config.json")
    else:
        home = env.get("HOME") or str(Path.home())
        out.append(Path(home) / ".docker" / "config.json")
    return out


def registry_key(key: str) -> str:
    """Normalise an ``auths`` key or a registry name to ``host[:port]``."""
    text = key.strip()
    host = urlsplit(text).netloc if "://" in text else text.split("/", 1)[0]
    host = host.lower()
    return DOCKER_HUB if host in _HUB_KEYS else host


def find_credentials(registry: str, env: Mapping[str, str] | None = None) -> Credentials | None:
    """Credentials for ``registry`` from the first auth file that has an entry for it.

    Returns None when no file has one (anonymous access is then tried). Raises
    CredentialsFileError naming the file (and registry) when a file exists but is not
    JSON or the matching entry cannot be decoded.
    """
    want = registry_key(registry)
    for path in auth_file_candidates(env):
        auths = _read_auths(path)
        for key, entry in auths.items():
            if registry_key(key) == want:
                creds = _decode_entry(entry, path, want)
                if creds is not None:
                    return creds
    return None


def resolve_credentials(
    registry: str,
    username: str | None = None,
    password: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Credentials | None:
    """Explicit ``username``/``password`` when given, else :func:`find_credentials`."""
    if username is not None or password is not None:
        if not username or password is None:
            raise CredentialsFileError(
                f"credentials for {registry} need both a username and a password",
                "give both, or neither to use the Docker config",
            )
        return Credentials(username, password)
    return find_credentials(registry, env)


def read_auth_file(path: Path) -> dict[str, Any]:
    """The ``auths`` of the auth file ``path``, which must be a regular file of at most
    :data:`MAX_AUTH_FILE` bytes of JSON nested at most 64 levels; CredentialsFileError
    (exit 2) otherwise, never quoting the file (it holds secrets)."""
    fix = "give a Docker config.json (docker/podman login writes one)"
    raw = read_regular(
        path, what="registry auth file", max_size=MAX_AUTH_FILE, error=CredentialsFileError, fix=fix
    )
    try:
        doc = load_json(
            raw,
            what=f"registry auth file {path}",
            error=lambda problem: CredentialsFileError(problem, fix),
            max_bytes=MAX_AUTH_FILE,
        )
    except CredentialsFileError as e:
        # ``from None``: the decoder's exception holds the document, which holds secrets.
        raise CredentialsFileError(e.problem, e.fix) from None
    auths = doc.get("auths") if isinstance(doc, dict) else None
    return auths if isinstance(auths, dict) else {}


def _read_auths(path: Path) -> dict[str, Any]:
    if not path.exists():  # a default place with no file: no credentials from there
        return {}
    return read_auth_file(path)


def _decode_entry(entry: Any, path: Path, registry: str) -> Credentials | None:
    if not isinstance(entry, dict):
        return None
    if isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
        return Credentials(entry["username"], entry["password"])
    auth = entry.get("auth")
    if not isinstance(auth, str) or not auth:
        return None
    try:
        user, sep, password = base64.b64decode(auth, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        user, sep, password = "", "", ""
    if not sep or not user:
        raise CredentialsFileError(
            f"the auth entry for {registry} in {path} is not base64 of 'user:password'",
            "log in again with docker/podman login, or fix the entry",
        ) from None
    return Credentials(user, password)
