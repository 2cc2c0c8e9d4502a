"""The scale benchmark rows never rot: `python -m bench --only scale` at 3 servers + 2
agents (the full run is 3 + 97, see docs/scale.md). Checks that every row has numbers
and a verdict, and the facts that hold at any size: the converged re-run uploaded
nothing and the uplink row compares two measured deploys; the budgets are judged only
by the full-size run."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from tests.support.hosts import require_root_or_skip
from tests.support.paths import ROOT

REPO = ROOT
ROWS = ["uplink", "scale-first", "scale-rerun", "scale-add", "scale-rss", "scale-cpu"]


def test_bench_smoke_scale_rows(tmp_path: Path) -> None:
    require_root_or_skip()  # skips (with the reason) unless root with sshd & co.
    out = tmp_path / "bench.json"
    argv = [sys.executable, "-m", "bench", "--only", "scale", "--scale-agents", "2"]
    argv += ["--scale-base-agents", "1", "--json", str(out), "--workdir", str(tmp_path / "w")]
    # its own hosts network, apart from the test suite's and a full bench run's
    argv += ["--host-prefix", "mk8sc", "--host-subnet", "10.77.7.0/24"]
    p = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = {r["name"]: r for r in json.loads(out.read_text())["rows"]}
    assert sorted(rows) == sorted(ROWS)
    for name, r in rows.items():
        assert r["skipped"] is None, r
        for key in ("ours", "baseline", "ratio"):
            assert isinstance(r[key], float) and math.isfinite(r[key]) and r[key] > 0, (name, r)
        assert r["pass"] in (True, False), r
        line = next(ln for ln in p.stdout.splitlines() if ln.startswith(name + " "))
        assert "PASS" in line or "FAIL" in line, line
    assert rows["scale-rerun"]["checks"] == {"0 bytes uploaded": True}, rows["scale-rerun"]
    # servers mode sends the agents no image tarball: fewer bytes than all, both measured
    assert rows["uplink"]["ours"] < rows["uplink"]["baseline"], rows["uplink"]
    assert isinstance(rows["scale-rss"]["peak_rss"], int) and rows["scale-rss"]["peak_rss"] > 0
    notes = [n for r in rows.values() for n in r["notes"]]
    assert any(n.startswith("machine load") for n in notes), notes
