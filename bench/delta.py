"""The delta rows (issue #25): a patch upgrade carried as a delta of the bundle before.

The example upstream's v1.28.14 and v1.28.15 (default CNI: one ``rke2-images`` archive
of ``--delta-size`` bytes holding the release's 18 images as modeled on RKE2's own image
sets, tests/support/standin/imagesets.py): full bundles of both, and the delta of
v1.28.15 against the v1.28.14 bundle, made by the real CLI.

* ``delta-size``: the delta's bytes against the lower bound, the bytes that really
  changed: the blobs (archive members, by sha256) of v1.28.15's image archives that no
  v1.28.14 archive holds, plus every other file that changed, whole. Computed here with
  Python's tarfile, not with mk8s. Budget: within 2% of the bound.
* ``delta-verify``: ``bundle verify NEW --base OLD`` against ``bundle verify`` of the
  full NEW, alternating per round. Budget: 1.1x.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

import zstandard

from bench.bundle import _alternate
from bench.data import _drop_small_blobs, keypair, mk8s_bin
from bench.measure import human_bytes, run
from bench.rows import Row
from tests.support.upstream import ExampleUpstream

OLD = "v1.28.14+rke2r1"
NEW = "v1.28.15+rke2r1"
IMAGES = "rke2-images.linux-amd64.tar.zst"
MiB = 1 << 20


@dataclass
class DeltaData:
    work: Path
    pub: Path
    full_old: Path
    full_new: Path
    delta: Path
    bound: int
    full_bytes: int
    delta_bytes: int


def _create(up: ExampleUpstream, key: Path, out: Path, tag: str, *extra: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    lock = out / "mk8s.lock"
    cache = ["--cache", str(out.parent / "cache")]
    run([mk8s_bin(), "bundle", "lock", "--rke2", tag, *cache, "-o", str(lock)], env=up.env)
    argv = [mk8s_bin(), "bundle", "create", "--lock", str(lock), "--key", str(key), *cache]
    run([*argv, "-o", str(out / "bundle.tar.zst"), "--force", *extra], env=up.env)
    return out / "bundle.tar.zst"


def prepare(work: Path, size: int) -> DeltaData:
    """Generate (or reuse) the two releases, create both full bundles and the delta."""
    d = work / f"delta-{size}"
    d.mkdir(parents=True, exist_ok=True)
    key, pub = keypair(work)
    _drop_small_blobs(d / "upstream" / "blobs")  # the big image archives are kept
    with ExampleUpstream(dir=d / "upstream", sizes={IMAGES: size}) as up:
        for tag in (OLD, NEW):
            up.blob(tag, IMAGES)  # generated outside any timing
        full_old = _create(up, key, d / "old", OLD)
        full_new = _create(up, key, d / "new", NEW)
        lock = d / "new" / "mk8s.lock"
        argv = [mk8s_bin(), "bundle", "create", "--lock", str(lock), "--key", str(key)]
        argv += ["--cache", str(d / "cache"), "--base", str(full_old)]
        run([*argv, "-o", str(d / "delta.tar.zst"), "--force"], env=up.env)
        bound = lower_bound(up, Path(d / "old" / "mk8s.lock"), lock)
    return DeltaData(
        d,
        pub,
        full_old,
        full_new,
        d / "delta.tar.zst",
        bound,
        full_new.stat().st_size,
        (d / "delta.tar.zst").stat().st_size,
    )


def _blobs(data_path: Path) -> dict[str, int]:
    """sha256 -> size of every regular member of a zstd docker archive."""
    out: dict[str, int] = {}
    with open(data_path, "rb") as f:
        stream = zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=False)
        with tarfile.open(fileobj=stream, mode="r|") as tf:
            for ti in tf:
                member = tf.extractfile(ti)
                if member is None:
                    continue
                h = hashlib.sha256()
                while chunk := member.read(MiB):
                    h.update(chunk)
                out[h.hexdigest()] = ti.size
    return out


def lower_bound(up: ExampleUpstream, old_lock: Path, new_lock: Path) -> int:
    """Bytes that really changed from the old lock's release to the new one's."""
    old = {a["sha256"]: a for a in json.loads(old_lock.read_text())["artifacts"]}
    new = json.loads(new_lock.read_text())["artifacts"]
    old_blobs: set[str] = set()
    for a in old.values():
        if a["kind"] == "images":
            old_blobs |= set(_blobs(up.blob(OLD, a["name"]).path))
    total = 0
    for a in new:
        if a["sha256"] in old:
            continue
        if a["kind"] == "images":
            blobs = _blobs(up.blob(NEW, a["name"]).path)
            total += sum(n for b, n in blobs.items() if b not in old_blobs)
        else:
            total += a["size"]
    return total


def delta_rows(work: Path, size: int, rounds: int) -> tuple[Row, Row]:
    data = prepare(work, size)
    return size_row(data), verify_row(data, rounds)


def size_row(data: DeltaData) -> Row:
    row = Row(
        "delta-size",
        f"bytes of the delta of a patch upgrade ({OLD} -> {NEW}, {human_bytes(data.full_bytes)}"
        " full) vs the bytes that really changed",
        "B",
        "ratio <= 1.02",
        lambda r: r <= 1.02,
    )
    row.ours.append(float(data.delta_bytes))
    row.base.append(float(data.bound))
    row.notes.append(
        f"delta / full bundle = {data.delta_bytes / data.full_bytes:.3f};"
        f" lower bound / full bundle = {data.bound / data.full_bytes:.3f}"
    )
    return row


def verify_row(data: DeltaData, rounds: int) -> Row:
    row = Row(
        "delta-verify",
        f"bundle verify of the delta with its base vs of the full {human_bytes(data.full_bytes)}"
        " bundle",
        "s",
        "ratio <= 1.1",
        lambda r: r <= 1.1,
        rss_budget=200 * MiB,
    )
    base = ["--base", str(data.full_old)]

    def ours() -> None:
        s = run([mk8s_bin(), "bundle", "verify", str(data.delta), "--key", str(data.pub), *base])
        row.ours.append(s.seconds)
        row.ours_rss.append(s.max_rss)

    def full() -> None:
        s = run([mk8s_bin(), "bundle", "verify", str(data.full_new), "--key", str(data.pub)])
        row.base.append(s.seconds)
        row.base_rss.append(s.max_rss)

    for r in range(rounds):
        _alternate(r, full, ours)
    shutil.rmtree(data.work / "cache" / "tmp", ignore_errors=True)
    return row
