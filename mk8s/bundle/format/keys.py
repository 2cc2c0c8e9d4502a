"""Signing keys: generate, load, sign, verify, key ids, and the signature file format.

Keys are standard PEM so an auditor can use ``openssl``: the private key is PKCS#8
(encrypted unless the user insists), the public key SubjectPublicKeyInfo. A key id is
the sha256 of the public key's DER, as ``openssl pkey -pubin -outform DER | sha256sum``
prints it.

The signature member (``mk8s-bundle.json.sig``) is a few ``name: value`` lines so it
can be read with ``sed`` and ``base64 -d``::

    mk8s-signature: v1
    algorithm: ed25519
    key-id: <64 hex>
    signature: <base64>

Ed25519 signs the manifest bytes directly; ECDSA P-256 signs their SHA-256 with a
deterministic nonce (RFC 6979), DER-encoded, so the same key and manifest always give
the same bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from mk8s.errors import BundleRejected, KeyFileError, OutputError
from mk8s.files import atomic_write, read_regular


class SignatureAlgorithm(StrEnum):
    """What signed a manifest or a parts index; :attr:`NONE` marks one written unsigned
    (``--unsigned``, or ``bundle split`` without ``--key``)."""

    ED25519 = "ed25519"
    ECDSA_P256 = "ecdsa-p256"
    NONE = "none"


#: The algorithms of a key: every :class:`SignatureAlgorithm` but NONE.
ALGORITHMS = (SignatureAlgorithm.ED25519, SignatureAlgorithm.ECDSA_P256)
_SIG_MAGIC = "mk8s-signature: v1"
_MAX_SIG_BYTES = 4096
# A PEM key is a few hundred bytes; anything far larger is not a key (or is a bomb).
MAX_KEY_FILE = 64 << 10

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey


def key_id(public_key: PublicKey) -> str:
    """sha256 (hex) of the public key's SubjectPublicKeyInfo DER."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def algorithm_of(key: PrivateKey | PublicKey) -> SignatureAlgorithm:
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return SignatureAlgorithm.ED25519
    return SignatureAlgorithm.ECDSA_P256


def generate_private_key(
    algorithm: SignatureAlgorithm | str = SignatureAlgorithm.ED25519,
) -> PrivateKey:
    """A new private key; raises KeyFileError for an unknown algorithm."""
    if algorithm == SignatureAlgorithm.ED25519:
        return ed25519.Ed25519PrivateKey.generate()
    if algorithm == SignatureAlgorithm.ECDSA_P256:
        return ec.generate_private_key(ec.SECP256R1())
    raise KeyFileError(
        f"unknown key algorithm {algorithm!r}", f"use one of {', '.join(ALGORITHMS)}"
    )


@dataclass(frozen=True)
class KeyPairFiles:
    private: Path
    public: Path
    key_id: str
    algorithm: SignatureAlgorithm


def write_key_pair(
    key: PrivateKey, prefix: Path, passphrase: bytes | None, *, force: bool = False
) -> KeyPairFiles:
    """Write ``PREFIX.key`` (0600) and ``PREFIX.pub``.

    Refuses (OutputError) to overwrite either file unless ``force``. Each file is written
    to a temporary name and renamed, so a failure leaves neither half-written.
    """
    priv_path, pub_path = check_key_pair_free(prefix, force=force)
    encryption: serialization.KeySerializationEncryption
    if passphrase:
        encryption = serialization.BestAvailableEncryption(passphrase)
    else:
        encryption = serialization.NoEncryption()
    priv_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    pub_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    written: list[Path] = []
    try:
        atomic_write(priv_path, priv_pem, mode=0o600)
        written.append(priv_path)
        atomic_write(pub_path, pub_pem, mode=0o644)
    except OSError as e:
        for p in written:
            p.unlink(missing_ok=True)
        raise OutputError(f"cannot write key files at {prefix}: {e.strerror or e}") from e
    return KeyPairFiles(priv_path, pub_path, key_id(key.public_key()), algorithm_of(key))


def check_key_pair_free(prefix: Path, *, force: bool = False) -> tuple[Path, Path]:
    """The two key file paths; OutputError if either exists and ``force`` is not set."""
    priv_path = Path(f"{prefix}.key")
    pub_path = Path(f"{prefix}.pub")
    if not force:
        for p in (priv_path, pub_path):
            if p.exists():
                raise OutputError(f"{p} already exists", "pass --force to overwrite it")
    return priv_path, pub_path


def _read_key_file(path: Path) -> bytes:
    data = read_regular(
        path, what="key file", max_size=MAX_KEY_FILE, error=KeyFileError, fix="check the --key path"
    )
    if b"-----BEGIN" not in data:
        raise KeyFileError(
            f"{path} is not a PEM key file",
            "give a key written by `mk8s key generate` (or any PEM key)",
        )
    return data


def load_public_key(path: Path) -> PublicKey:
    """Load a SubjectPublicKeyInfo PEM; KeyFileError (exit 2) if it is anything else."""
    data = _read_key_file(path)
    if b"PRIVATE KEY-----" in data:
        raise KeyFileError(
            f"{path} is a private key",
            "give the public key (the .pub file) to --key; the private key stays on the "
            "connected side",
        )
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as e:
        raise KeyFileError(f"{path} is not a readable public key ({e})") from e
    return _check_supported_public(key, path)


def _check_supported_public(key: object, path: Path) -> PublicKey:
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise KeyFileError(f"{path} holds an unsupported key type", "use an Ed25519 or ECDSA P-256 key")


