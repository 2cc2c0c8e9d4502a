"""The lifecycle commands' local inputs, hostile: ``mk8s restore``'s snapshot, the
snapshot indexes (the cluster's and the one beside the snapshot), the cluster's token,
``mk8s backup``'s name and ``--list``, the confirmations and ``--wait``/``--jobs``.

Every case runs the real CLI over a cluster whose only node's SSH port is a listening
socket on loopback that nobody answers, and must be refused before anything connects
to it (checked: no connection is waiting on the socket afterwards): the documented exit code (docs/architecture.md,
"Errors"), one error line naming the problem and the fix (click's usage errors
excepted), no traceback, never "internal error", and nothing written or changed (the
state lock's empty file excepted: it is made before a run and left, as always).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

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


@pytest.fixture(scope="module")
def node_port() -> Iterator[socket.socket]:
    """The cluster's one node: a socket listening on loopback, never accepting."""
    with socket.create_server(("127.0.0.1", 0), backlog=16) as sock:
        sock.setblocking(False)
        yield sock


@pytest.fixture(autouse=True)
def nothing_connects(node_port: socket.socket) -> Iterator[None]:
    yield
    try:
        conn, _ = node_port.accept()
    except BlockingIOError:
        return
    conn.close()
    pytest.fail("mk8s connected to the node before refusing")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, node_port: socket.socket) -> Path:
    """A cluster dir: cluster.yaml, a signed bundle of bundles.TAG and its public key,
    the token, and one snapshot with its record (made 0700/0600 as mk8s makes them)."""
    w = tmp_path_factory.mktemp("world")
    port = node_port.getsockname()[1]
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


def _run(world: Path, tmp_path: Path, setup: Setup | None, *args: str, stdin: int | None = subprocess.DEVNULL) -> Result:  # fmt: skip
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


def _refused(r: Result, code: int, *words: str, usage: bool = False) -> None:
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


def _restore(*extra: str, snapshot: str = str(SNAP)) -> tuple[str, ...]:
    return (
        "restore", "-f", "cluster.yaml", "--snapshot", snapshot, "--bundle", "bundle.tar.zst",
        "--key", "k.pub", *extra,
    )  # fmt: skip


def _write(rel: str | Path, data: bytes | str) -> Setup:
    def setup(w: Path) -> None:
        p = w / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.is_symlink() or p.exists():
            p.unlink()
        p.write_bytes(data.encode() if isinstance(data, str) else data)

    return setup


def _symlink(rel: str | Path, target: str) -> Setup:
    def setup(w: Path) -> None:
        (w / rel).unlink(missing_ok=True)
        (w / rel).symlink_to(target)

    return setup


def _fifo(rel: str | Path) -> Setup:
    def setup(w: Path) -> None:
        (w / rel).unlink(missing_ok=True)
        os.mkfifo(w / rel)

    return setup


def _sparse(rel: str | Path) -> Setup:
    def setup(w: Path) -> None:
        with (w / rel).open("wb") as f:
            f.truncate(200 << 30)

    return setup


def _index(change: Callable[[dict[str, object]], object]) -> str:
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


def _rec(data: dict[str, object]) -> dict[str, object]:
    return data["snapshots"][0]  # type: ignore[index,no-any-return]


# ---- --snapshot ---------------------------------------------------------------------------
SNAPSHOT_CASES: list[tuple[str, Setup | None, str, int, str]] = [
    ("missing", None, "nope", 2, "does not exist"),
    ("fifo", _fifo("fifo"), "fifo", 2, "FIFO"),
    ("dev-zero", None, "/dev/zero", 2, "device"),
    ("empty", _write("empty", b""), "empty", 3, "has no record"),
    ("symlink-loop", _symlink("loop", "loop"), "loop", 2, "symbolic links"),
    ("no-record", _write("other", b"other"), "other", 3, "has no record"),
    ("changed", _write(SNAP, b"changed"), str(SNAP), 3, "does not match its record"),
    ("newline", _write("a\nb", DATA + b"!"), "a\nb", 3, "a\\nb has no record"),
    # a wrong file of 200 GB (sparse) is refused at once, not hashed first
    ("huge-no-record", _sparse("big"), "big", 3, "has no record"),
    ("huge-named", _sparse(SNAP), str(SNAP), 3, "does not match its record"),
    ("newline-missing", None, "x\ny", 2, "x\\ny does not exist"),
]


