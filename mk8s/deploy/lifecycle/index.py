"""The snapshot index: what mk8s knows of each etcd snapshot it copied home.

``.mk8s/<cluster>/snapshots/`` holds the snapshot files (0600) and ``index.json``
(0600, ``schemas/snapshots.schema.json``): per file its sha256 and size, the RKE2
version the cluster's servers ran, the bundle that installed it, a non-secret id of the
cluster's token, when and on which server it was taken, and the uid of the
``kube-system`` namespace (which a restored cluster must serve again).

A snapshot is restored only when it matches its record (:func:`check_snapshot`): a
changed byte or a file mk8s has no record of is rejected (exit 3) before any node is
contacted. [rancher/rke2-docs docs/datastore/backup_restore.md, "Security": whoever
makes you restore their snapshot owns your cluster; "Validating the integrity and chain
of custody of datastore snapshots is the responsibility of the administrator".]
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mk8s.deploy.builders.membership import token_secret
from mk8s.errors import InputError, OutputError, SnapshotRejected
from mk8s.files import atomic_write, open_regular, read_regular, sha256_file
from mk8s.schemas import first_problem
from mk8s.untrusted import load_json, shown_list

INDEX_NAME = "index.json"
KIND = "mk8s.snapshots"
SCHEMA = "snapshots.schema.json"
MAX_INDEX = 16 << 20  # 10,000 records of well under 1 KiB
BACKUP = "backup"
PRE_UPGRADE = "pre-upgrade"
_TOKEN_ID_SALT = b"mk8s token id\0"


def token_id(token: str) -> str:
    """A non-secret id of a cluster token: 16 hex digits of a salted sha256 of its
    secret part (a full ``K10<ca hash>::server:<secret>`` token and its bare secret
    get the same id; RKE2 derives the snapshot's encryption key from that secret)."""
    return hashlib.sha256(_TOKEN_ID_SALT + token_secret(token).encode()).hexdigest()[:16]


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass(frozen=True)
class SnapshotRecord:
    """One snapshot copied home (field meanings: the schema)."""

    file: str
    sha256: str
    size: int
    rke2_version: str
    bundle_id: str | None
    token_id: str
    taken_at: str
    node: str
    name: str
    kind: str
    cluster_id: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "sha256": self.sha256,
            "size": self.size,
            "rke2Version": self.rke2_version,
            "bundleId": self.bundle_id,
            "tokenId": self.token_id,
            "takenAt": self.taken_at,
            "node": self.node,
            "name": self.name,
            "kind": self.kind,
            "clusterId": self.cluster_id,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> SnapshotRecord:
        return cls(
            file=obj["file"],
            sha256=obj["sha256"],
            size=obj["size"],
            rke2_version=obj["rke2Version"],
            bundle_id=obj["bundleId"],
            token_id=obj["tokenId"],
            taken_at=obj["takenAt"],
            node=obj["node"],
            name=obj["name"],
            kind=obj["kind"],
            cluster_id=obj["clusterId"],
        )


def index_path(directory: Path) -> Path:
    return directory / INDEX_NAME


def read_records(directory: Path) -> list[SnapshotRecord]:
    """The records of ``directory/index.json``, oldest first ([] when there is none).
    InputError (exit 2) naming the file when it is unusable."""
    path = index_path(directory)
    if not os.path.lexists(path):  # a symlink that leads nowhere is a damaged index
        return []
    fix = f"repair {path} or move it away (the snapshots beside it are then unknown to mk8s)"
    raw = read_regular(path, what="snapshot index", max_size=MAX_INDEX, fix=fix)
    obj = load_json(
        raw,
        what=f"snapshot index {path}",
        error=lambda problem: InputError(problem, fix),
        max_bytes=MAX_INDEX,
    )
    wrong = first_problem(SCHEMA, obj)
    if wrong:
        raise InputError(f"snapshot index {path}: {wrong}", fix)
    records = [SnapshotRecord.from_json(r) for r in obj["snapshots"]]
    twice = sorted(n for n, k in Counter(r.file for r in records).items() if k > 1)
    if twice:  # add_record keeps one record per file: which one would be the truth?
        raise InputError(
            f"snapshot index {path} has more than one record for {shown_list(twice)}", fix
        )
    return records


def check_home(directory: Path) -> list[SnapshotRecord]:
    """The records of the snapshots directory ``directory``; InputError (exit 2) when a
    new snapshot could not be recorded there: not a directory, or its index unusable.
    Checked before a snapshot is taken, so that none is copied home without a record."""
    for d in (directory.parent.parent, directory.parent, directory):  # .mk8s/NAME/snapshots
        if os.path.lexists(d) and not d.is_dir():
            raise InputError(
                f"{d} is not a directory; mk8s keeps the cluster's state and snapshots there",
                f"move {d} away",
            )
    return read_records(directory)


def add_record(directory: Path, cluster: str, record: SnapshotRecord) -> None:
    """Append ``record`` to ``directory/index.json`` (one record per file name: a record
    of the same name is replaced), written atomically, 0600."""
    records = [r for r in read_records(directory) if r.file != record.file] + [record]
    data = {
        "schemaVersion": 1,
        "kind": KIND,
        "cluster": cluster,
        "snapshots": [r.to_json() for r in records],
    }
    text = (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write(index_path(directory), text, mode=0o600)
    except OSError as e:
        raise OutputError(f"cannot write {index_path(directory)}: {e.strerror or e}") from e


@dataclass(frozen=True)
class CheckedSnapshot:
    """A snapshot file that matches its record."""

    path: Path
    record: SnapshotRecord


def check_snapshot(snapshot: Path, home: Path) -> CheckedSnapshot:
    """``snapshot`` against its record: in the index beside it, else in ``home`` (the
    cluster's ``.mk8s/<name>/snapshots``). Found by file name (its sha256 must match)
    or, for a renamed copy, by sha256. SnapshotRejected (exit 3) when the bytes differ
    from the record or no record exists; InputError (exit 2) when the file cannot be
    read. The file is hashed only when a record has its size: a wrong file of a
    terabyte is refused at once."""
    places = [snapshot.parent]
    if os.path.realpath(home) != os.path.realpath(snapshot.parent):  # never raises
        places.append(home)
    with open_regular(snapshot, what="snapshot", fix="give the snapshot file's path") as f:
        size = os.fstat(f.fileno()).st_size
        indexes = [(place, read_records(place)) for place in places]
        sha = None
        if any(r.size == size for _, records in indexes for r in records):
            try:
                sha, size = sha256_file(f)
            except OSError as e:
                raise InputError(f"cannot read snapshot {snapshot}: {e.strerror or e}") from e
    for place, records in indexes:
        named = [r for r in records if r.file == snapshot.name]
        if named:
            if named[-1].sha256 != sha or named[-1].size != size:
                raise _changed(snapshot, index_path(place), named[-1], sha, size)
            return CheckedSnapshot(snapshot, named[-1])
        same = [r for r in records if r.sha256 == sha and r.size == size]
        if same:
            return CheckedSnapshot(snapshot, same[-1])
    raise SnapshotRejected(
        f"snapshot {snapshot} has no record in {' or '.join(str(index_path(p)) for p in places)}"
        " (mk8s restores only snapshots whose sha256 it recorded when it took them);"
        " nothing was changed",
        "copy the snapshot together with the index.json written beside it, or take one"
        " with mk8s backup",
    )


def _changed(
    snapshot: Path, path: Path, rec: SnapshotRecord, sha: str | None, size: int
) -> SnapshotRejected:
    ours = f"sha256 {sha[:16]}... ({size} bytes)" if sha else f"{size} bytes"
    theirs = f"sha256 {rec.sha256[:16]}... ({rec.size} bytes)" if sha else f"{rec.size} bytes"
    return SnapshotRejected(
        f"snapshot {snapshot} does not match its record in {path}: {ours}, recorded"
        f" {theirs}; it was changed or damaged and is not restored, nothing was changed",
        "restore another snapshot (mk8s backup -f cluster.yaml --list)",
    )


__all__ = [
    "BACKUP",
    "PRE_UPGRADE",
    "CheckedSnapshot",
    "SnapshotRecord",
    "add_record",
    "check_home",
    "check_snapshot",
    "read_records",
    "token_id",
    "utc_now",
]
