"""`mk8s key generate` as a user runs it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mk8s.bundle.format import keys


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