@pytest.mark.parametrize(
    ("setup", "snapshot", "code", "words"),
    [c[1:] for c in SNAPSHOT_CASES],
    ids=[c[0] for c in SNAPSHOT_CASES],
)
def test_a_bad_snapshot_is_refused_before_any_node(
    world: Path, tmp_path: Path, setup: Setup | None, snapshot: str, code: int, words: str
) -> None:
    r = _run(world, tmp_path, setup, *_restore("--yes", snapshot=snapshot))
    _refused(r, code, words)
    assert r.seconds < 15


def test_a_directory_as_snapshot_is_a_usage_error(world: Path, tmp_path: Path) -> None:
    _refused(_run(world, tmp_path, None, *_restore("--yes", snapshot=str(SNAPS))), 2, usage=True)


# ---- index.json -----------------------------------------------------------------------------
INDEX_CASES: list[tuple[str, str | Setup, str]] = [
    ("not-json", "{not json", "not valid JSON"),
    ("a-list", "[1, 2]", "not of type 'object'"),
    ("negative-size", _index(lambda d: _rec(d).update(size=-1)), "minimum"),
    ("bad-sha256", _index(lambda d: _rec(d).update(sha256="zz")), "sha256"),
    ("file-dotdot", _index(lambda d: _rec(d).update(file="../x")), "file"),
    ("file-absolute", _index(lambda d: _rec(d).update(file="/etc/passwd")), "file"),
    ("huge-size", _index(lambda d: _rec(d).update(size=10**30)), "size"),
    ("nan-size", _index(lambda d: _rec(d).update(size=float("nan"))), "size"),
    (
        "duplicate-file",
        _index(lambda d: d["snapshots"].append(dict(_rec(d), sha256="b" * 64))),  # type: ignore[attr-defined]
        "more than one record",
    ),
    ("too-deep", "[" * 100_000 + "]" * 100_000, "nested deeper"),
    ("escape-in-node", _index(lambda d: _rec(d).update(node="\x1b[31mX\nfake")), "node"),
    ("dev-zero", _symlink(IDX, "/dev/zero"), "device"),
    ("fifo", _fifo(IDX), "FIFO"),
    ("symlink-loop", _symlink(IDX, "index.json"), "symbolic links"),
]


def _index_setup(content: str | Setup, where: Path) -> Setup:
    if isinstance(content, str):
        return _write(where, content)
    return content


@pytest.mark.parametrize(
    ("content", "words"), [c[1:] for c in INDEX_CASES], ids=[c[0] for c in INDEX_CASES]
)
def test_a_bad_cluster_index_is_refused_exit_2(
    world: Path, tmp_path: Path, content: str | Setup, words: str
) -> None:
    r = _run(world, tmp_path, _index_setup(content, IDX), *_restore("--dry-run"))
    _refused(r, 2, "index.json", words)


def test_a_100_mb_index_is_refused_unread(world: Path, tmp_path: Path) -> None:
    def big(w: Path) -> None:
        with (w / IDX).open("r+b") as f:
            f.truncate(100 << 20)

    r = _run(world, tmp_path, big, *_restore("--dry-run"))
    _refused(r, 2, "index.json", "larger than")


