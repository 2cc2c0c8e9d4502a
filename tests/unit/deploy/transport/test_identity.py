"""mk8s/deploy/transport/identity.py: loading the SSH identity, encrypted or not."""

from __future__ import annotations

from pathlib import Path

import pytest

from mk8s.deploy import transport as tr
from mk8s.deploy.transport import identity as tr_identity
from mk8s.deploy.transport import load_identity
from mk8s.errors import ConnectError
from tests.support.sshkeys import ssh_keygen


def test_load_identity_encrypted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = ssh_keygen(tmp_path / "enc", "pw-1")
    monkeypatch.delenv(tr.PASSPHRASE_ENV, raising=False)
    tr_identity._identity_cache.clear()
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    with pytest.raises(
        ConnectError, match="is encrypted and there is no terminal.*MK8S_SSH_PASSPHRASE"
    ):
        load_identity(key)
    asked: list[str] = []
    k = load_identity(key, lambda prompt: asked.append(prompt) or "pw-1")
    assert asked == [f"Passphrase for {key}: "]
    assert load_identity(key) is k  # cached: many nodes, one prompt
    tr_identity._identity_cache.clear()
    monkeypatch.setenv(tr.PASSPHRASE_ENV, "wrong")
    with pytest.raises(ConnectError, match="cannot load identity file"):
        load_identity(key)
    monkeypatch.setenv(tr.PASSPHRASE_ENV, "pw-1")
    assert load_identity(key).get_name() == "ssh-ed25519"
    with pytest.raises(ConnectError, match="cannot read identity file"):
        load_identity(tmp_path / "missing")
    (tmp_path / "junk").write_text("not a key")
    with pytest.raises(ConnectError, match="not a usable private key|cannot load"):
        load_identity(tmp_path / "junk")
    tr_identity._identity_cache.clear()
