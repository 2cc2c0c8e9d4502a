"""The registry's CA (``spec.images.registry.caFile``): certificates, and only those.

The file is uploaded to every node world-readable (0644: containerd reads it), and a
dry-run prints the plan, so a ``caFile`` that names the password file or a private key
by mistake must never get that far. :func:`read_ca` reads it within a size cap, refuses
anything but PEM certificates (naming the file, never quoting it), and returns the
certificates re-encoded by ``cryptography``: what is uploaded is exactly certificates,
whatever else the file held. A plan shows the CA as :func:`describe` names it.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mk8s.errors import InputError
from mk8s.files import read_regular

#: A CA bundle of a few hundred certificates fits easily.
MAX_CA_FILE = 1 << 20
FIX = "caFile must be the PEM certificate(s) of the CA that signed the registry's certificate"
_BEGIN = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")


def read_ca(path: Path) -> bytes:
    """The PEM certificates in ``path``; InputError (exit 2) for a file that is not a
    regular file of certificates only (a private key, a password, anything else)."""
    data = read_regular(path, what="registry CA file", max_size=MAX_CA_FILE, fix=FIX)
    if b"PRIVATE KEY" in data:  # any PEM label of a key: PRIVATE, RSA/EC/ENCRYPTED PRIVATE
        raise InputError(
            f"{path} holds a private key, not only certificates; it would be readable by"
            " everyone on every node",
            FIX,
        )
    labels = {m.group(1) for m in _BEGIN.finditer(data)}
    if labels - {b"CERTIFICATE"}:
        raise InputError(f"{path} holds PEM blocks that are not certificates", FIX)
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as e:  # its message never quotes the file
        raise InputError(f"{path} is not a PEM certificate", FIX) from e
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def describe(pem: bytes, path: Path) -> str:
    """How a plan shows the CA it uploads: never the content, its name and hash."""
    count = pem.count(b"-----BEGIN CERTIFICATE-----")
    sha = hashlib.sha256(pem).hexdigest()
    return f"<{count} certificate(s) from {path.name}, {len(pem)} bytes, sha256 {sha}>"


__all__ = ["MAX_CA_FILE", "describe", "read_ca"]