@pytest.mark.parametrize(
    ("content", "words"),
    [c[1:] for c in INDEX_CASES if isinstance(c[1], str)],
    ids=[c[0] for c in INDEX_CASES if isinstance(c[1], str)],
)
def test_a_bad_index_beside_the_snapshot_is_refused_exit_2(
    world: Path, tmp_path: Path, content: str, words: str
) -> None:
    def setup(w: Path) -> None:
        (w / "usb").mkdir()
        shutil.copy(w / SNAP, w / "usb" / SNAP.name)
        (w / "usb/index.json").write_text(content)

    r = _run(world, tmp_path, setup, *_restore("--dry-run", snapshot=f"usb/{SNAP.name}"))
    _refused(r, 2, "usb/index.json", words)


@pytest.mark.parametrize(
    ("content", "words"),
    [c[1:] for c in INDEX_CASES if c[0] in ("not-json", "huge-size", "duplicate-file", "symlink-loop")],
)  # fmt: skip
def test_backup_list_refuses_a_bad_index_before_any_node(
    world: Path, tmp_path: Path, content: str | Setup, words: str
) -> None:
    r = _run(world, tmp_path, _index_setup(content, IDX), "backup", "-f", "cluster.yaml", "--list")
    _refused(r, 2, "index.json", words)


@pytest.mark.parametrize(
    ("content", "words"),
    [c[1:] for c in INDEX_CASES if c[0] in ("not-json", "duplicate-file", "symlink-loop")],
)
def test_backup_refuses_a_bad_index_before_any_snapshot_is_taken(
    world: Path, tmp_path: Path, content: str | Setup, words: str
) -> None:
    """Else the snapshot would be taken and copied home, and then not recorded."""
    r = _run(world, tmp_path, _index_setup(content, IDX), "backup", "-f", "cluster.yaml")
    _refused(r, 2, "index.json", words)


@pytest.mark.parametrize("args", [(), ("--list",)], ids=["backup", "list"])
def test_a_snapshots_path_that_is_no_directory_is_refused(
    world: Path, tmp_path: Path, args: tuple[str, ...]
) -> None:
    def setup(w: Path) -> None:
        shutil.rmtree(w / SNAPS)
        (w / SNAPS).write_text("not a directory\n")

    r = _run(world, tmp_path, setup, "backup", "-f", "cluster.yaml", *args)
    _refused(r, 2, "snapshots is not a directory", "move")


# ---- backup --name, the token, confirmations, --wait and --jobs ----------------------------
@pytest.mark.parametrize("name", ["", "../x", "a b", "a\nb", "x" * 300, "-x", "\x1b[2Jred"])
def test_a_bad_backup_name_is_refused_exit_2(world: Path, tmp_path: Path, name: str) -> None:
    r = _run(world, tmp_path, None, "backup", "-f", "cluster.yaml", f"--name={name}")
    _refused(r, 2, "snapshot name")


TOKEN_CASES: list[tuple[str, Setup, str]] = [
    ("missing", lambda w: (w / ".mk8s/demo/token").unlink(), "no token"),
    ("garbage", _write(".mk8s/demo/token", b"\x00\xff\n\x1b[31m"), "control"),
    ("empty", _write(".mk8s/demo/token", b""), "empty"),
    ("fifo", _fifo(".mk8s/demo/token"), "FIFO"),
]


@pytest.mark.parametrize(
    ("setup", "words"), [c[1:] for c in TOKEN_CASES], ids=[c[0] for c in TOKEN_CASES]
)
def test_a_missing_or_bad_token_is_refused_exit_2(
    world: Path, tmp_path: Path, setup: Setup, words: str
) -> None:
    _refused(_run(world, tmp_path, setup, *_restore("--dry-run")), 2, "token", words)


