"""mk8s/deploy/facts.py: fact gathering keeps hostile values as data (run for real under sh)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from mk8s.deploy import facts
from mk8s.deploy.command import Command


def _run_sh(cmd: Command, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "-c", cmd.render()], cwd=cwd, capture_output=True, text=True, timeout=60
    )


HOSTILE_DIR = "s$(touch${IFS}canary)`touch${IFS}canary`$(touch${IFS}..${IFS}canary)"


def _canaries(root: Path) -> list[Path]:
    return [p for p in root.rglob("canary")]


def test_fact_gathering_never_runs_a_hostile_staging_dir(tmp_path: Path) -> None:
    """The original injection: a staging path with $(...) and backticks, holding a file
    (the re-run case), gathered by the real script under sh."""
    staging = tmp_path / "srv" / HOSTILE_DIR
    (staging / "files").mkdir(parents=True)
    (staging / "install.sh").write_text("#!/bin/sh\n")
    (staging / "rke2.tar.gz.part").write_bytes(b"x" * 10)
    r = _run_sh(facts.privileged(str(staging)), tmp_path)
    assert r.returncode == 0, r.stderr
    assert _canaries(tmp_path) == []
    parsed = facts.parse("uname_m=x86_64\nsudo=root\n", r.stdout)
    assert parsed.hashes.get(f"{staging}/install.sh")
    assert parsed.partial == {f"{staging}/rke2.tar.gz.part": 10}


def test_whole_gather_command_keeps_values_as_data(tmp_path: Path) -> None:
    staging = tmp_path / HOSTILE_DIR
    staging.mkdir()
    (staging / "a").write_text("a")
    r = _run_sh(facts.gather(str(staging)), tmp_path)
    assert r.returncode == 0, r.stderr
    assert _canaries(tmp_path) == []
    assert f"{staging}/a" in r.stdout
