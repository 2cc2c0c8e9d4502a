"""The lifecycle commands' local inputs, hostile (1/2): ``mk8s restore``'s snapshot and
the snapshot indexes (the cluster's and the one beside the snapshot), also as ``mk8s
backup`` and ``backup --list`` read them. The rest: test_hostile_lifecycle_state.py.

Every case runs the real CLI (tests/support/hostile_lifecycle.py) over a cluster whose only
node's SSH port is a socket on loopback that nobody answers, and must be refused
before anything connects to it (no connection may wait on the socket afterwards): the
documented exit code (docs/architecture.md, "Errors"), one error line naming the
problem and the fix (click's usage errors excepted), no traceback, never "internal
error", nothing written or changed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.hostile_lifecycle import (
    DATA,
    IDX,
    SNAP,
    SNAPS,
    Setup,
    fifo,
    first_record,
    index_text,
    refused,
    restore_args,
    run,
    sparse,
    symlink,
    write,
)

pytestmark = pytest.mark.usefixtures("no_connection")


@pytest.fixture
def world(lifecycle_world: Path) -> Path:
    return lifecycle_world


# ---- --snapshot ---------------------------------------------------------------------------
SNAPSHOT_CASES: list[tuple[str, Setup | None, str, int, str]] = [
    ("missing", None, "nope", 2, "does not exist"),
    ("fifo", fifo("fifo"), "fifo", 2, "FIFO"),
    ("dev-zero", None, "/dev/zero", 2, "device"),
    ("empty", write("empty", b""), "empty", 3, "has no record"),
    ("symlink-loop", symlink("loop", "loop"), "loop", 2, "symbolic links"),
    ("no-record", write("other", b"other"), "other", 3, "has no record"),
    ("changed", write(SNAP, b"changed"), str(SNAP), 3, "does not match its record"),
    ("newline", write("a\nb", DATA + b"!"), "a\nb", 3, "a\\nb has no record"),
    # a wrong file of 200 GB (sparse) is refused at once, not hashed first
    ("huge-no-record", sparse("big"), "big", 3, "has no record"),
    ("huge-named", sparse(SNAP), str(SNAP), 3, "does not match its record"),
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
    r = run(world, tmp_path, setup, *restore_args("--yes", snapshot=snapshot))
    refused(r, code, words)
    assert r.seconds < 15


def test_a_directory_as_snapshot_is_a_usage_error(world: Path, tmp_path: Path) -> None:
    refused(run(world, tmp_path, None, *restore_args("--yes", snapshot=str(SNAPS))), 2, usage=True)


# ---- index.json -----------------------------------------------------------------------------
INDEX_CASES: list[tuple[str, str | Setup, str]] = [
    ("not-json", "{not json", "not valid JSON"),
    ("a-list", "[1, 2]", "not of type 'object'"),
    ("negative-size", index_text(lambda d: first_record(d).update(size=-1)), "minimum"),
    ("bad-sha256", index_text(lambda d: first_record(d).update(sha256="zz")), "sha256"),
    ("file-dotdot", index_text(lambda d: first_record(d).update(file="../x")), "file"),
    ("file-absolute", index_text(lambda d: first_record(d).update(file="/etc/passwd")), "file"),
    ("huge-size", index_text(lambda d: first_record(d).update(size=10**30)), "size"),
    ("nan-size", index_text(lambda d: first_record(d).update(size=float("nan"))), "size"),
    (
        "duplicate-file",
        index_text(lambda d: d["snapshots"].append(dict(first_record(d), sha256="b" * 64))),  # type: ignore[attr-defined]
        "more than one record",
    ),
    ("too-deep", "[" * 100_000 + "]" * 100_000, "nested deeper"),
    (
        "escape-in-node",
        index_text(lambda d: first_record(d).update(node="\x1b[31mX\nfake")),
        "node",
    ),
    ("dev-zero", symlink(IDX, "/dev/zero"), "device"),
    ("fifo", fifo(IDX), "FIFO"),
    ("symlink-loop", symlink(IDX, "index.json"), "symbolic links"),
]


def _index_setup(content: str | Setup, where: Path) -> Setup:
    if isinstance(content, str):
        return write(where, content)
    return content


@pytest.mark.parametrize(
    ("content", "words"), [c[1:] for c in INDEX_CASES], ids=[c[0] for c in INDEX_CASES]
)
def test_a_bad_cluster_index_is_refused_exit_2(
    world: Path, tmp_path: Path, content: str | Setup, words: str
) -> None:
    r = run(world, tmp_path, _index_setup(content, IDX), *restore_args("--dry-run"))
    refused(r, 2, "index.json", words)


def test_a_100_mb_index_is_refused_unread(world: Path, tmp_path: Path) -> None:
    def big(w: Path) -> None:
        with (w / IDX).open("r+b") as f:
            f.truncate(100 << 20)

    r = run(world, tmp_path, big, *restore_args("--dry-run"))
    refused(r, 2, "index.json", "larger than")


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

    r = run(world, tmp_path, setup, *restore_args("--dry-run", snapshot=f"usb/{SNAP.name}"))
    refused(r, 2, "usb/index.json", words)


@pytest.mark.parametrize(
    ("content", "words"),
    [c[1:] for c in INDEX_CASES if c[0] in ("not-json", "huge-size", "duplicate-file", "symlink-loop")],
)  # fmt: skip
def test_backup_list_refuses_a_bad_index_before_any_node(
    world: Path, tmp_path: Path, content: str | Setup, words: str
) -> None:
    r = run(world, tmp_path, _index_setup(content, IDX), "backup", "-f", "cluster.yaml", "--list")
    refused(r, 2, "index.json", words)


@pytest.mark.parametrize(
    ("content", "words"),
    [c[1:] for c in INDEX_CASES if c[0] in ("not-json", "duplicate-file", "symlink-loop")],
)
def test_backup_refuses_a_bad_index_before_any_snapshot_is_taken(
    world: Path, tmp_path: Path, content: str | Setup, words: str
) -> None:
    """Else the snapshot would be taken and copied home, and then not recorded."""
    r = run(world, tmp_path, _index_setup(content, IDX), "backup", "-f", "cluster.yaml")
    refused(r, 2, "index.json", words)


@pytest.mark.parametrize("args", [(), ("--list",)], ids=["backup", "list"])
def test_a_snapshots_path_that_is_no_directory_is_refused(
    world: Path, tmp_path: Path, args: tuple[str, ...]
) -> None:
    def setup(w: Path) -> None:
        shutil.rmtree(w / SNAPS)
        (w / SNAPS).write_text("not a directory\n")

    r = run(world, tmp_path, setup, "backup", "-f", "cluster.yaml", *args)
    refused(r, 2, "snapshots is not a directory", "move")
