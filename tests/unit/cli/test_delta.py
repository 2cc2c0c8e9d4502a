"""Delta bundles on the command line: create --base, verify/extract/inspect/sbom/diff
with --base, split parts, and the auditor's stock-tool recipe from docs/format.md."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from mk8s.bundle.format import reader
from tests.support import bundles as craft
from tests.support.deltas import IMAGES, NEW, OLD, World, world
from tests.support.paths import ROOT

FORMAT_DOC = ROOT / "docs" / "format.md"
DELTA = "delta.tar.zst"


@pytest.fixture(scope="module")
def w(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with world(tmp_path_factory.mktemp("delta-cli")) as w:
        yield w


@pytest.fixture
def env(w: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for k, v in w.up.env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_create_base_on_the_command_line(run_cli, w: World, env: Path) -> None:  # type: ignore[no-untyped-def]
    key = w.dir / "mk8s.key"
    lock = str(w.locks["new.tar.zst"])
    base = str(w.bundles["old.tar.zst"])
    r = run_cli("bundle", "create", "--lock", lock, "--key", str(key), "--base", base)
    assert r.code == 0, r.err
    name = "mk8s-rke2-v1.28.15-rke2r1-linux-amd64.delta-from-v1.28.14-rke2r1.tar.zst"
    assert (env / name).read_bytes() == w.bundles[DELTA].read_bytes()
    assert "a delta of bundle id" in r.out and "old.tar.zst" in r.out, r.out
    r = run_cli("bundle", "create", "--lock", lock, "--key", str(key), "--base", "nope.lock")
    assert r.code == 2 and "--base nope.lock does not exist" in r.err
    (env / "adir").mkdir()  # one line naming what it is, not a usage screen
    r = run_cli("bundle", "create", "--lock", lock, "--key", str(key), "--base", "adir")
    assert r.code == 2 and r.err.startswith("mk8s: error: --base adir is a directory"), r.err
    assert r.err.count("\n") == 1, r.err


def test_verify_and_extract_with_base(run_cli, w: World, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pub, delta, base = str(w.pub), str(w.bundles[DELTA]), str(w.bundles["old.tar.zst"])
    r = run_cli("bundle", "verify", delta, "--key", pub, "--base", base)
    assert r.code == 0, r.err
    assert r.out.startswith(f"verified: RKE2 {NEW} linux/amd64") and "a delta" in r.out
    r = run_cli("bundle", "verify", delta, "--key", pub, "--base", base, "--json")
    data = json.loads(r.out)
    assert data["ok"] and data["delta"]["base"]["path"] == base
    assert data["bundleId"] == reader.read_head(w.bundles["new.tar.zst"]).bundle_id
    r = run_cli("bundle", "extract", delta, "--key", pub, "--base", base, "-d", str(tmp_path / "x"))
    assert r.code == 0, r.err
    assert (tmp_path / "x" / "artifacts" / IMAGES).read_bytes() == w.up.asset_bytes(NEW, IMAGES)


def test_missing_wrong_and_delta_bases_exit_3(run_cli, w: World, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pub, delta = str(w.pub), str(w.bundles[DELTA])
    for extra in ([], ["--base", str(tmp_path / "gone.tar.zst")], ["--base", delta]):
        for cmd in (["verify"], ["extract", "-d", str(tmp_path / "x")], ["sbom"]):
            r = run_cli("bundle", *cmd, delta, "--key", pub, *extra)
            assert r.code == 3, (cmd, extra, r.err)
            assert r.err.count("\n") == 1 and "old.tar.zst" in r.err and OLD in r.err, r.err
            assert not (tmp_path / "x").exists()


def test_inspect_says_it_is_a_delta_and_names_its_base(run_cli, w: World) -> None:  # type: ignore[no-untyped-def]
    r = run_cli("bundle", "inspect", str(w.bundles[DELTA]))
    assert r.code == 0, r.err
    m = reader.read_head(w.bundles[DELTA]).manifest
    assert m is not None and m.delta is not None
    assert f"DELTA:       needs its base, bundle id {m.delta.base.bundle_id}" in r.out
    assert "(old.tar.zst, RKE2 v1.28.14+rke2r1)" in r.out
    assert f"artifacts/{IMAGES}: rebuilt from delta/{IMAGES}.recipe and zstd -16" in r.out
    r = run_cli("bundle", "inspect", str(w.bundles[DELTA]), "--json")
    assert json.loads(r.out)["manifest"]["delta"]["base"]["tag"] == OLD
    r = run_cli("bundle", "inspect", str(w.bundles["new.tar.zst"]))
    assert "DELTA" not in r.out


def test_sbom_of_a_delta_is_the_full_bundles(run_cli, w: World, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pub = str(w.pub)
    r = run_cli("bundle", "sbom", str(w.bundles["new.tar.zst"]), "--key", pub)
    assert r.code == 0, r.err
    base = str(w.bundles["old.tar.zst"])
    d = run_cli("bundle", "sbom", str(w.bundles[DELTA]), "--key", pub, "--base", base)
    assert d.code == 0, d.err
    assert d.out == r.out and "hardened-kubernetes" in d.out


def test_diff_of_a_delta_is_the_full_bundles(run_cli, w: World) -> None:  # type: ignore[no-untyped-def]
    pub, old = str(w.pub), str(w.bundles["old.tar.zst"])
    full = run_cli("bundle", "diff", old, str(w.bundles["new.tar.zst"]), "--key", pub, "--json")
    assert full.code == 0, full.err
    # OLD is the delta's base: it is used as such without --base
    delta = run_cli("bundle", "diff", old, str(w.bundles[DELTA]), "--key", pub, "--json")
    assert delta.code == 0, delta.err
    assert json.loads(delta.out) == json.loads(full.out)
    assert json.loads(full.out)["images"], "a patch changes images"
    # against a lock, the delta still needs its base
    lock = str(w.locks["old.tar.zst"])
    r = run_cli("bundle", "diff", lock, str(w.bundles[DELTA]), "--key", pub)
    assert r.code == 3 and "old.tar.zst" in r.err
    r = run_cli("bundle", "diff", lock, str(w.bundles[DELTA]), "--key", pub, "--base", old)
    assert r.code == 0, r.err


def test_split_delta_and_split_base(run_cli, w: World, tmp_path: Path, env: Path) -> None:  # type: ignore[no-untyped-def]
    pub = str(w.pub)
    for name in (DELTA, "old.tar.zst"):
        shutil.copy(w.bundles[name], tmp_path / name)
        r = run_cli("bundle", "split", str(tmp_path / name), "--size", "400K")
        assert r.code == 0, r.err
        (tmp_path / name).unlink()
    delta, base = tmp_path / f"{DELTA}.parts", tmp_path / "old.tar.zst.000"
    r = run_cli("bundle", "verify", str(delta), "--key", pub, "--base", str(base))
    assert r.code == 0, r.err
    r = run_cli(
        "bundle",
        "extract",
        str(delta),
        "--key",
        pub,
        "--base",
        str(base),
        "-d",
        str(tmp_path / "x"),
    )
    assert r.code == 0, r.err
    assert (tmp_path / "x" / "artifacts" / IMAGES).read_bytes() == w.up.asset_bytes(NEW, IMAGES)
    # a delta made against the split base is the same delta, byte for byte
    key, lock = str(w.dir / "mk8s.key"), str(w.locks["new.tar.zst"])
    out = tmp_path / "again.tar.zst"
    r = run_cli(
        "bundle", "create", "--lock", lock, "--key", key, "--base", str(base), "-o", str(out)
    )
    assert r.code == 0, r.err
    assert out.read_bytes() == w.bundles[DELTA].read_bytes()
    # a damaged part of the base is named
    part = tmp_path / "old.tar.zst.001"
    data = bytearray(part.read_bytes())
    data[100] ^= 1
    part.write_bytes(bytes(data))
    r = run_cli("bundle", "verify", str(delta), "--key", pub, "--base", str(base))
    assert r.code == 3 and "old.tar.zst.001" in r.err, r.err


def _recipe(algorithm: str) -> str:
    m = re.search(
        r"<!-- delta-audit:begin -->\n```sh\n(.*?)```\n<!-- delta-audit:end -->",
        FORMAT_DOC.read_text(),
        re.S,
    )
    assert m, "docs/format.md lost its delta audit recipe"
    other = "ecdsa" if algorithm == "ed25519" else "ed25519"
    return "\n".join(ln for ln in m.group(1).splitlines() if f"# {other}" not in ln)


def _audit(w: World, d: Path, bundle: Path, base: Path) -> subprocess.CompletedProcess[str]:
    d.mkdir()
    env = {"PATH": "/usr/bin:/bin", "BUNDLE": str(bundle), "BASE": str(base), "PUB": str(w.pub)}
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", _recipe("ed25519")],
        cwd=d,
        env=env,
        capture_output=True,
        text=True,
    )


def test_delta_audit_recipe_with_stock_tools(w: World, tmp_path: Path) -> None:
    r = _audit(w, tmp_path / "a", w.bundles[DELTA], w.bundles["old.tar.zst"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Signature Verified Successfully" in r.stdout
    m = reader.read_head(w.bundles[DELTA]).manifest
    assert m is not None and m.delta is not None
    checked = len(m.delta.members) + len(m.delta.base.artifacts) + 1  # + the rebuilt tar
    assert r.stdout.count(": OK") == checked, r.stdout
    # the tar it put together is the decompressed content of upstream's own file
    got = (tmp_path / "a" / "new" / "delta" / f"{IMAGES}.tar").read_bytes()
    want = subprocess.run(
        ["zstd", "-dc"], input=w.up.asset_bytes(NEW, IMAGES), capture_output=True, check=True
    ).stdout
    assert got == want
    # with the wrong base, the same recipe fails
    r = _audit(w, tmp_path / "b", w.bundles[DELTA], w.bundles["new.tar.zst"])
    assert r.returncode != 0 and "FAILED" in r.stdout + r.stderr


def test_deploy_dry_run_with_and_without_the_base(run_cli, w: World, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.support.clusters import cluster_text, write_cluster

    nodes = "    - {address: 10.0.0.1, name: cp1, role: server}\n"
    c = str(write_cluster(tmp_path, cluster_text(nodes=nodes), "cluster.yaml"))
    pub, delta, base = str(w.pub), str(w.bundles[DELTA]), str(w.bundles["old.tar.zst"])
    r = run_cli("deploy", "-f", c, "--bundle", delta, "--key", pub, "--dry-run")
    assert r.code == 3 and "old.tar.zst" in r.err and OLD in r.err, r.err
    r = run_cli("deploy", "-f", c, "--bundle", delta, "--key", pub, "--base", base, "--dry-run")
    assert r.code == 0, r.err
    full_id = reader.read_head(w.bundles["new.tar.zst"]).bundle_id
    assert f"bundle {full_id} (RKE2 {NEW}), verified" in r.out, r.out


def _base_commands(w: World, d: Path, base: str) -> dict[str, list[str]]:
    from tests.support.clusters import cluster_text, write_cluster

    nodes = "    - {address: 10.0.0.1, name: cp1, role: server}\n"
    c = str(write_cluster(d, cluster_text(nodes=nodes), "cluster.yaml"))
    pub, delta, b = str(w.pub), str(w.bundles[DELTA]), ["--base", base]
    return {
        "verify": ["bundle", "verify", delta, "--key", pub, *b],
        "extract": ["bundle", "extract", delta, "--key", pub, *b, "-d", str(d / "x")],
        "sbom": ["bundle", "sbom", delta, "--key", pub, *b],
        "diff": ["bundle", "diff", str(w.locks["old.tar.zst"]), delta, "--key", pub, *b],
        "deploy": ["deploy", "-f", c, "--bundle", delta, "--key", pub, *b, "--dry-run"],
    }


def test_odd_files_as_base_exit_3_naming_the_base(run_cli, w: World, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # what a confused operator passes as --base: each names the base needed, exit 3
    (tmp_path / "empty.tar.zst").write_bytes(b"")
    (tmp_path / "loop").symlink_to("loop")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    odd = {
        "dir": "is a directory",
        "loop": "symlink",
        "fifo": "FIFO",
        "empty.tar.zst": "truncated",
        "lock": "not a readable bundle",
    }
    shutil.copy(w.locks["old.tar.zst"], tmp_path / "lock")
    for name, why in odd.items():
        for cmd, args in _base_commands(w, tmp_path, str(tmp_path / name)).items():
            r = run_cli(*args)
            assert r.code == 3, (name, cmd, r.err)
            line = r.err.splitlines()[-1]
            assert line.startswith("mk8s: error: --base ") and why in line, (name, cmd, r.err)
            assert "old.tar.zst" in line and OLD in line, (name, cmd, r.err)
            assert not (tmp_path / "x").exists()
    # a path with a newline in it (missing, or another release's bundle) stays one line
    shutil.copy(w.bundles["new.tar.zst"], tmp_path / "a\nnew.tar.zst")
    for name in ("a\ngone.tar.zst", "a\nnew.tar.zst"):
        for cmd in ("verify", "extract"):
            r = run_cli(*_base_commands(w, tmp_path, str(tmp_path / name))[cmd])
            assert r.code == 3 and r.err.count("\n") == 1, (name, cmd, r.err)
            assert "a\\nnew" in r.err or "a\\ngone" in r.err, r.err


def test_a_signed_recipe_that_lies_fails_extract_cleanly(run_cli, w: World, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # a delta signed by the trusted key whose recipe names the wrong blob for a range:
    # the rebuild stops on that range, exit 3, and the destination is as it was
    members = craft.read_members(w.bundles[DELTA])
    manifest = json.loads(members[0].data)
    i = next(k for k, m in enumerate(members) if m.name.endswith(".recipe"))
    lines = members[i].data.decode().split("\n")
    j = next(k for k, ln in enumerate(lines) if ln.startswith("blobs/") and len(ln.split()) == 4)
    lines[j] = " ".join([*lines[j].split()[:3], "d" * 64])
    members[i].data = "\n".join(lines).encode()
    for m in manifest["delta"]["members"]:
        if m["path"] == members[i].name:
            m["sha256"] = hashlib.sha256(members[i].data).hexdigest()
    members[0].data = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    bad = craft.craft(tmp_path / "bad.tar.zst", craft.sign_members(members, w.key))
    dest = tmp_path / "x"
    dest.mkdir()
    (dest / "mine").write_text("kept")
    pub, base = str(w.pub), str(w.bundles["old.tar.zst"])
    r = run_cli("bundle", "extract", str(bad), "--key", pub, "--base", base, "-d", str(dest))
    assert r.code == 3, r.err
    assert r.err.count("\n") == 1 and f"is not blob sha256:{'d' * 64}" in r.err, r.err
    assert [p.name for p in dest.iterdir()] == ["mine"] and (dest / "mine").read_text() == "kept"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 6 MiB tmpfs: room for the release (about 3 MiB) but not for what rebuilding it
    from the delta and its base takes on the way (root only: it mounts)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    d = tmp_path / "small"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(d)], check=False)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield d
    finally:
        subprocess.run(["umount", str(d)], check=True)


def test_too_small_a_disk_is_said_before_anything_is_written(
    run_cli, w: World, small_disk: Path
) -> None:  # type: ignore[no-untyped-def]
    # the up-front room check counts what the rebuild needs besides the release: the
    # delta's pieces and the base's artifacts; a full disk half-way is the fallback
    (small_disk / "mine").write_text("kept")
    pub, delta, base = str(w.pub), str(w.bundles[DELTA]), str(w.bundles["old.tar.zst"])
    r = run_cli("bundle", "extract", delta, "--key", pub, "--base", base, "-d", str(small_disk))
    assert r.code == 1, r.err
    assert r.err.count("\n") == 1 and "bytes free; extracting this delta needs" in r.err, r.err
    assert "free some space or extract elsewhere" in r.err, r.err
    assert [p.name for p in small_disk.iterdir()] == ["mine"]


def test_base_for_full_bundles_is_a_usage_error_everywhere(
    run_cli, w: World, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    # --base with no delta in sight is a mistake (the wrong file as the bundle?): every
    # command says so, exit 2, as verify, extract and sbom did already
    pub, old, new = str(w.pub), str(w.bundles["old.tar.zst"]), str(w.bundles["new.tar.zst"])
    for args in (
        ["bundle", "verify", new, "--key", pub, "--base", old],
        ["bundle", "extract", new, "--key", pub, "--base", old, "-d", str(tmp_path / "x")],
        ["bundle", "sbom", new, "--key", pub, "--base", old],
        ["bundle", "diff", old, new, "--key", pub, "--base", old],
        ["bundle", "diff", str(w.locks["old.tar.zst"]), new, "--key", pub, "--base", old],
    ):
        r = run_cli(*args)
        assert r.code == 2, (args, r.err)
        assert r.err.count("\n") == 1 and "drop --base" in r.err, (args, r.err)
    assert not (tmp_path / "x").exists()
