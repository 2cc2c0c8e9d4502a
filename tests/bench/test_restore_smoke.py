"""The restore benchmark row never rots: `python -m bench --only restore` at a few MiB,
one round, on its own test-host network (the budget is judged by the full run)."""

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


@pytest.mark.hosts
@pytest.mark.timeout(1600)
def test_bench_smoke_restore_row(tmp_path: Path) -> None:
    require_root_or_skip()
    out = tmp_path / "bench.json"
    argv = [sys.executable, "-m", "bench", "--size", "4MiB", "--rounds", "1", "--only", "restore"]
    argv += ["--json", str(out), "--workdir", str(tmp_path / "w")]
    argv += ["--host-prefix", "mk8sr", "--host-subnet", "10.77.6.0/24"]
    p = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=1500)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = {r["name"]: r for r in json.loads(out.read_text())["rows"]}
    assert list(rows) == ["restore"]
    row = rows["restore"]
    assert row["skipped"] is None, row
    for key in ("ours", "baseline", "ratio"):
        assert isinstance(row[key], float) and math.isfinite(row[key]) and row[key] > 0, row
    assert row["pass"] in (True, False) and row["budget"] == "ratio <= 1.0"
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith("restore "))
    assert "PASS" in line or "FAIL" in line, line
