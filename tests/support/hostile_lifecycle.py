"""The world the hostile-input tests of the lifecycle commands run in
(tests/unit/cli/test_hostile_lifecycle*.py): a cluster directory with a signed bundle,
its key, the token and one recorded snapshot; the real CLI run in a copy of it; and
the rules every refusal keeps (docs/architecture.md, "Errors")."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mk8s.bundle.format import keys
from mk8s.deploy.lifecycle import index
from tests.support import bundles
from tests.support.clusters import cluster_text

TOKEN = "4f2c" * 16
SNAPS = Path(".mk8s/demo/snapshots")
SNAP = SNAPS / "nightly-cp1-1733370000"
IDX = SNAPS / "index.json"
DATA = b"etcd snapshot bytes"
Setup = Callable[[Path], object]


def make_world(w: Path, port: int) -> Path:
    """In ``w``: cluster.yaml (one server, its SSH port ``port``), a signed bundle of
    bundles.TAG and its public key, the token, and one snapshot with its record (made
    0700/0600 as mk8s makes them)."""
    node = f"    - {{address: 127.0.0.1, name: cp1, role: server, ssh: {{port: {port}}}}}\n"
    (w / "cluster.yaml").write_text(cluster_text(node))
    key = keys.generate_private_key()
    keys.write_key_pair(key, w / "k", None)
    written, _ = bundles.build(w / "b", key)
    os.replace(written.path, w / "bundle.tar.zst")
    shutil.rmtree(w / "b")
    (w / SNAPS).mkdir(parents=True, mode=0o700)
    for d in (w / ".mk8s", w / ".mk8s/demo"):
        d.chmod(0o700)
    (w / ".mk8s/demo/token").write_text(TOKEN + "\n")
    (w / ".mk8s/demo/lock").touch(mode=0o600)
    (w / SNAP).write_bytes(DATA)
    record = index.SnapshotRecord(
        file=SNAP.name, sha256=hashlib.sha256(DATA).hexdigest(), size=len(DATA),
        rke2_version=bundles.TAG, bundle_id=None, token_id=index.token_id(TOKEN),
        taken_at="2026-01-01T00:00:00Z", node="cp1", name="nightly", kind="backup",
        cluster_id=None,
    )  # fmt: skip
    index.add_record(w / SNAPS, "demo", record)
    return w


def _tree(root: Path) -> dict[str, tuple[int, str]]:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            st = os.lstat(p)
            digest = ""
            if stat.S_ISREG(st.st_mode) and name != "lock":  # the lock's mtime moves
                digest = f"{st.st_size}:{st.st_mtime_ns}"
            elif stat.S_ISLNK(st.st_mode):
                digest = os.readlink(p)
            out[str(p.relative_to(root))] = (st.st_mode, digest)
    return out


@dataclass
class Result:
    code: int | None
    err: str
    seconds: float


def run(world: Path, tmp_path: Path, setup: Setup | None, *args: str, stdin: int | None = subprocess.DEVNULL) -> Result:  # fmt: skip
    """``mk8s ARGS`` in a copy of ``world`` changed by ``setup``; nothing in it may change."""
    w = tmp_path / "w"
    shutil.copytree(world, w, symlinks=True)
    if setup is not None:
        setup(w)
    before = _tree(w)
    env = dict(os.environ, HOME=str(tmp_path / "home"), XDG_STATE_HOME=str(tmp_path / "state"))
    started = time.monotonic()
    try:
        r = subprocess.run(
            [sys.executable, "-m", "mk8s", *args],
            cwd=w, env=env, stdin=stdin, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        code, err = r.returncode, r.stderr
    except subprocess.TimeoutExpired as e:
        code, err = None, str(e.stderr)
    assert _tree(w) == before, "the run changed its inputs or wrote beside them"
    assert not (tmp_path / "state").exists(), "a debug log was written"
    return Result(code, err, time.monotonic() - started)


def refused(r: Result, code: int, *words: str, usage: bool = False) -> None:
    assert r.code == code, r.err
    assert "Traceback" not in r.err and "internal error" not in r.err, r.err
    if usage:
        assert "Error: " in r.err, r.err
    else:
        errors = [ln for ln in r.err.splitlines() if ln.startswith("mk8s: error: ")]
        assert len(errors) == 1, r.err
        assert r.err.rstrip("\n").endswith(errors[0]), r.err  # nothing after it
        assert "; " in errors[0], f"no fix given: {errors[0]}"
        for w in words:
            assert w in errors[0], r.err


def restore_args(*extra: str, snapshot: str = str(SNAP)) -> tuple[str, ...]:
    return (
        "restore", "-f", "cluster.yaml", "--snapshot", snapshot, "--bundle", "bundle.tar.zst",
        "--key", "k.pub", *extra,
    )  # fmt: skip


def write(rel: str | Path, data: bytes | str) -> Setup:
    def setup(w: Path) -> None:
        p = w / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.is_symlink() or p.exists():
            p.unlink()
        p.write_bytes(data.encode() if isinstance(data, str) else data)

    return setup


def symlink(rel: str | Path, target: str) -> Setup:
    def setup(w: Path) -> None:
        (w / rel).unlink(missing_ok=True)
        (w / rel).symlink_to(target)

    return setup


def fifo(rel: str | Path) -> Setup:
    def setup(w: Path) -> None:
        (w / rel).unlink(missing_ok=True)
        os.mkfifo(w / rel)

    return setup


def sparse(rel: str | Path) -> Setup:
    def setup(w: Path) -> None:
        with (w / rel).open("wb") as f:
            f.truncate(200 << 30)

    return setup


def index_text(change: Callable[[dict[str, object]], object]) -> str:
    """The world's index as JSON text after ``change`` (made on a fresh copy)."""
    rec = {
        "file": SNAP.name, "sha256": hashlib.sha256(DATA).hexdigest(), "size": len(DATA),
        "rke2Version": bundles.TAG, "bundleId": None, "tokenId": index.token_id(TOKEN),
        "takenAt": "2026-01-01T00:00:00Z", "node": "cp1", "name": "nightly",
        "kind": "backup", "clusterId": None,
    }  # fmt: skip
    data: dict[str, object] = {
        "schemaVersion": 1, "kind": "mk8s.snapshots", "cluster": "demo", "snapshots": [rec]
    }  # fmt: skip
    change(data)
    return json.dumps(data)


def first_record(data: dict[str, object]) -> dict[str, object]:
    return data["snapshots"][0]  # type: ignore[index,no-any-return]
