"""Taking an etcd snapshot on a server and copying it home (pure builders plus the one
copy), shared by ``mk8s backup`` and the snapshot deploy takes before an upgrade.

[rancher/rke2-docs docs/datastore/backup_restore.md: ``rke2 etcd-snapshot save
--name NAME`` writes ``NAME-<node>-<unix time>`` into the server's
``etcd-snapshot-dir`` (default ``${data-dir}/server/db/snapshots``); ``rke2
etcd-snapshot ls`` prints ``Name Location Size Created``. A snapshot opens only with the
server token it was taken under.]
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from mk8s.bundle.upstream.versions import parse_tag
from mk8s.deploy.builders import kubectl
from mk8s.deploy.cluster import Node
from mk8s.deploy.command import Command
from mk8s.deploy.engine.session import Session
from mk8s.deploy.lifecycle import index
from mk8s.deploy.rke2config import NodePaths
from mk8s.errors import DeployError, InputError, OutputError
from mk8s.files import atomic_writer, sha256_file

# k3s-io/k3s pkg/etcd/snapshot_handler.go takes a snapshot name of these characters; the
# index keeps names to 100 of them.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
DEFAULT_NAME = "mk8s-backup"
SAVE_TIMEOUT = 600.0


def check_name(name: str) -> str:
    """``name`` if RKE2 takes it as a snapshot name, else InputError (exit 2)."""
    if not NAME.fullmatch(name):
        raise InputError(
            f"snapshot name {name[:120]!r} is not a name RKE2 takes",
            "use letters, digits, '.', '_' and '-' (at most 100, starting with a letter or digit)",
        )
    return name


def rke2_binary(prefix: str | None) -> str:
    return posixpath.join(prefix or "/usr/local", "bin", "rke2")


def save_command(prefix: str | None, name: str, node: str, paths: NodePaths) -> Command:
    """``rke2 etcd-snapshot save --name NAME``, then the path it wrote (the newest
    ``NAME-NODE-*`` in the node's snapshot dir) on stdout."""
    return Command.script(
        "{rke2} etcd-snapshot save --name {name} >&2 && ls -t {dir}/{name}-{node}-* | head -n 1",
        {"rke2": rke2_binary(prefix), "name": name, "node": node, "dir": paths.snapshot_dir},
        sudo=True,
        timeout=SAVE_TIMEOUT,
        description=f"etcd snapshot {name} (rke2 etcd-snapshot save)",
    )


def ls_command(prefix: str | None) -> Command:
    return Command.argv(
        rke2_binary(prefix),
        "etcd-snapshot",
        "ls",
        sudo=True,
        check=False,
        timeout=120,
        description="list the server's etcd snapshots (rke2 etcd-snapshot ls)",
    )


def parse_cluster_id(text: str) -> str | None:
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    uid = obj.get("metadata", {}).get("uid") if isinstance(obj, dict) else None
    return uid if isinstance(uid, str) and 0 < len(uid) <= 128 else None


@dataclass(frozen=True)
class Listed:
    """One row of ``rke2 etcd-snapshot ls``."""

    name: str
    location: str
    size: str
    created: str


def parse_ls(text: str) -> list[Listed]:
    """The rows under the ``Name Location Size Created`` header (others ignored)."""
    rows: list[Listed] = []
    seen_header = False
    for line in text.splitlines():
        words = line.split()
        if words[:4] == ["Name", "Location", "Size", "Created"]:
            seen_header = True
            continue
        if seen_header and len(words) == 4:
            rows.append(Listed(*words))
    return rows


def newest(tags: Sequence[str]) -> str | None:
    """The newest of ``tags`` (RKE2 tags; others ignored), or None."""
    parsed = [(v, t) for t in tags if (v := parse_tag(t)) is not None]
    return max(parsed)[1] if parsed else None


def saved_path(out: str, paths: NodePaths, node: Node) -> str:
    """The snapshot path the save command printed; DeployError when there is none."""
    found = out.strip().splitlines()[-1:]
    if not found or not found[0].startswith(paths.snapshot_dir + "/"):
        raise DeployError(
            f"{node.name}: the etcd snapshot was not found after `rke2 etcd-snapshot save`",
            f"check `journalctl -u rke2-server` on {node.name}, then run again",
        )
    return found[0]


@dataclass(frozen=True)
class Taken:
    """What a snapshot is besides its bytes (see :class:`index.SnapshotRecord`)."""

    name: str
    kind: str
    rke2_version: str
    bundle_id: str | None
    token: str
    cluster_id: str | None


def copy_home(s: Session, node: Node, remote: str, taken: Taken) -> index.SnapshotRecord:
    """Copy ``remote`` from ``node`` into ``.mk8s/<name>/snapshots/`` (0600), record it
    in the index and the audit log; the record."""
    home = snapshots_home(s)
    index.check_home(home)  # no snapshot file here without its record
    local = home / posixpath.basename(remote)
    try:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        with atomic_writer(local, mode=0o600) as out:
            _download(s, node, remote, out)
    except OSError as e:
        raise OutputError(f"cannot write {local}: {e.strerror or e}") from e
    with local.open("rb") as f:
        sha, size = sha256_file(f)
    record = index.SnapshotRecord(
        file=local.name,
        sha256=sha,
        size=size,
        rke2_version=taken.rke2_version,
        bundle_id=taken.bundle_id,
        token_id=index.token_id(taken.token),
        taken_at=index.utc_now(),
        node=node.name,
        name=taken.name,
        kind=taken.kind,
        cluster_id=taken.cluster_id,
    )
    index.add_record(home, s.cluster.name, record)
    s.remote.audit(node, "snapshot", file=remote, local=str(local), bytes=size, sha256=sha)
    s.log(f"{node.name}: etcd snapshot {local} (sha256 {sha[:16]})")
    return record


def _download(s: Session, node: Node, remote: str, out: BinaryIO) -> None:
    """Stream the snapshot (RKE2 writes it 0600, root's) into ``out`` over SFTP, memory
    bounded. A login user other than root reads a copy made for it in the staging
    directory (as root, 0600), removed afterwards."""
    t = s.remote.transport(node)
    user = node.ssh.user
    if user == "root":
        t.download(remote, out)
        return
    name = posixpath.basename(remote)
    copy = posixpath.join(s.cluster.options.staging_dir, "snapshot-copy", name)
    s.remote.run(node, "snapshot", copy_for_user_command(remote, copy, user))
    try:
        t.download(copy, out)
    finally:
        s.remote.run(node, "snapshot", remove_copy_command(copy))


def copy_for_user_command(remote: str, copy: str, user: str) -> Command:
    """As root: ``copy`` (0600, owned by ``user``) of the snapshot ``remote``."""
    return Command.script(
        "install -d -m 0700 -o {user} {dir} && install -m 0600 -o {user} {src} {dst}",
        {"user": user, "dir": posixpath.dirname(copy), "src": remote, "dst": copy},
        sudo=True,
        timeout=SAVE_TIMEOUT,
        description="a copy of the snapshot the login user may read (0600)",
    )


def remove_copy_command(copy: str) -> Command:
    return Command.argv(
        "rm", "-f", copy, sudo=True, check=False, timeout=60, description="remove that copy"
    )


def snapshots_home(s: Session) -> Path:
    return s.state.path / "snapshots"


def deployed_bundle(s: Session, node: Node) -> str | None:
    """The bundle id the journal says last installed ``node`` (None when unknown)."""
    entry = s.journal.read().get("nodes", {}).get(node.name)
    bundle = entry.get("bundle") if isinstance(entry, dict) else None
    return bundle if isinstance(bundle, str) and re.fullmatch(r"[0-9a-f]{16}", bundle) else None


def cluster_id(s: Session, node: Node) -> str | None:
    r = s.remote.run(node, "snapshot", kubectl.cluster_id_command(s.cluster.paths(node)))
    return parse_cluster_id(r.stdout) if r.exit_code == 0 else None


__all__ = [
    "DEFAULT_NAME",
    "Listed",
    "Taken",
    "check_name",
    "cluster_id",
    "copy_home",
    "deployed_bundle",
    "ls_command",
    "newest",
    "parse_ls",
    "save_command",
    "saved_path",
    "snapshots_home",
]
