"""The delta benchmark rows never rot: `python -m bench --only delta` at 4 MiB, one round.

Checks the table and the JSON carry both rows with numbers, and that the size row's
figures hang together (the delta is about half of a patch upgrade's full bundle, and
never below the bytes that really changed). Time budgets are not judged at this size.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

from tests.support.paths import ROOT

REPO = ROOT


def test_bench_smoke_delta_rows(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    argv = [sys.executable, "-m", "bench", "--size", "4MiB", "--rounds", "1", "--only", "delta"]
    argv += ["--json", str(out), "--workdir", str(tmp_path / "work")]
    p = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = {r["name"]: r for r in json.loads(out.read_text())["rows"]}
    assert sorted(rows) == ["delta-size", "delta-verify"]
    for r in rows.values():
        assert r["skipped"] is None, r
        for key in ("ours", "baseline", "ratio"):
            assert isinstance(r[key], float) and math.isfinite(r[key]) and r[key] > 0, r
        line = next(ln for ln in p.stdout.splitlines() if ln.startswith(r["name"] + " "))
        assert "PASS" in line or "FAIL" in line, line
    size = rows["delta-size"]
    assert size["ratio"] >= 1.0  # nothing carries less than what changed
    m = re.search(
        r"delta / full bundle = ([0-9.]+); lower bound / full bundle = ([0-9.]+)", p.stdout
    )
    assert m, p.stdout
    delta, bound = float(m.group(1)), float(m.group(2))
    assert 0.2 < bound <= delta < 0.8, (delta, bound)
    assert rows["delta-verify"]["peak_rss"] > 0
