"""The split-bundle verify row: ``bundle verify`` of a bundle split into parts (given its
parts index) against ``bundle verify`` of the same bundle unsplit (issue #16: within
1.1x). Both sides alternate per round; the parts are made once with ``bundle split``."""

from __future__ import annotations

import shutil
from pathlib import Path

from bench.bundle import _alternate
from bench.data import Dataset, mk8s_bin
from bench.measure import run
from bench.rows import Row

MiB = 1 << 20


def part_size(bundle_size: int) -> int:
    """700 MiB parts (a CD) for a big bundle; at least 3 parts for a small one."""
    return max(64 << 10, min(700 * MiB, bundle_size // 3 + 1))


def verify_split_row(ds: Dataset, bundle: Path, rounds: int) -> Row:
    size = bundle.stat().st_size
    row = Row(
        "verify-split",
        f"bundle verify of a {size / (1 << 30):.2f} GiB bundle in parts vs the same unsplit",
        "s",
        "ratio <= 1.1",
        lambda r: r <= 1.1,
        rss_budget=100 * MiB,
    )
    parts_dir = ds.work / "split"
    shutil.rmtree(parts_dir, ignore_errors=True)
    parts_dir.mkdir()
    psize = part_size(size)
    argv = [mk8s_bin(), "bundle", "split", str(bundle), "--size", str(psize)]
    run([*argv, "--key", str(ds.key), "-o", str(parts_dir)])
    index = parts_dir / (bundle.name + ".parts")
    count = len(list(parts_dir.glob(bundle.name + ".[0-9][0-9][0-9]")))
    row.notes.append(f"{count} parts of at most {psize} bytes, signed index")

    def ours() -> None:
        s = run([mk8s_bin(), "bundle", "verify", str(index), "--key", str(ds.pub)])
        row.ours.append(s.seconds)
        row.ours_rss.append(s.max_rss)

    def base() -> None:
        s = run([mk8s_bin(), "bundle", "verify", str(bundle), "--key", str(ds.pub)])
        row.base.append(s.seconds)
        row.base_rss.append(s.max_rss)

    for r in range(rounds):
        _alternate(r, base, ours)
    shutil.rmtree(parts_dir, ignore_errors=True)
    return row
