"""mk8s/bundle/format/keys.py: key pairs and their files, signatures and the signature member,
the trusted keys a verify accepts. Real keys from ``cryptography`` throughout."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, rsa

from mk8s.bundle.format import keys, reader
from mk8s.bundle.format.keys import Signature
from mk8s.errors import BundleRejected, KeyFileError, OutputError
from tests.support import bundles


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


# -- pinned: curve checks, size cap, malformed and duplicate lines, exact messages ----------
KID = "ab" * 32


def _pub_pem(key: object) -> bytes:
    return key.public_key().public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _priv_pem(key: object, password: bytes | None = None) -> bytes:
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc
    )


UNSUPPORTED = {
    "P-384": lambda: ec.generate_private_key(ec.SECP384R1()),
    "P-521": lambda: ec.generate_private_key(ec.SECP521R1()),
    "secp256k1": lambda: ec.generate_private_key(ec.SECP256K1()),
    "RSA": lambda: rsa.generate_private_key(public_exponent=65537, key_size=1024),
    "Ed448": lambda: ed448.Ed448PrivateKey.generate(),
}


@pytest.mark.parametrize("kind", list(UNSUPPORTED))
def test_unsupported_public_keys_are_refused(tmp_path: Path, kind: str) -> None:
    p = tmp_path / "k.pub"
    p.write_bytes(_pub_pem(UNSUPPORTED[kind]()))
    with pytest.raises(KeyFileError) as e:
        keys.load_public_key(p)
    assert str(e.value) == f"{p} holds an unsupported key type; use an Ed25519 or ECDSA P-256 key"
    assert e.value.exit_code == 2


@pytest.mark.parametrize("kind", list(UNSUPPORTED))
def test_unsupported_private_keys_are_refused(tmp_path: Path, kind: str) -> None:
    p = tmp_path / "k.key"
    p.write_bytes(_priv_pem(UNSUPPORTED[kind]()))
    with pytest.raises(KeyFileError) as e:
        keys.load_private_key(p, lambda: None)
    assert str(e.value) == f"{p} holds an unsupported key type; use Ed25519 or ECDSA P-256"


def test_p256_keys_load_and_name_their_algorithm(tmp_path: Path) -> None:
    files = keys.write_key_pair(keys.generate_private_key("ecdsa-p256"), tmp_path / "k", None)
    assert files.algorithm == "ecdsa-p256"
    assert files.public.stat().st_mode & 0o777 == 0o644
    assert files.private.stat().st_mode & 0o777 == 0o600
    pub = keys.load_public_key(files.public)
    assert isinstance(pub, ec.EllipticCurvePublicKey) and keys.algorithm_of(pub) == "ecdsa-p256"
    priv = keys.load_private_key(files.private, lambda: None)
    assert keys.key_id(priv.public_key()) == files.key_id
    ed = keys.write_key_pair(keys.generate_private_key(), tmp_path / "e", None)
    assert ed.algorithm == "ed25519"


def test_cli_verify_with_a_p256_key_and_refusal_of_p384(
    run_cli,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    files = keys.write_key_pair(keys.generate_private_key("ecdsa-p256"), tmp_path / "ec", None)
    key = keys.load_private_key(files.private, lambda: None)
    written, _ = bundles.build(tmp_path, key)
    r = run_cli("bundle", "verify", str(written.path), "--key", str(files.public), "--json")
    assert r.code == 0, r.err
    assert f'"signer": "{files.key_id}"' in r.out
    p384 = tmp_path / "p384.pub"
    p384.write_bytes(_pub_pem(ec.generate_private_key(ec.SECP384R1())))
    r = run_cli("bundle", "verify", str(written.path), "--key", str(p384))
    assert r.code == 2 and "holds an unsupported key type" in r.err
    # A different P-256 key: the bundle is rejected, exit 3.
    other = keys.write_key_pair(keys.generate_private_key("ecdsa-p256"), tmp_path / "o", None)
    r = run_cli("bundle", "verify", str(written.path), "--key", str(other.public))
    assert r.code == 3 and "not a trusted key" in r.err


def test_unknown_algorithm() -> None:
    with pytest.raises(KeyFileError) as e:
        keys.generate_private_key("rsa")
    assert str(e.value) == "unknown key algorithm 'rsa'; use one of ed25519, ecdsa-p256"


def test_key_file_errors_exact(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pub"
    with pytest.raises(KeyFileError) as e:
        keys.load_public_key(missing)
    assert str(e.value) == f"key file {missing} does not exist; check the --key path"
    with pytest.raises(KeyFileError) as e:
        keys.load_public_key(tmp_path)
    assert str(e.value) == (
        f"key file {tmp_path} is a directory, not a regular file; check the --key path"
    )
    junk = tmp_path / "junk.pub"
    junk.write_text("hello")
    with pytest.raises(KeyFileError) as e:
        keys.load_public_key(junk)
    assert str(e.value) == (
        f"{junk} is not a PEM key file; give a key written by `mk8s key generate` (or any PEM key)"
    )
    files = keys.write_key_pair(keys.generate_private_key(), tmp_path / "k", b"pw")
    with pytest.raises(KeyFileError) as e:
        keys.load_public_key(files.private)
    assert str(e.value) == (
        f"{files.private} is a private key; give the public key (the .pub file) to --key; "
        "the private key stays on the connected side"
    )
    with pytest.raises(KeyFileError) as e:
        keys.load_private_key(files.public, lambda: None)
    assert str(e.value) == (
        f"{files.public} is not a private key; give the .key file written by `mk8s key generate`"
    )
    with pytest.raises(KeyFileError) as e:
        keys.load_private_key(files.private, lambda: None)
    assert str(e.value) == (
        f"{files.private} is encrypted and no passphrase was given; "
        "set MK8S_KEY_PASSPHRASE or run on a terminal to be asked"
    )
    with pytest.raises(KeyFileError) as e:
        keys.load_private_key(files.private, lambda: b"wrong")
    assert str(e.value) == (
        f"cannot load private key {files.private} (wrong passphrase?); check MK8S_KEY_PASSPHRASE"
    )
    broken = tmp_path / "broken.key"
    broken.write_bytes(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(KeyFileError) as e:
        keys.load_private_key(broken, lambda: b"unused")
    assert str(e.value) == f"cannot load private key {broken} (wrong passphrase?); check the file"


def test_write_key_pair_failure_leaves_no_half(tmp_path: Path) -> None:
    (tmp_path / "k.pub").mkdir()  # the public half cannot be written
    with pytest.raises(OutputError) as e:
        keys.write_key_pair(keys.generate_private_key(), tmp_path / "k", None, force=True)
    assert str(e.value) == f"cannot write key files at {tmp_path / 'k'}: Is a directory"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.pub"]
    with pytest.raises(OutputError) as e:
        keys.write_key_pair(keys.generate_private_key(), tmp_path / "no" / "k", None)
    assert (
        str(e.value)
        == f"cannot write key files at {tmp_path / 'no' / 'k'}: No such file or directory"
    )


def test_trusted_keys_keep_their_paths(tmp_path: Path) -> None:
    files = keys.write_key_pair(keys.generate_private_key(), tmp_path / "k", None)
    (tk,) = keys.load_trusted_keys([files.public])
    assert tk.path == files.public and tk.key_id == files.key_id


def _sig_text(*lines: str) -> bytes:
    return ("\n".join(["mk8s-signature: v1", *lines]) + "\n").encode()


GOOD = (
    "algorithm: ed25519",
    f"key-id: {KID}",
    "signature: " + base64.b64encode(b"s" * 64).decode(),
)


def test_signature_roundtrip_and_unsigned() -> None:
    sig = Signature.from_bytes(_sig_text(*GOOD))
    assert sig == Signature("ed25519", KID, b"s" * 64)
    assert sig.to_bytes() == _sig_text(*GOOD)
    assert keys.unsigned() == Signature("none", "", b"")
    assert keys.unsigned().to_bytes() == b"mk8s-signature: v1\nalgorithm: none\n"
    assert Signature.from_bytes(keys.unsigned().to_bytes()) == Signature("none", "", b"")


def test_signature_size_cap_at_its_limit() -> None:
    base = _sig_text(*GOOD, "comment: ")
    at_limit = base[:-1] + b"x" * (4096 - len(base)) + b"\n"
    assert len(at_limit) == 4096
    assert Signature.from_bytes(at_limit).key_id == KID
    over = base[:-1] + b"x" * (4097 - len(base)) + b"\n"
    with pytest.raises(BundleRejected) as e:
        Signature.from_bytes(over)
    assert str(e.value) == "signature member is too large to be a signature"


LONG = "x" * 60


@pytest.mark.parametrize(
    "data, message",
    [
        (
            b"mk8s-signature: v1\nalgorithm: \xe9\n",
            "signature member is not a mk8s signature (not ASCII)",
        ),
        (b"", "signature member is not a mk8s signature (bad header)"),
        (b"mk8s-signature: v2\n", "signature member is not a mk8s signature (bad header)"),
        (_sig_text(*GOOD, "garbage"), "signature member has a malformed line 'garbage'"),
        (_sig_text(*GOOD, LONG), f"signature member has a malformed line {LONG[:40]!r}"),
        (
            _sig_text(*GOOD, "algorithm: ed25519"),
            "signature member has a malformed line 'algorithm: ed25519'",
        ),
        (
            _sig_text(*GOOD, f"key-id: {KID}"),
            f"signature member has a malformed line {('key-id: ' + KID)[:40]!r}",
        ),
        (
            _sig_text("algorithm: none", "algorithm: a: b"),
            "signature member has a malformed line 'algorithm: a: b'",
        ),
        (_sig_text(f"key-id: {KID}"), "signature algorithm '' is not supported"),
        (_sig_text("algorithm: rsa"), "signature algorithm 'rsa' is not supported"),
        (_sig_text("algorithm: ed25519"), "signature member has no valid key-id"),
        (
            _sig_text("algorithm: ed25519", "key-id: " + "AB" * 32),
            "signature member has no valid key-id",
        ),
        (
            _sig_text("algorithm: ed25519", "key-id: " + "ab" * 31),
            "signature member has no valid key-id",
        ),
        (_sig_text(*GOOD[:2]), "signature member holds an empty signature"),
        (_sig_text(*GOOD[:2], "signature: "), "signature member holds an empty signature"),
        (_sig_text(*GOOD[:2], "signature: c2ln$bmF0dXJl"), "signature member holds invalid base64"),
        (_sig_text(*GOOD[:2], "signature: c2lnbmF0dXJ"), "signature member holds invalid base64"),
    ],
    ids=[
        "not-ascii",
        "empty",
        "bad-version",
        "no-separator",
        "long-malformed",
        "duplicate-algorithm",
        "duplicate-key-id",
        "duplicate-with-colon-in-value",
        "no-algorithm",
        "unknown-algorithm",
        "no-key-id",
        "upper-case-key-id",
        "short-key-id",
        "no-signature",
        "empty-signature",
        "base64-bad-char",
        "base64-bad-padding",
    ],
)
def test_malformed_signature_members(data: bytes, message: str) -> None:
    with pytest.raises(BundleRejected) as e:
        Signature.from_bytes(data)
    assert str(e.value) == message
    assert e.value.exit_code == 3


def test_verify_signature_messages(ed_key: keys.PrivateKey) -> None:
    with pytest.raises(BundleRejected) as e:
        keys.verify_signature(b"m", keys.unsigned(), [])
    assert str(e.value) == (
        "the bundle is unsigned; get a signed bundle, or pass --allow-unsigned if you "
        "really trust its origin"
    )
    sig = keys.sign(ed_key, b"m")
    with pytest.raises(BundleRejected) as e:
        keys.verify_signature(b"m", sig, [])
    assert str(e.value) == (
        f"signed by key {sig.key_id}, which is not a trusted key (trusted: none); "
        "pass the signer's public key with --key, after checking it out of band"
    )
    trusted = [keys.TrustedKey(Path("k.pub"), ed_key.public_key())]
    with pytest.raises(BundleRejected) as e:
        keys.verify_signature(b"M", sig, trusted)
    assert str(e.value) == (
        f"the signature over mk8s-bundle.json does not match key {sig.key_id[:16]}: "
        "the manifest or signature was altered; do not use this bundle; get it again "
        "from its source"
    )


def test_algorithm_must_match_the_trusted_key(ec_key: keys.PrivateKey) -> None:
    """An ECDSA signature relabelled as ed25519 (same key id) is not verified."""
    sig = keys.sign(ec_key, b"m")
    trusted = [keys.TrustedKey(Path("k.pub"), ec_key.public_key())]
    assert keys.verify_signature(b"m", sig, trusted) is trusted[0]
    relabelled = Signature("ed25519", sig.key_id, sig.value)
    with pytest.raises(BundleRejected, match="does not match key"):
        keys.verify_signature(b"m", relabelled, trusted)


def test_signature_member_cap_in_a_bundle(tmp_path: Path, ed_key: keys.PrivateKey) -> None:
    """The reader caps the signature member at 4096 bytes before parsing it."""
    written, _ = bundles.build(tmp_path, ed_key)
    trusted = [keys.TrustedKey(Path("k.pub"), ed_key.public_key())]
    ms = bundles.read_members(written.path)
    sig = ms[1].data
    for size, ok in ((4096, True), (4097, False)):
        padded = sig + b"comment: " + b"x" * (size - len(sig) - 10) + b"\n"
        assert len(padded) == size
        ms[1] = bundles.Member(ms[1].name, padded)
        path = bundles.craft(tmp_path / f"sig{size}.tar.zst", ms)
        if ok:
            assert reader.verify_bundle(path, trusted).signature_bytes == padded
        else:
            with pytest.raises(BundleRejected) as e:
                reader.verify_bundle(path, trusted)
            assert str(e.value) == "member mk8s-bundle.json.sig is 4097 bytes, over 4096"
            with pytest.raises(BundleRejected) as e:
                reader.read_head(path)
            assert str(e.value) == "member mk8s-bundle.json.sig is 4097 bytes, over 4096"


def test_private_key_file_mode_even_with_a_loose_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        files = keys.write_key_pair(keys.generate_private_key(), tmp_path / "k", None)
    finally:
        os.umask(old)
    assert files.private.stat().st_mode & 0o777 == 0o600
    assert files.public.stat().st_mode & 0o777 == 0o644


def test_key_pair_free_and_atomic_write_defaults(tmp_path: Path) -> None:
    keys.atomic_write(tmp_path / "k.pub", b"x")
    assert (tmp_path / "k.pub").stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["k.pub"]  # no temporary left
    with pytest.raises(OutputError) as e:
        keys.check_key_pair_free(tmp_path / "k")
    assert str(e.value) == f"{tmp_path / 'k.pub'} already exists; pass --force to overwrite it"
    assert keys.check_key_pair_free(tmp_path / "k", force=True) == (
        tmp_path / "k.key",
        tmp_path / "k.pub",
    )


def test_key_id_must_be_lower_case_hex() -> None:
    with pytest.raises(BundleRejected) as e:
        Signature.from_bytes(_sig_text("algorithm: ed25519", "key-id: " + "X" * 64, GOOD[2]))
    assert str(e.value) == "signature member has no valid key-id"


def test_untrusted_message_lists_every_trusted_key(ed_key: keys.PrivateKey) -> None:
    a, b = keys.generate_private_key(), keys.generate_private_key("ecdsa-p256")
    trusted = [
        keys.TrustedKey(Path("a"), a.public_key()),
        keys.TrustedKey(Path("b"), b.public_key()),
    ]
    sig = keys.sign(ed_key, b"m")
    with pytest.raises(BundleRejected) as e:
        keys.verify_signature(b"m", sig, trusted)
    assert f"(trusted: {trusted[0].key_id}, {trusted[1].key_id})" in str(e.value)


def test_private_key_is_never_on_disk_with_looser_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The temporary file is created with the final mode, not chmod-ed into it later."""
    seen: dict[str, int] = {}
    real_chmod = os.chmod

    def spy(path: Any, mode: int) -> None:
        seen[Path(path).name] = os.stat(path).st_mode & 0o777
        real_chmod(path, mode)

    from mk8s import files

    monkeypatch.setattr(files.os, "chmod", spy)
    old = os.umask(0o022)
    try:
        keys.write_key_pair(keys.generate_private_key(), tmp_path / "k", None)
    finally:
        os.umask(old)
    (private,) = [mode for name, mode in seen.items() if name.startswith(".k.key.")]
    assert private == 0o600


# -- key files that are not regular small files ------------------------------------------
def test_key_file_must_be_a_regular_small_file(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    written, _ = bundles.build(tmp_path, None)
    r = run_cli("bundle", "verify", str(written.path), "--key", "/dev/zero")
    assert r.code == 2 and "device" in r.err
    big = tmp_path / "big.pub"
    big.write_bytes(b"-----BEGIN PUBLIC KEY-----\n" + b"A" * (1 << 20))
    r = run_cli("bundle", "verify", str(written.path), "--key", str(big))
    assert r.code == 2 and "larger than" in r.err
    fifo = tmp_path / "bundle-fifo"
    os.mkfifo(fifo)
    r = run_cli("bundle", "verify", str(fifo), "--allow-unsigned")
    assert r.code == 2 and "FIFO" in r.err