def load_private_key(path: Path, passphrase: Callable[[], bytes | None]) -> PrivateKey:
    """Load a PKCS#8 PEM private key, asking ``passphrase()`` only if it is encrypted.

    Raises KeyFileError (exit 2) for a missing or unreadable file, a public key, a wrong
    passphrase or an unsupported key type.
    """
    data = _read_key_file(path)
    if b"PRIVATE KEY-----" not in data:
        raise KeyFileError(
            f"{path} is not a private key", "give the .key file written by `mk8s key generate`"
        )
    secret: bytes | None = None
    if b"ENCRYPTED PRIVATE KEY" in data:
        secret = passphrase()
        if not secret:
            raise KeyFileError(
                f"{path} is encrypted and no passphrase was given",
                "set MK8S_KEY_PASSPHRASE or run on a terminal to be asked",
            )
    try:
        key = serialization.load_pem_private_key(data, password=secret)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        hint = "check MK8S_KEY_PASSPHRASE" if secret else "check the file"
        raise KeyFileError(f"cannot load private key {path} (wrong passphrase?)", hint) from e
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    raise KeyFileError(f"{path} holds an unsupported key type", "use Ed25519 or ECDSA P-256")


@dataclass(frozen=True)
class Signature:
    """The parsed signature member."""

    algorithm: SignatureAlgorithm
    key_id: str
    value: bytes

    @property
    def signed(self) -> bool:
        """False for the unsigned marker (``algorithm: none``)."""
        return self.algorithm != SignatureAlgorithm.NONE

    def to_bytes(self) -> bytes:
        lines = [_SIG_MAGIC, f"algorithm: {self.algorithm}"]
        if self.signed:
            lines += [
                f"key-id: {self.key_id}",
                f"signature: {base64.b64encode(self.value).decode()}",
            ]
        return ("\n".join(lines) + "\n").encode("ascii")

    @classmethod
    def from_bytes(cls, data: bytes) -> Signature:
        """Parse; raises BundleRejected naming what is wrong."""
        if len(data) > _MAX_SIG_BYTES:
            raise BundleRejected("signature member is too large to be a signature")
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError as e:
            raise BundleRejected("signature member is not a mk8s signature (not ASCII)") from e
        lines = text.splitlines()
        if not lines or lines[0] != _SIG_MAGIC:
            raise BundleRejected("signature member is not a mk8s signature (bad header)")
        fields: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(": ")
            if not sep or name in fields:
                raise BundleRejected(f"signature member has a malformed line {line[:40]!r}")
            fields[name] = value
        algorithm = fields.get("algorithm", "")
        if algorithm == SignatureAlgorithm.NONE:
            return cls(SignatureAlgorithm.NONE, "", b"")
        if algorithm not in ALGORITHMS:
            raise BundleRejected(f"signature algorithm {algorithm!r} is not supported")
        kid = fields.get("key-id", "")
        if len(kid) != 64 or any(c not in "0123456789abcdef" for c in kid):
            raise BundleRejected("signature member has no valid key-id")
        try:
            raw = base64.b64decode(fields.get("signature", ""), validate=True)
        except binascii.Error as e:
            raise BundleRejected("signature member holds invalid base64") from e
        if not raw:
            raise BundleRejected("signature member holds an empty signature")
        return cls(SignatureAlgorithm(algorithm), kid, raw)


def sign(key: PrivateKey, data: bytes) -> Signature:
    """Sign ``data`` deterministically."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        value = key.sign(data)
    else:
        value = key.sign(data, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    return Signature(algorithm_of(key), key_id(key.public_key()), value)


def unsigned() -> Signature:
    """The signature member of a bundle created with ``--unsigned``."""
    return Signature(SignatureAlgorithm.NONE, "", b"")


@dataclass(frozen=True)
class TrustedKey:
    path: Path
    key: PublicKey

    @property
    def key_id(self) -> str:
        return key_id(self.key)


def load_trusted_keys(paths: Sequence[Path]) -> list[TrustedKey]:
    """Load every ``--key``; raises KeyFileError on the first unusable one."""
    return [TrustedKey(p, load_public_key(p)) for p in paths]


def verify_signature(
    data: bytes, sig: Signature, trusted: Sequence[TrustedKey], *, allow_unsigned: bool = False
) -> TrustedKey | None:
    """Check ``sig`` over ``data`` against the trusted keys.

    Returns the key that verified it (None for an unsigned bundle accepted with
    ``allow_unsigned``). Raises BundleRejected when no trusted key verifies it.
    """
    if not sig.signed:
        if allow_unsigned:
            return None
        raise BundleRejected(
            "the bundle is unsigned",
            "get a signed bundle, or pass --allow-unsigned if you really trust its origin",
        )
    matching = [k for k in trusted if k.key_id == sig.key_id]
    if not matching:
        known = ", ".join(k.key_id for k in trusted) or "none"
        raise BundleRejected(
            f"signed by key {sig.key_id}, which is not a trusted key (trusted: {known})",
            "pass the signer's public key with --key, after checking it out of band",
        )
    for k in matching:
        if algorithm_of(k.key) != sig.algorithm:
            continue
        try:
            if isinstance(k.key, ed25519.Ed25519PublicKey):
                k.key.verify(sig.value, data)
            else:
                k.key.verify(sig.value, data, ec.ECDSA(hashes.SHA256()))
            return k
        except InvalidSignature:
            continue
    raise BundleRejected(
        f"the signature over {'mk8s-bundle.json'} does not match key {sig.key_id[:16]}: "
        "the manifest or signature was altered",
        "do not use this bundle; get it again from its source",
    )
