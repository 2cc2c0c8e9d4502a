"""The split-bundle verify benchmark row never rots: `python -m bench --only verify-split`
at a few MiB, one round (the budget is judged only by the full-size run)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from tests.support.paths import ROOT

REPO = ROOT


def test_bench_smoke_verify_split_row(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    argv = [sys.executable, "-m", "bench", "--size", "4MiB", "--rounds", "1"]
    argv += ["--only", "verify-split", "--json", str(out), "--workdir", str(tmp_path / "w")]
    p = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = {r["name"]: r for r in json.loads(out.read_text())["rows"]}
    assert list(rows) == ["verify-split"]
    row = rows["verify-split"]
    for key in ("ours", "baseline", "ratio"):
        assert isinstance(row[key], float) and math.isfinite(row[key]) and row[key] > 0, row
    assert row["pass"] in (True, False) and "parts of at most" in row["notes"][0]
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith("verify-split "))
    assert "PASS" in line or "FAIL" in line, line
