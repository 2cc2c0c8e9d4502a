from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from mk8s.bundle import keys
from mk8s.errors import BundleRejected, KeyFileError, OutputError


@pytest.mark.parametrize("algorithm", keys.ALGORITHMS)
def test_generate_writes_encrypted_pkcs8_and_spki(tmp_path: Path, algorithm: str) -> None:
    files = keys.write_key_pair(keys.generate_private_key(algorithm), tmp_path / "k", b"pw")
    assert files.private.stat().st_mode & 0o777 == 0o600
    priv = files.private.read_bytes()
    assert priv.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert files.public.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    # openssl computes the same key id from the public key file
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-in", str(files.public), "-outform", "DER"],
        check=True,
        capture_output=True,
    ).stdout
    assert hashlib.sha256(der).hexdigest() == files.key_id
    loaded = keys.load_private_key(files.private, lambda: b"pw")
    assert keys.key_id(loaded.public_key()) == files.key_id


def test_wrong_passphrase_is_a_key_error(tmp_path: Path) -> None:
    files = keys.write_key_pair(keys.generate_private_key(), tmp_path / "k", b"right")
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        keys.load_private_key(files.private, lambda: b"wrong")
    with pytest.raises(KeyFileError, match="MK8S_KEY_PASSPHRASE"):
        keys.load_private_key(files.private, lambda: None)


def test_never_overwrites_without_force(tmp_path: Path) -> None:
    keys.write_key_pair(keys.generate_private_key(), tmp_path / "k", None)
    before = (tmp_path / "k.key").read_bytes()
    with pytest.raises(OutputError, match="--force"):
        keys.write_key_pair(keys.generate_private_key(), tmp_path / "k", None)
    assert (tmp_path / "k.key").read_bytes() == before
    keys.write_key_pair(keys.generate_private_key(), tmp_path / "k", None, force=True)
    assert (tmp_path / "k.key").read_bytes() != before


@pytest.mark.parametrize("algorithm", keys.ALGORITHMS)
def test_signatures_are_deterministic_and_verify(algorithm: str) -> None:
    key = keys.generate_private_key(algorithm)
    s1, s2 = keys.sign(key, b"manifest"), keys.sign(key, b"manifest")
    assert s1 == s2
    parsed = keys.Signature.from_bytes(s1.to_bytes())
    assert parsed == s1
    trusted = [keys.TrustedKey(Path("k.pub"), key.public_key())]
    assert keys.verify_signature(b"manifest", parsed, trusted) is trusted[0]
    with pytest.raises(BundleRejected, match="altered"):
        keys.verify_signature(b"manifesT", parsed, trusted)


def test_signature_by_untrusted_key_names_both_ids(ed_key: keys.PrivateKey) -> None:
    other = keys.generate_private_key()
    sig = keys.sign(other, b"m")
    trusted = [keys.TrustedKey(Path("k.pub"), ed_key.public_key())]
    with pytest.raises(BundleRejected) as e:
        keys.verify_signature(b"m", sig, trusted)
    assert keys.key_id(other.public_key())[:16] in str(e.value)
    assert keys.key_id(ed_key.public_key())[:16] in str(e.value)


def test_unsigned_needs_explicit_allow() -> None:
    with pytest.raises(BundleRejected, match="unsigned"):
        keys.verify_signature(b"m", keys.unsigned(), [])
    assert keys.verify_signature(b"m", keys.unsigned(), [], allow_unsigned=True) is None


@pytest.mark.parametrize(
    "content, message",
    [
        (b"hello", "not a PEM"),
        (None, "does not exist"),
        (b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "not a readable"),
    ],
)
def test_bad_public_key_files(tmp_path: Path, content: bytes | None, message: str) -> None:
    p = tmp_path / "k.pub"
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(KeyFileError, match=message) as e:
        keys.load_public_key(p)
    assert e.value.exit_code == 2


def test_private_key_given_as_public_key(tmp_path: Path) -> None:
    files = keys.write_key_pair(keys.generate_private_key(), tmp_path / "k", None)
    with pytest.raises(KeyFileError, match="is a private key"):
        keys.load_public_key(files.private)


def test_rsa_keys_are_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    pub = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    p = tmp_path / "rsa.pub"
    p.write_bytes(
        pub.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    with pytest.raises(KeyFileError, match="unsupported key type"):
        keys.load_public_key(p)


@pytest.mark.parametrize(
    "data",
    [
        b"garbage",
        b"mk8s-signature: v1\nalgorithm: rsa\n",
        b"mk8s-signature: v1\nalgorithm: ed25519\nkey-id: abc\nsignature: AAAA\n",
        b"mk8s-signature: v1\nalgorithm: ed25519\nkey-id: " + b"a" * 64 + b"\nsignature: !!\n",
        b"\xff\xfe",
        b"x" * 5000,
    ],
)
def test_garbage_signature_members_are_rejected(data: bytes) -> None:
    with pytest.raises(BundleRejected):
        keys.Signature.from_bytes(data)


def test_cli_generate(tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MK8S_KEY_PASSPHRASE", "s3cret")
    r = run_cli("key", "generate", "--algorithm", "ecdsa-p256")
    assert r.code == 0, r.err
    assert "key id:" in r.out
    assert (tmp_path / "mk8s.key").stat().st_mode & 0o777 == 0o600
    key = keys.load_private_key(tmp_path / "mk8s.key", lambda: b"s3cret")
    assert keys.algorithm_of(key) == "ecdsa-p256"
    r = run_cli("key", "generate")
    assert r.code == 1 and "already exists" in r.err and "--force" in r.err
    monkeypatch.delenv("MK8S_KEY_PASSPHRASE")
    r = run_cli("key", "generate", "--out", "other")
    assert r.code == 2 and "MK8S_KEY_PASSPHRASE" in r.err
    assert not (tmp_path / "other.key").exists()
    r = run_cli("key", "generate", "--out", "plain", "--no-passphrase")
    assert r.code == 0 and "unencrypted" in r.err
    assert b"ENCRYPTED" not in (tmp_path / "plain.key").read_bytes()
    assert os.path.exists(tmp_path / "plain.pub")
