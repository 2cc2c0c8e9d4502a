"""mk8s/deploy/transport/hostkeys.py: known_hosts as OpenSSH reads it (markers, negation,
hashed names, policies), with real keys and no network."""

from __future__ import annotations

import os
from pathlib import Path

import paramiko
import pytest

from mk8s.deploy.transport import check_host_key, fingerprint, known_hosts_name
from mk8s.errors import HostKeyError
from tests.support.sshkeys import ssh_keygen


# ---------------------------------------------------------------------- known_hosts
@pytest.fixture(scope="module")
def host_key() -> paramiko.PKey:
    return paramiko.ECDSAKey.generate()


def _kh(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "known_hosts"
    p.write_text(text)
    return p


@pytest.mark.parametrize("policy", ["strict", "accept-new"])
def test_revoked_key_is_refused_under_every_policy(
    tmp_path: Path, host_key: paramiko.PKey, policy: str
) -> None:
    entry = f"{host_key.get_name()} {host_key.get_base64()}"
    kh = _kh(tmp_path, f"10.0.0.9 {entry}\n@revoked * {entry}\n")
    with pytest.raises(HostKeyError, match="REVOKED"):
        check_host_key("10.0.0.9", 22, host_key, kh, policy)
    before = kh.read_text()
    kh2 = _kh(tmp_path, f"@revoked 10.0.0.9 {entry}\n")
    with pytest.raises(HostKeyError, match="REVOKED"):
        check_host_key("10.0.0.9", 22, host_key, kh2, policy)
    assert kh2.read_text() == f"@revoked 10.0.0.9 {entry}\n" and before


def test_negated_pattern_never_matches(tmp_path: Path, host_key: paramiko.PKey) -> None:
    entry = f"{host_key.get_name()} {host_key.get_base64()}"
    kh = _kh(tmp_path, f"!10.0.0.9 {entry}\n10.0.0.*,!10.0.0.9 {entry}\n")
    with pytest.raises(HostKeyError, match="is not in"):
        check_host_key("10.0.0.9", 22, host_key, kh, "strict")
    check_host_key("10.0.0.8", 22, host_key, kh, "strict")  # the wildcard matches
    with pytest.raises(HostKeyError, match="is not in"):
        check_host_key("10.0.1.8", 22, host_key, kh, "strict")


def test_known_hosts_fifo_is_an_error_not_a_hang(tmp_path: Path, host_key: paramiko.PKey) -> None:
    fifo = tmp_path / "kh"
    os.mkfifo(fifo)
    with pytest.raises(HostKeyError, match="FIFO"):
        check_host_key("10.0.0.9", 22, host_key, fifo, "strict")


# -- known_hosts: names, hashes, ports, policies -----------------------------------------
def test_known_hosts_name() -> None:
    assert known_hosts_name("10.0.0.1", 22) == "10.0.0.1"
    assert known_hosts_name("10.0.0.1", 2222) == "[10.0.0.1]:2222"


@pytest.fixture(scope="module")
def two_keys() -> tuple[paramiko.PKey, paramiko.PKey]:
    return paramiko.ECDSAKey.generate(), paramiko.ECDSAKey.generate()


def test_check_host_key_plain_hashed_and_port(
    tmp_path: Path, two_keys: tuple[paramiko.PKey, paramiko.PKey]
) -> None:
    key, _ = two_keys
    kh = tmp_path / "known_hosts"
    hashed = paramiko.HostKeys.hash_host("[10.0.0.5]:2222")
    kh.write_text(
        "# comment\n"
        f"10.0.0.4 {key.get_name()} {key.get_base64()}\n"
        f"{hashed} {key.get_name()} {key.get_base64()}\n"
        f"@cert-authority * {key.get_name()} {key.get_base64()}\n"
    )
    check_host_key("10.0.0.4", 22, key, kh, "strict")
    check_host_key("10.0.0.5", 2222, key, kh, "strict")
    with pytest.raises(HostKeyError, match=r"\[10.0.0.5\]:22 |is not in"):
        check_host_key("10.0.0.5", 22, key, kh, "strict")


def test_unknown_host_strict_message(
    tmp_path: Path, two_keys: tuple[paramiko.PKey, paramiko.PKey]
) -> None:
    key, _ = two_keys
    kh = tmp_path / "kh"
    with pytest.raises(HostKeyError) as info:
        check_host_key("10.0.0.9", 2200, key, kh, "strict")
    assert str(info.value) == (
        f"host key for [10.0.0.9]:2200 ({key.get_name()} {fingerprint(key)}) is not in {kh};"
        f" add it with `ssh-keyscan -p 2200 10.0.0.9 >> {kh}` after checking its"
        " fingerprint, or set ssh.hostKeyPolicy: accept-new"
    )
    assert not kh.exists()


def test_changed_key_refused_even_with_accept_new(
    tmp_path: Path, two_keys: tuple[paramiko.PKey, paramiko.PKey]
) -> None:
    old, new = two_keys
    kh = tmp_path / "kh"
    kh.write_text(
        f"other {old.get_name()} {old.get_base64()}\n10.0.0.4 {old.get_name()} {old.get_base64()}\n"
    )
    before = kh.read_text()
    for policy in ("strict", "accept-new"):
        with pytest.raises(HostKeyError) as info:
            check_host_key("10.0.0.4", 22, new, kh, policy)
        msg = str(info.value)
        assert msg.startswith(f"host key for 10.0.0.4 CHANGED: {kh}:2 has ")
        assert fingerprint(old) in msg and fingerprint(new) in msg
        assert f"`ssh-keygen -R 10.0.0.4 -f {kh}`" in msg
    assert kh.read_text() == before


def test_accept_new_appends(tmp_path: Path, two_keys: tuple[paramiko.PKey, paramiko.PKey]) -> None:
    key, _ = two_keys
    kh = tmp_path / "sub" / "known_hosts"
    check_host_key("10.0.0.7", 2222, key, kh, "accept-new")
    assert kh.read_text() == f"[10.0.0.7]:2222 {key.get_name()} {key.get_base64()}\n"
    assert kh.stat().st_mode & 0o777 == 0o600
    check_host_key("10.0.0.7", 2222, key, kh, "strict")


def test_known_only_by_other_type_refused(
    tmp_path: Path, two_keys: tuple[paramiko.PKey, paramiko.PKey]
) -> None:
    ecdsa, _ = two_keys
    ed = paramiko.Ed25519Key.from_private_key_file(ssh_keygen(tmp_path / "k"))
    kh = tmp_path / "kh"
    kh.write_text(f"h {ed.get_name()} {ed.get_base64()}\n")
    with pytest.raises(HostKeyError, match="knows it only by ssh-ed25519"):
        check_host_key("h", 22, ecdsa, kh, "accept-new")
