"""CLI level: verify, inspect and extract as a user drives them, and the auditor's recipe."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from mk8s.bundle.format import keys
from tests.support import bundles
from tests.support.audit import audit_commands


@pytest.fixture
def signed(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(bundle, public key, private key) written by the project itself."""
    files = keys.write_key_pair(keys.generate_private_key(), tmp_path / "mk8s", None)
    key = keys.load_private_key(files.private, lambda: None)
    written, _ = bundles.build(tmp_path, key)
    return written.path, files.public, files.private


def test_verify_ok_summary(run_cli, signed) -> None:  # type: ignore[no-untyped-def]
    bundle, pub, _ = signed
    r = run_cli("bundle", "verify", str(bundle), "--key", str(pub))
    assert r.code == 0, r.err
    assert r.out.startswith("verified: RKE2 v1.28.15+rke2r1 linux/amd64, 5 artifacts")
    kid = keys.key_id(keys.load_public_key(pub))
    assert f"signed by key {kid}" in r.out
    r = run_cli("bundle", "verify", str(bundle), "--key", str(pub), "--json")
    data = json.loads(r.out)
    assert data["ok"] is True and data["signer"] == kid and data["artifacts"] == 5


def test_verify_rejects_with_exit_3_and_json(run_cli, signed, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bundle, pub, _ = signed
    bad = tmp_path / "bad.tar.zst"
    bad.write_bytes(bundle.read_bytes()[:-100])
    r = run_cli("bundle", "verify", str(bad), "--key", str(pub))
    assert r.code == 3
    assert r.err.startswith("mk8s: error: ") and r.err.count("\n") == 1
    r = run_cli("bundle", "verify", str(bad), "--key", str(pub), "--json")
    assert r.code == 3 and json.loads(r.out)["ok"] is False


def test_verify_key_file_errors_exit_2(run_cli, signed, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bundle, _, priv = signed
    junk = tmp_path / "junk.pub"
    junk.write_text("not a key")
    for key, msg in [
        (priv, "is a private key"),
        (junk, "not a PEM"),
        (tmp_path / "missing.pub", "does not exist"),
    ]:
        r = run_cli("bundle", "verify", str(bundle), "--key", str(key))
        assert r.code == 2, (key, r.err)
        assert msg in r.err and r.err.count("\n") == 1
    r = run_cli("bundle", "verify", str(bundle))
    assert r.code == 2 and "--key" in r.err


def test_verify_missing_bundle_exit_2(run_cli, signed, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, pub, _ = signed
    r = run_cli("bundle", "verify", str(tmp_path / "nope.tar.zst"), "--key", str(pub))
    assert r.code == 2 and "does not exist" in r.err


def test_unsigned_needs_allow_unsigned_and_is_loud(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    written, _ = bundles.build(tmp_path, None)
    r = run_cli("bundle", "verify", str(written.path), "--allow-unsigned")
    assert r.code == 0 and "UNSIGNED" in r.err and "UNSIGNED" in r.out
    pub = keys.write_key_pair(keys.generate_private_key(), tmp_path / "k", None).public
    r = run_cli("bundle", "verify", str(written.path), "--key", str(pub))
    assert r.code == 3 and "unsigned" in r.err


def test_inspect(run_cli, signed) -> None:  # type: ignore[no-untyped-def]
    bundle, _, _ = signed
    r = run_cli("bundle", "inspect", str(bundle))
    assert r.code == 0
    assert r.out.startswith("NOT VERIFIED")
    assert "v1.28.15+rke2r1" in r.out and "artifacts/rke2.linux-amd64.tar.gz" in r.out
    r = run_cli("bundle", "inspect", str(bundle), "--json")
    data = json.loads(r.out)
    assert data["verified"] is False
    assert data["manifest"]["rke2"]["tag"] == "v1.28.15+rke2r1"


def test_extract_cli(run_cli, signed, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bundle, pub, _ = signed
    r = run_cli("bundle", "extract", str(bundle), "--key", str(pub), "-d", str(tmp_path / "x"))
    assert r.code == 0, r.err
    assert (tmp_path / "x" / "artifacts" / "install.sh").is_file()


@pytest.mark.parametrize("algorithm", keys.ALGORITHMS)
def test_readme_audit_recipe_with_stock_tools(tmp_path: Path, algorithm: str) -> None:
    files = keys.write_key_pair(keys.generate_private_key(algorithm), tmp_path / "mk8s", None)
    key = keys.load_private_key(files.private, lambda: None)
    written, _ = bundles.build(tmp_path / "b", key)
    script = audit_commands(algorithm)
    env = {"PATH": "/usr/bin:/bin", "BUNDLE": str(written.path), "PUB": str(files.public)}
    audit = tmp_path / "audit"
    audit.mkdir()
    r = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=audit,
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Signature Verified Successfully" in r.stdout or "Verified OK" in r.stdout
    assert r.stdout.count(": OK") == 5
    # the same recipe fails on a tampered artifact
    members = bundles.read_members(written.path)
    members[3].data = b"evil" + members[3].data[4:]
    bad = bundles.craft(tmp_path / "bad.tar.zst", members)
    env["BUNDLE"] = str(bad)
    audit2 = tmp_path / "audit2"
    audit2.mkdir()
    r = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=audit2,
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0
    assert "FAILED" in r.stdout + r.stderr


# -- an unverified manifest is shown escaped ---------------------------------------------
def test_inspect_escapes_an_unverified_manifest(tmp_path: Path, run_cli, ed_key) -> None:  # type: ignore[no-untyped-def]
    written, _ = bundles.build(tmp_path, ed_key)
    members = bundles.read_members(written.path)
    manifest = json.loads(members[0].data)
    manifest["rke2"]["requested"] = "\x1b[2J\x1b[HVERIFIED\r"
    members[0] = bundles.Member(members[0].name, json.dumps(manifest).encode())
    bad = bundles.craft(tmp_path / "evil.tar.zst", bundles.sign_members(members, ed_key))
    r = run_cli("bundle", "inspect", str(bad))
    assert r.code == 0, r.err
    assert "\x1b" not in r.out and "\r" not in r.out and "\\x1b[2J" in r.out
