"""SSH host keys: known_hosts lookup with OpenSSH's rules, and the policy check.

Plain, hashed (``|1|``), wildcard (``*``, ``?``) and ``[host]:port`` names; negated
patterns (``!host``) exclude a line; ``@revoked`` keys are refused under every policy;
``@cert-authority`` lines are skipped. Nothing is sent to a host before its key passes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import paramiko

from mk8s.errors import HostKeyError
from mk8s.files import read_regular


def known_hosts_name(address: str, port: int) -> str:
    """How OpenSSH names a host in known_hosts: ``addr`` or ``[addr]:port``."""
    return address if port == 22 else f"[{address}]:{port}"


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style ``SHA256:...`` fingerprint of a public key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


MAX_KNOWN_HOSTS = 64 << 20


def _glob(pattern: str, hostname: str) -> bool:
    """OpenSSH's host pattern: ``*`` and ``?`` wildcards, case-insensitive (``[`` is
    literal: ``[host]:port`` names are not character classes)."""
    rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, hostname, re.IGNORECASE | re.DOTALL) is not None


def _host_matches(patterns: Sequence[str], hostname: str) -> bool:
    """Whether a known_hosts line's comma-separated patterns name ``hostname``.

    As in OpenSSH: a hashed entry matches its one host; otherwise some pattern must
    match and no negated (``!pattern``) one may: ``!host`` alone never matches.
    """
    positive = False
    for pattern in patterns:
        if pattern.startswith("|1|"):
            positive = positive or paramiko.HostKeys.hash_host(hostname, pattern) == pattern
        elif pattern.startswith("!"):
            if _glob(pattern[1:], hostname):
                return False
        elif _glob(pattern, hostname):
            positive = True
    return positive


@dataclass(frozen=True)
class KnownHost:
    """One known_hosts line that names the host: its key, and whether it is revoked."""

    line: int
    key: paramiko.PKey
    revoked: bool = False


def known_keys(path: Path, hostname: str) -> list[KnownHost]:
    """Every known_hosts entry for ``hostname`` (plain, hashed, wildcard, ``@revoked``).

    ``@cert-authority`` lines and lines paramiko cannot parse (unknown key types) are
    skipped, as OpenSSH skips what it does not understand."""
    found: list[KnownHost] = []
    try:
        data = read_regular(
            path, what="known_hosts file", max_size=MAX_KNOWN_HOSTS, error=HostKeyError
        )
    except HostKeyError as e:
        if isinstance(e.__cause__, FileNotFoundError):
            return found
        raise
    for lineno, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        line = line.strip()
        revoked = False
        if line.startswith("@revoked"):
            revoked, line = True, line[len("@revoked") :].strip()
        if not line or line.startswith(("#", "@")):
            continue
        fields = line.split()
        if len(fields) < 3 or not _host_matches(fields[0].split(","), hostname):
            continue
        try:
            entry = paramiko.hostkeys.HostKeyEntry.from_line(line, lineno)
        except (paramiko.SSHException, ValueError, TypeError, IndexError, binascii.Error):
            continue
        if entry is None or entry.key is None:
            continue
        found.append(KnownHost(lineno, entry.key, revoked))
    return found


_append_lock = threading.Lock()


def _append_known_host(path: Path, hostname: str, key: paramiko.PKey) -> None:
    line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
    with _append_lock:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as f:
            f.write(line)


def check_host_key(
    address: str, port: int, key: paramiko.PKey, known_hosts: Path, policy: str
) -> None:
    """Accept ``key`` for ``address:port`` or raise HostKeyError (nothing was sent yet).

    A key equal to a known one passes. A different key of a type known for the host
    is CHANGED: always refused, naming the file and line and the ``ssh-keygen -R``
    fix. An unknown host is refused under ``strict`` and appended to ``known_hosts``
    under ``accept-new``. A host known only under other key types is refused too.
    """
    hostname = known_hosts_name(address, port)
    entries = known_keys(known_hosts, hostname)
    for e in entries:
        if e.revoked and e.key == key:
            raise HostKeyError(
                f"host key for {hostname} ({key.get_name()} {fingerprint(key)}) is REVOKED"
                f" in {known_hosts}:{e.line}; not connecting",
                "the host offers a key marked @revoked: reinstall its host keys, or remove"
                " the marker if it was a mistake",
            )
    known = [(e.line, e.key) for e in entries if not e.revoked]
    if any(k == key for _, k in known):
        return
    same_type = [(n, k) for n, k in known if k.get_name() == key.get_name()]
    if same_type:
        lineno, old = same_type[0]
        raise HostKeyError(
            f"host key for {hostname} CHANGED: {known_hosts}:{lineno} has"
            f" {old.get_name()} {fingerprint(old)} but the host offers {fingerprint(key)};"
            " not connecting",
            f"if the host was reinstalled, run `ssh-keygen -R {hostname} -f {known_hosts}`"
            " and check the new fingerprint; otherwise someone may be intercepting"
            " the connection",
        )
    if known:
        types = ", ".join(sorted({k.get_name() for _, k in known}))
        raise HostKeyError(
            f"{hostname} offers a {key.get_name()} host key ({fingerprint(key)}) but"
            f" {known_hosts}:{known[0][0]} knows it only by {types}; not connecting",
            f"check the host, then add its key with `ssh-keyscan -p {port} {address}"
            f" >> {known_hosts}`",
        )
    if policy == "accept-new":
        _append_known_host(known_hosts, hostname, key)
        return
    raise HostKeyError(
        f"host key for {hostname} ({key.get_name()} {fingerprint(key)}) is not in {known_hosts}",
        f"add it with `ssh-keyscan -p {port} {address} >> {known_hosts}` after checking"
        " its fingerprint, or set ssh.hostKeyPolicy: accept-new",
    )
