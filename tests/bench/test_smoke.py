"""The benchmarks never rot: `python -m bench` at a few MiB, one round.

Checks that the table is printed and every row has numbers; budgets are not judged
at this size (start-up time dominates), that is what the full-size run is for.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.hosts import require_root_or_skip
from tests.support.paths import ROOT

REPO = ROOT
HEADER = ("what", "ours", "baseline", "ratio", "budget", "pass/fail", "peak RSS")


def _bench(tmp_path: Path, only: str, *extra: str) -> tuple[str, dict]:
    out = tmp_path / "bench.json"
    argv = [sys.executable, "-m", "bench", "--size", "4MiB", "--rounds", "1", "--only", only]
    argv += ["--json", str(out), "--workdir", str(tmp_path / "work"), *extra]
    p = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout, json.loads(out.read_text())


def _check_rows(stdout: str, data: dict, names: list[str]) -> None:
    head = stdout.splitlines()[0]
    positions = [head.find(h) for h in HEADER]
    assert -1 not in positions and positions == sorted(positions), head
    rows = {r["name"]: r for r in data["rows"]}
    assert sorted(rows) == sorted(names)
    for name in names:
        r = rows[name]
        assert r["skipped"] is None, r
        for key in ("ours", "baseline", "ratio"):
            assert isinstance(r[key], float) and math.isfinite(r[key]) and r[key] > 0, (name, r)
        assert isinstance(r["peak_rss"], int) and r["peak_rss"] > 0, r
        assert r["pass"] in (True, False)
        assert len(r["ours_samples"]) == len(r["baseline_samples"]) == 1
        line = next(ln for ln in stdout.splitlines() if ln.startswith(name + " "))
        assert "PASS" in line or "FAIL" in line, line


def test_bench_smoke_bundle_rows(tmp_path: Path) -> None:
    stdout, data = _bench(tmp_path, "create,verify,inspect")
    _check_rows(stdout, data, ["create", "verify", "inspect"])
    assert data["size"] == 4 << 20 and data["rounds"] == 1


def test_bench_smoke_upload_row(tmp_path: Path) -> None:
    require_root_or_skip()  # skips (with the reason) unless root with sshd & co.
    if not any((Path(d) / "sftp").exists() for d in ("/usr/bin", "/bin")):
        pytest.skip("the upload row compares with OpenSSH sftp, which is not installed")
    stdout, data = _bench(
        tmp_path,
        "upload",
        "--upload-size",
        "2MiB",
        # its own hosts network, apart from the test suite's and a full bench run's
        "--host-prefix",
        "mk8sq",
        "--host-subnet",
        "10.77.5.0/24",
    )
    _check_rows(stdout, data, ["upload"])
