"""mk8s/deploy/builders/facts.py: fact gathering keeps hostile values as data (run for real under sh)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from mk8s.deploy.builders import facts
from mk8s.deploy.command import Command
from tests.support.clusters import (
    CIS_SYSCTLS,
)


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


# -- the privileged facts, run on this machine -------------------------------------------
def test_the_facts_read_selinux_etcd_and_sysctls(tmp_path: Path) -> None:
    """The privileged facts, run on this machine: what it says about itself."""
    cmd = facts.privileged(str(tmp_path / "staging"))
    r = subprocess.run(["sh", "-c", cmd.render()], capture_output=True, text=True, timeout=60)
    f = facts.parse("uname_m=x86_64\nsudo=root\n", r.stdout)
    assert set(f.sysctls) == set(CIS_SYSCTLS)
    for key, value in f.sysctls.items():
        assert value == Path("/proc/sys/" + key.replace(".", "/")).read_text().strip()
    enforce = Path("/sys/fs/selinux/enforce")
    assert f.selinux_enforcing == (enforce.exists() and enforce.read_text().strip() == "1")
    etc = (
        Path("/etc/passwd").read_text().startswith("etcd:")
        or "\netcd:" in Path("/etc/passwd").read_text()
    )
    assert f.etcd_user == (etc and "\netcd:" in "\n" + Path("/etc/group").read_text())
    assert not f.datastore
    priv = "datastore=yes\nselinux_enforce=1\nrke2_selinux=yes\netcd_user=yes\netcd_group=yes\n"
    g = facts.parse("uname_m=x86_64\nsudo=root\n", priv + "sysctl kernel.panic 10\n")
    assert (g.datastore, g.selinux_enforcing, g.rke2_selinux, g.etcd_user) == (True,) * 4
    assert g.sysctls == {"kernel.panic": "10"}