@pytest.mark.parametrize(
    "args",
    [_restore(), ("certs", "rotate", "-f", "cluster.yaml")],
    ids=["restore", "certs-rotate"],
)
def test_without_yes_and_without_a_terminal_it_asks_for_yes(
    world: Path, tmp_path: Path, args: tuple[str, ...]
) -> None:
    for stdin in (subprocess.DEVNULL, None):
        r = _run(world, tmp_path / str(stdin), None, *args, stdin=stdin)
        _refused(r, 2, usage=True)
        assert "--yes" in r.err and r.seconds < 20


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "-inf", "1e400"])
@pytest.mark.parametrize(
    "args",
    [_restore("--dry-run"), ("certs", "rotate", "-f", "cluster.yaml", "--dry-run")],
    ids=["restore", "certs-rotate"],
)
def test_a_wait_that_is_no_number_of_seconds_is_a_usage_error(
    world: Path, tmp_path: Path, args: tuple[str, ...], value: str
) -> None:
    r = _run(world, tmp_path, None, *args, f"--wait={value}")
    _refused(r, 2, usage=True)
    assert "--wait" in r.err


@pytest.mark.parametrize("value", ["0", "-1", "x"])
def test_jobs_must_be_a_positive_number(world: Path, tmp_path: Path, value: str) -> None:
    r = _run(world, tmp_path, None, *_restore("--dry-run", f"--jobs={value}"))
    _refused(r, 2, usage=True)
    assert "--jobs" in r.err


def test_a_newline_in_the_bundle_path_forges_no_line(world: Path, tmp_path: Path) -> None:
    args = list(_restore("--dry-run"))
    args[args.index("bundle.tar.zst")] = "x\nmk8s: error: forged"
    r = _run(world, tmp_path, None, *args)
    _refused(r, 2, "x\\nmk8s: error: forged does not exist")
    assert not any(ln.startswith("mk8s: error: forged") for ln in r.err.splitlines()), r.err


def test_status_of_an_unreachable_node_names_it_and_the_fix(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]  # closed below: connecting is refused at once
    node = f"    - {{address: 127.0.0.1, name: cp1, role: server, ssh: {{port: {port}}}}}\n"
    (tmp_path / "cluster.yaml").write_text(cluster_text(node))
    r = subprocess.run(
        [sys.executable, "-m", "mk8s", "status", "-f", "cluster.yaml"],
        cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    _refused(Result(r.returncode, r.stderr, 0.0), 1, "cp1", "mk8s deploy")


@pytest.mark.parametrize("dry_run", [(), ("--dry-run",)], ids=["yes", "dry-run"])
def test_a_refused_restore_leaves_the_state_directory_as_it_was(
    world: Path, tmp_path: Path, dry_run: tuple[str, ...]
) -> None:
    """Not even the state lock's file is made, nor .mk8s's mode tightened, when the
    snapshot, the bundle or the token is refused (the checks come before the lock)."""

    def setup(w: Path) -> None:
        (w / ".mk8s/demo/lock").unlink()
        (w / ".mk8s").chmod(0o755)
        (w / SNAP).write_bytes(b"changed")

    r = _run(world, tmp_path, setup, *_restore("--yes", *dry_run))
    _refused(r, 3, "does not match its record")


def _state_loop(w: Path) -> None:
    shutil.rmtree(w / ".mk8s/demo")
    (w / ".mk8s/demo").symlink_to("demo")


def _state_file(w: Path) -> None:
    shutil.rmtree(w / ".mk8s/demo")
    (w / ".mk8s/demo").write_text("not a directory\n")


@pytest.mark.parametrize("state", [_state_loop, _state_file], ids=["symlink-loop", "a-file"])
def test_a_state_directory_that_is_none_is_refused_with_the_fix(
    world: Path, tmp_path: Path, state: Setup
) -> None:
    """With the snapshot and its index on a stick, restore needs .mk8s/NAME only for
    the token; backup needs it to keep the snapshot."""

    def setup(w: Path) -> None:
        (w / "usb").mkdir()
        shutil.copy(w / SNAP, w / "usb")
        shutil.copy(w / IDX, w / "usb")
        state(w)

    r = _run(world, tmp_path, setup, *_restore("--yes", snapshot=f"usb/{SNAP.name}"))
    _refused(r, 2, "token")
    r = _run(world, tmp_path / "b", setup, "backup", "-f", "cluster.yaml")
    _refused(r, 2, ".mk8s/demo", "move")
