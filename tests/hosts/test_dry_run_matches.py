"""Dry run and real run are one plan: every remote command a real deploy sends (the
audit log) appears in the dry run of the same situation (fresh nodes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.hosts import hostset_for_tests
from tests.support.world import World, deploy, plan_commands, write_cluster

pytestmark = pytest.mark.hosts


def test_every_command_of_a_real_deploy_is_in_the_dry_run(
    tmp_path: Path,
    world: World,
) -> None:
    names = ["cp1", "cp2", "w1"]
    roles = {"cp1": "server", "cp2": "server", "w1": "agent"}
    with hostset_for_tests(3, tmp_path / "hosts", names=names) as hs:
        write_cluster(tmp_path / "cluster.yaml", hs, [(n, roles[n]) for n in names])
        dry = deploy(tmp_path, world.bundle, world.pub, "--dry-run")
        assert dry.returncode == 0, dry.stderr
        real = deploy(tmp_path, world.bundle, world.pub)
        assert real.returncode == 0, real.stdout + real.stderr
    planned = plan_commands(dry.stdout)
    assert set(planned) == set(names)
    every_planned = set().union(*planned.values())
    audit = [
        json.loads(line)
        for line in (tmp_path / ".mk8s" / "demo" / "audit.jsonl").read_text().splitlines()
    ]
    sent = [(r["node"], r["command"]) for r in audit if "command" in r]
    assert len(sent) > 20
    missing = [(n, c[:120]) for n, c in sent if c not in every_planned]
    assert not missing, missing
    # Each node's own work (not the shared node-list polls) is in its own section.
    polls = {c for c in every_planned if " get nodes -o json" in c}
    own_missing = [(n, c[:80]) for n, c in sent if c not in polls and c not in planned[n]]
    assert not own_missing, own_missing
    # Each node's staging directory is created once, before its uploads.
    for n in names:
        assert len([c for node, c in sent if node == n and "chown" in c]) == 1, n
    # And the plan is not a superset by accident: the real run used most of it.
    used = {c for _, c in sent}
    # (not counting the journal read that names why a node did not come up)
    normal = {c for c in every_planned if "journalctl -u rke2-" not in c}
    assert len(used & normal) >= len(normal) - 3 * len(names)
