"""`mk8s deploy` at its front door, without hosts: the bundle's signature and
completeness, and what a dry run shows."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from mk8s.bundle.format import keys
from tests.support import bundles
from tests.support.clusters import cluster_text, write_cluster


# ---------------------------------------------------------------- deploy front door
def _cluster_for_dry_run(tmp_path: Path, extra: str = "") -> Path:
    return write_cluster(
        tmp_path,
        cluster_text(
            nodes="    - {address: 10.0.0.1, name: cp1, role: server}\n"
            "    - {address: 10.0.0.2, name: w1, role: agent}\n",
            rke2=extra,
        ),
        "cluster.yaml",
    )


def test_deploy_allow_unsigned_warns_loudly(tmp_path: Path, run_cli, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    written, _ = bundles.build(tmp_path, None)
    c = _cluster_for_dry_run(tmp_path)
    r = run_cli(
        "deploy", "-f", str(c), "--bundle", str(written.path), "--allow-unsigned", "--dry-run"
    )
    assert r.code == 0, r.err
    assert "THIS BUNDLE IS UNSIGNED" in r.err


def test_deploy_refuses_a_signed_but_incomplete_bundle(
    tmp_path: Path, run_cli, ed_key, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    files = bundles.make_files(tmp_path / "f", {"install.sh": 10, "empty.txt": 3})
    written, _ = bundles.build(tmp_path, ed_key, files=files)
    pub = keys.write_key_pair(ed_key, tmp_path / "k", None).public
    c = _cluster_for_dry_run(tmp_path)
    for extra in ((), ("--dry-run",)):
        r = run_cli(
            "deploy", "-f", str(c), "--bundle", str(written.path), "--key", str(pub), *extra
        )
        assert r.code == 3, r.err
        assert "lacks" in r.err and "rke2.linux-amd64.tar.gz" in r.err
        assert "internal error" not in r.err


def test_dry_run_masks_secret_config(tmp_path: Path, run_cli, ed_key, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    written, _ = bundles.build(tmp_path, ed_key)
    pub = keys.write_key_pair(ed_key, tmp_path / "k", None).public
    c = _cluster_for_dry_run(
        tmp_path,
        "  rke2:\n    config: {etcd-s3-secret-key: hunter2}\n"
        "    registries: {configs: {r.example: {auth: {password: regpass}}}}\n",
    )
    r = run_cli(
        "deploy", "-f", str(c), "--bundle", str(written.path), "--key", str(pub), "--dry-run"
    )
    assert r.code == 0, r.err
    assert "hunter2" not in r.out and "regpass" not in r.out
    assert "etcd-s3-secret-key: '***'" in r.out and "password: '***'" in r.out


def test_deploy_refuses_while_a_restore_is_unfinished(
    tmp_path: Path, run_cli, ed_key, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """A restore that stopped part way left servers stopped, one reset from the
    snapshot: a deploy would start them from datastores that do not agree. Refused
    before the bundle is read or a node is contacted (10.0.0.1 is not reachable here),
    the dry run as the real run; the journal is left as it was."""
    monkeypatch.chdir(tmp_path)
    written, _ = bundles.build(tmp_path, ed_key)
    pub = keys.write_key_pair(ed_key, tmp_path / "k", None).public
    c = _cluster_for_dry_run(tmp_path)
    name = yaml.safe_load(c.read_text())["metadata"]["name"]
    journal = tmp_path / ".mk8s" / name / "journal.json"
    journal.parent.mkdir(parents=True)
    unfinished = {"nodes": {}, "restore": {"file": "mk8s-backup-cp1-1700000000", "sha256": "ab" * 32,
                              "reset": True, "attempted": ["cp1"], "rejoined": []}}  # fmt: skip
    journal.write_text(json.dumps(unfinished))
    before = journal.read_bytes()
    args = ("deploy", "-f", str(c), "--bundle", str(written.path), "--key", str(pub))
    for extra in (("--dry-run",), ()):
        r = run_cli(*args, *extra)
        assert r.code == 1, r.err
        line = r.err.strip().splitlines()[-1]
        assert "restore of mk8s-backup-cp1-1700000000 is unfinished" in line, r.err
        assert "run the same mk8s restore command again" in line, r.err
        assert "verifying" not in r.err  # refused before the bundle was read
        assert journal.read_bytes() == before
    journal.write_text(json.dumps({"nodes": {}, "restored": unfinished["restore"]}))
    assert run_cli(*args, "--dry-run").code == 0
