"""The lifecycle commands' local inputs, hostile (2/2): ``mk8s backup``'s name, the
cluster's token and state directory, the confirmations, ``--wait``/``--jobs``, a newline
in a path, and ``mk8s status``'s error. The rest: test_hostile_lifecycle.py.

Every case runs the real CLI (tests/support/hostile_lifecycle.py) over a cluster whose only
node's SSH port is a socket on loopback that nobody answers, and must be refused
before anything connects to it (no connection may wait on the socket afterwards): the
documented exit code (docs/architecture.md, "Errors"), one error line naming the
problem and the fix (click's usage errors excepted), no traceback, never "internal
error", nothing written or changed.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.clusters import cluster_text
from tests.support.hostile_lifecycle import (
    IDX,
    SNAP,
    Result,
    Setup,
    fifo,
    refused,
    restore_args,
    run,
    write,
)

pytestmark = pytest.mark.usefixtures("no_connection")


@pytest.fixture
def world(lifecycle_world: Path) -> Path:
    return lifecycle_world


# ---- backup --name, the token, confirmations, --wait and --jobs ----------------------------
@pytest.mark.parametrize("name", ["", "../x", "a b", "a\nb", "x" * 300, "-x", "\x1b[2Jred"])
def test_a_bad_backup_name_is_refused_exit_2(world: Path, tmp_path: Path, name: str) -> None:
    r = run(world, tmp_path, None, "backup", "-f", "cluster.yaml", f"--name={name}")
    refused(r, 2, "snapshot name")


TOKEN_CASES: list[tuple[str, Setup, str]] = [
    ("missing", lambda w: (w / ".mk8s/demo/token").unlink(), "no token"),
    ("garbage", write(".mk8s/demo/token", b"\x00\xff\n\x1b[31m"), "control"),
    ("empty", write(".mk8s/demo/token", b""), "empty"),
    ("fifo", fifo(".mk8s/demo/token"), "FIFO"),
]


@pytest.mark.parametrize(
    ("setup", "words"), [c[1:] for c in TOKEN_CASES], ids=[c[0] for c in TOKEN_CASES]
)
def test_a_missing_or_bad_token_is_refused_exit_2(
    world: Path, tmp_path: Path, setup: Setup, words: str
) -> None:
    refused(run(world, tmp_path, setup, *restore_args("--dry-run")), 2, "token", words)


@pytest.mark.parametrize(
    "args",
    [restore_args(), ("certs", "rotate", "-f", "cluster.yaml")],
    ids=["restore", "certs-rotate"],
)
def test_without_yes_and_without_a_terminal_it_asks_for_yes(
    world: Path, tmp_path: Path, args: tuple[str, ...]
) -> None:
    for stdin in (subprocess.DEVNULL, None):
        r = run(world, tmp_path / str(stdin), None, *args, stdin=stdin)
        refused(r, 2, usage=True)
        assert "--yes" in r.err and r.seconds < 20


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "-inf", "1e400"])
@pytest.mark.parametrize(
    "args",
    [restore_args("--dry-run"), ("certs", "rotate", "-f", "cluster.yaml", "--dry-run")],
    ids=["restore", "certs-rotate"],
)
def test_a_wait_that_is_no_number_of_seconds_is_a_usage_error(
    world: Path, tmp_path: Path, args: tuple[str, ...], value: str
) -> None:
    r = run(world, tmp_path, None, *args, f"--wait={value}")
    refused(r, 2, usage=True)
    assert "--wait" in r.err


@pytest.mark.parametrize("value", ["0", "-1", "x"])
def test_jobs_must_be_a_positive_number(world: Path, tmp_path: Path, value: str) -> None:
    r = run(world, tmp_path, None, *restore_args("--dry-run", f"--jobs={value}"))
    refused(r, 2, usage=True)
    assert "--jobs" in r.err


def test_a_newline_in_the_bundle_path_forges_no_line(world: Path, tmp_path: Path) -> None:
    args = list(restore_args("--dry-run"))
    args[args.index("bundle.tar.zst")] = "x\nmk8s: error: forged"
    r = run(world, tmp_path, None, *args)
    refused(r, 2, "x\\nmk8s: error: forged does not exist")
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
    refused(Result(r.returncode, r.stderr, 0.0), 1, "cp1", "mk8s deploy")


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

    r = run(world, tmp_path, setup, *restore_args("--yes", *dry_run))
    refused(r, 3, "does not match its record")


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

    r = run(world, tmp_path, setup, *restore_args("--yes", snapshot=f"usb/{SNAP.name}"))
    refused(r, 2, "token")
    r = run(world, tmp_path / "b", setup, "backup", "-f", "cluster.yaml")
    refused(r, 2, ".mk8s/demo", "move")
