"""create / verify / inspect rows (docs/testing.md, Benchmarks), both sides alternating
per round."""

from __future__ import annotations

import shlex
import shutil
from collections.abc import Callable
from pathlib import Path

from bench.data import Dataset, create_args, mk8s_bin
from bench.measure import Sample, run
from bench.rows import Row

MiB = 1 << 20


def _alternate(rnd: int, a: Callable[[], None], b: Callable[[], None]) -> None:
    """Run both sides; who goes first alternates per round."""
    for step in (a, b) if rnd % 2 == 0 else (b, a):
        step()


def baseline_create_script(ds: Dataset, dl: Path, out: Path, jobs: int) -> str:
    """parallel curl + sha256sum -c + tar | zstd -T0 -3, for the same files."""
    arts = ds.remote_artifacts()
    curl = ["curl", "-sSfL", "--parallel", "--parallel-max", str(jobs)]
    for a in arts:
        curl += ["-o", a["name"], a["url"]]
    sums = [a["name"] for a in arts if a.get("kind") == "checksums"]
    names = [a["name"] for a in arts]
    check = [f"sha256sum -c --quiet --ignore-missing {shlex.quote(s)}" for s in sums]
    # install.sh has no upstream checksum: check it against the pinned hash, as a
    # careful script would.
    for a in arts:
        if a.get("kind") == "install-script":
            check.append(f"echo {a['sha256']}'  '{shlex.quote(a['name'])} | sha256sum -c --quiet")
    tar = (
        f"tar -cf - -C {shlex.quote(str(dl))} {' '.join(shlex.quote(n) for n in names)}"
        f" -C {shlex.quote(str(ds.text.parent))} {shlex.quote(ds.text.name)}"
        f" | zstd -T0 -3 -q -f -o {shlex.quote(str(out))}"
    )
    return "\n".join(
        [
            "set -euo pipefail",
            f"mkdir -p {shlex.quote(str(dl))}",
            f"cd {shlex.quote(str(dl))}",
            shlex.join(curl),
            *check,
            tar,
        ]
    )


def create_row(ds: Dataset, rounds: int, jobs: int) -> tuple[Row, Path]:
    """Returns the row and the last bundle ours wrote (for verify/inspect)."""
    row = Row(
        "create",
        f"bundle create, {ds.total / (1 << 30):.2f} GiB from loopback upstream"
        " vs curl --parallel + sha256sum -c + tar | zstd -T0 -3",
        "s",
        "ratio <= 1.0",
        lambda r: r <= 1.0,
    )
    work = ds.work / "create"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    bundle = ds.work / "bench-bundle.tar.zst"

    def ours() -> None:
        cache = work / "cache"
        out_dir = work / "ours"
        shutil.rmtree(cache, ignore_errors=True)  # a cached create would be unfair
        shutil.rmtree(out_dir, ignore_errors=True)
        out_dir.mkdir()
        out = out_dir / "bundle.tar.zst"
        argv = [mk8s_bin(), "bundle", "create", *create_args(), "--file", str(ds.text)]
        argv += ["--key", str(ds.key), "--cache", str(cache), "-o", str(out)]
        s = run(argv, env=ds.env, cwd=out_dir)
        row.ours.append(s.seconds)
        row.ours_rss.append(s.max_rss)
        out.replace(bundle)
        shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(out_dir, ignore_errors=True)

    def base() -> None:
        dl = work / "base"
        out = work / "base.tar.zst"
        shutil.rmtree(dl, ignore_errors=True)
        out.unlink(missing_ok=True)
        script = baseline_create_script(ds, dl, out, jobs)
        s = run(["bash", "-c", script])
        row.base.append(s.seconds)
        row.base_rss.append(s.max_rss)
        shutil.rmtree(dl, ignore_errors=True)
        out.unlink(missing_ok=True)

    for r in range(rounds):
        _alternate(r, base, ours)
    row.notes.append(f"baseline curl --parallel-max {jobs} (= ours' default --jobs)")
    return row, bundle


def verify_inspect_rows(ds: Dataset, bundle: Path, rounds: int) -> tuple[Row, Row]:
    size = bundle.stat().st_size
    verify = Row(
        "verify",
        f"bundle verify, {size / (1 << 30):.2f} GiB bundle vs zstd -dc | sha256sum",
        "s",
        "ratio <= 1.1; RSS <= 100 MiB",
        lambda r: r <= 1.1,
        rss_budget=100 * MiB,
    )
    inspect = Row(
        "inspect",
        "bundle inspect vs bundle verify (same bundle)",
        "s",
        "ratio <= 0.02",
        lambda r: r <= 0.02,
    )

    def ours() -> None:
        s = run([mk8s_bin(), "bundle", "verify", str(bundle), "--key", str(ds.pub)])
        verify.ours.append(s.seconds)
        verify.ours_rss.append(s.max_rss)
        inspect.base.append(s.seconds)
        inspect.base_rss.append(s.max_rss)

    def base() -> None:
        s: Sample = run(
            ["bash", "-c", 'set -o pipefail; zstd -dc -- "$1" | sha256sum', "_", str(bundle)]
        )
        verify.base.append(s.seconds)
        verify.base_rss.append(s.max_rss)

    def look() -> None:
        s = run([mk8s_bin(), "bundle", "inspect", str(bundle)])
        inspect.ours.append(s.seconds)
        inspect.ours_rss.append(s.max_rss)

    for r in range(rounds):
        _alternate(r, base, ours)
        look()
    return verify, inspect
