"""Run every benchmark (docs/testing.md, "Benchmarks") and print one table.

    .venv/bin/python -m bench                     # 2 GiB, 3 rounds, every row
    .venv/bin/python -m bench --only scale        # 3 + 97 test hosts (docs/scale.md)
    .venv/bin/python -m bench --size 8MiB --rounds 1 --only create,verify,inspect
    .venv/bin/python bench/run.py --json out.json

Both sides of each ratio run in this invocation, alternating (who goes first flips
every round); the medians are compared. Our side is always the real CLI (or, for the
upload row, ``SSHTransport.put`` in its own process). Peak RSS is the benchmarked
process tree's (``wait4``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if __package__ in (None, ""):  # `python bench/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.measure import BenchError, human_bytes, parse_size
from bench.rows import Row, table

if TYPE_CHECKING:
    from bench.upload import Net

ROWS = (
    "create",
    "verify",
    "inspect",
    "verify-split",
    "upload",
    "deploy-scale",
    "deploy-rerun",
    "upgrade",
    "restore",
    "uplink",
    "delta-size",
    "delta-verify",
    "scale-first",
    "scale-rerun",
    "scale-add",
    "scale-rss",
    "scale-cpu",
)
ALIASES = {
    "deploy": ("deploy-scale", "deploy-rerun"),
    "bundle": ("create", "verify", "inspect", "verify-split"),
    "delta": ("delta-size", "delta-verify"),
    "scale": ("scale-first", "scale-rerun", "scale-add", "uplink", "scale-rss", "scale-cpu"),
}


def _only(values: list[str]) -> list[str]:
    if not values:
        return list(ROWS)
    out: list[str] = []
    for v in values:
        for name in (p.strip() for p in v.split(",") if p.strip()):
            names = ALIASES.get(name, (name,))
            for n in names:
                if n not in ROWS:
                    raise SystemExit(f"bench: unknown row {name!r} (one of {', '.join(ROWS)})")
                out.append(n)
    return [r for r in ROWS if r in out]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="bench", description=__doc__.split("\n")[0])
    ap.add_argument(
        "--size", default="2GiB", help="total release data for create/verify/inspect [2GiB]"
    )
    ap.add_argument(
        "--upload-size",
        default=None,
        help="file size for the upload row [1GiB; --size/2 if smaller]",
    )
    ap.add_argument("--rounds", type=int, default=3, help="rounds per row (median reported) [3]")
    ap.add_argument(
        "--only", action="append", default=[], metavar="NAME", help=f"rows: {', '.join(ROWS)}"
    )
    ap.add_argument("--json", dest="json_out", type=Path, help="also write the results here")
    ap.add_argument(
        "--workdir",
        type=Path,
        default=Path(os.environ.get("MK8S_BENCH_DIR", "/tmp/mk8s-bench")),
        help="generated data is kept here between runs [/tmp/mk8s-bench]",
    )
    ap.add_argument(
        "--deploy-image-size", default="4MiB", help="image tarball of the deploy bundle"
    )
    ap.add_argument("--agents", type=int, default=12, help="agents of the big deploy [12]")
    ap.add_argument(
        "--delta-size",
        default=None,
        help="image archive of the delta rows' releases [--size, at most 512MiB]",
    )
    ap.add_argument(
        "--scale-agents",
        type=int,
        default=97,
        help="agents of the scale rows and the uplink row (3 servers + N) [97]",
    )
    ap.add_argument(
        "--scale-base-agents",
        type=int,
        default=12,
        help="agents of the cluster the first deploy at scale is compared with [12]",
    )
    ap.add_argument("--host-prefix", default="mk8sb", help=argparse.SUPPRESS)
    ap.add_argument("--host-subnet", default="10.77.8.0/24", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    only = _only(a.only)
    total = parse_size(a.size)
    upload_size = (
        parse_size(a.upload_size) if a.upload_size else min(1 << 30, max(1 << 20, total // 2))
    )
    rounds = max(1, a.rounds)
    from bench.upload import Net

    net = Net(prefix=a.host_prefix, subnet=a.host_subnet)
    rows: dict[str, Row] = {}
    started = time.monotonic()
    print(
        f"bench: {human_bytes(total)} release, {rounds} round(s), rows {', '.join(only)};"
        f" work dir {a.workdir}",
        file=sys.stderr,
        flush=True,
    )

    def note(name: str) -> None:
        print(f"bench: {name} ... ({time.monotonic() - started:.0f}s)", file=sys.stderr, flush=True)

    try:
        rows.update(_dataset_rows(a, only, total, rounds, net, note))
        if {"delta-size", "delta-verify"} & set(only):
            from bench.delta import delta_rows

            note("delta")
            size = parse_size(a.delta_size) if a.delta_size else min(total, 512 << 20)
            rows["delta-size"], rows["delta-verify"] = delta_rows(a.workdir, size, rounds)
        if "upload" in only:
            from bench.upload import upload_row

            note("upload")
            rows["upload"] = upload_row(a.workdir / "upload", upload_size, rounds, net)
    except BenchError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 1
    ordered = [rows[n] for n in only if n in rows]
    print(table(ordered))
    for r in ordered:
        for n in r.notes:
            print(f"  {r.name}: {n}")
    print(f"({rounds} round(s), medians; {time.monotonic() - started:.0f}s)")
    if a.json_out:
        data = {
            "size": total,
            "upload_size": upload_size,
            "rounds": rounds,
            "cpus": os.cpu_count(),
            "rows": [r.as_json() for r in ordered],
        }
        a.json_out.write_text(json.dumps(data, indent=2) + "\n")
    return 0


def _dataset_rows(
    a: argparse.Namespace,
    only: list[str],
    total: int,
    rounds: int,
    net: Net,  # bench.upload.Net
    note: Callable[[str], None],
) -> dict[str, Row]:
    """The rows that run on the generated release (bench.data): bundle, deploy, scale
    (with uplink), upgrade, restore."""
    from bench.data import dataset

    rows: dict[str, Row] = {}
    bundle_rows = {"create", "verify", "inspect", "verify-split"}
    scale = {"uplink", "scale-first", "scale-rerun", "scale-add", "scale-rss", "scale-cpu"}
    needs_data = {*bundle_rows, *scale, "deploy-scale", "deploy-rerun", "upgrade", "restore"}
    needs_data &= set(only)
    if not needs_data:
        return rows
    # The deploy rows use only the small deploy bundle: no 2 GiB release to generate.
    data_size = total if bundle_rows & set(only) else min(total, 4 << 20)
    note("preparing data")
    with dataset(a.workdir, data_size, parse_size(a.deploy_image_size)) as ds:
        if bundle_rows & set(only):
            from bench.bundle import create_row, verify_inspect_rows

            note("create")
            create, bundle = create_row(ds, rounds if "create" in only else 1, jobs())
            if "create" in only:
                rows["create"] = create
            if {"verify", "inspect"} & set(only):
                note("verify / inspect")
                verify, inspect = verify_inspect_rows(ds, bundle, rounds)
                rows["verify"], rows["inspect"] = verify, inspect
            if "verify-split" in only:
                from bench.split import verify_split_row

                note("verify-split")
                rows["verify-split"] = verify_split_row(ds, bundle, rounds)
        if {"deploy-scale", "deploy-rerun"} & set(only):
            from bench.deploy import deploy_rows

            note("deploy")
            scale, rerun = deploy_rows(ds, rounds, net, agents_big=a.agents)
            rows["deploy-scale"], rows["deploy-rerun"] = scale, rerun
        if scale & set(only):
            from bench.scale import scale_rows

            note(f"scale (3 + {a.scale_agents}; one round)")
            wanted = scale & set(only)
            rows.update(scale_rows(ds, net, wanted, a.scale_agents, a.scale_base_agents))
        if "upgrade" in only:
            from bench.upgrade import upgrade_row

            note("upgrade")
            rows["upgrade"] = upgrade_row(ds, rounds, net, agents=a.agents)
        if "restore" in only:
            from bench.restore import restore_row

            note("restore")
            rows["restore"] = restore_row(ds, rounds, net)
    return rows


def jobs() -> int:
    from mk8s.bundle.create import default_jobs

    return default_jobs()


if __name__ == "__main__":
    raise SystemExit(main())
