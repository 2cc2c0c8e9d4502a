"""mk8s/deploy/transport/hostkeys.py: known_hosts as OpenSSH reads it (markers, negation,
hashed names, policies), with real keys and no network."""

from __future__ import annotations

import os
from pathlib import Path

import paramiko
import pytest

from mk8s.deploy.transport import check_host_key
from mk8s.errors import HostKeyError


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
