"""Work follows what changed (docs/scale.md), read from the audit log of real runs.

One cluster of 3 servers + 1 agent on test hosts, ``images: {distribution: servers}``
(the mode with the most per-node checks: the agents' embedded-mirror port probes), and
a fifth host that is not in it yet. A converged re-run runs exactly one command on each
node and uploads nothing; adding the fifth host as an agent runs the join checks on it
alone, and the nodes that did not change still get their one check and nothing else.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.hosts import HostSet, hostset_for_tests
from tests.support.world import World, deploy, kubectl_nodes, write_cluster

pytestmark = pytest.mark.hosts

SERVERS = ["cp1", "cp2", "cp3"]
AGENTS = ["w1"]
NEW = "w2"


def _write(path: Path, hs: HostSet, agents: list[str]) -> None:
    write_cluster(path, hs, [(n, "server") for n in SERVERS] + [(n, "agent") for n in agents])
    doc = yaml.safe_load(path.read_text())
    doc["spec"]["images"] = {"distribution": "servers"}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def _audit_lines(d: Path) -> list[str]:
    p = d / ".mk8s" / "demo" / "audit.jsonl"
    return p.read_text().splitlines() if p.exists() else []


def _records_of_run(d: Path, before: int) -> list[dict[str, object]]:
    return [json.loads(line) for line in _audit_lines(d)[before:]]


def _commands(records: list[dict[str, object]]) -> Counter[str]:
    """Remote commands per node (an upload record carries ``bytes``, not ``command``)."""
    return Counter(str(r["node"]) for r in records if "command" in r)


def _show(records: list[dict[str, object]]) -> str:
    return "\n".join(
        f"{r.get('node')} {r.get('step')} {str(r.get('command'))[:90]}" for r in records
    )


@pytest.fixture(scope="module")
def converged(
    tmp_path_factory: pytest.TempPathFactory,
    world: World,
) -> Iterator[tuple[HostSet, Path]]:
    d = tmp_path_factory.mktemp("converged")
    names = [*SERVERS, *AGENTS, NEW]
    with hostset_for_tests(len(names), d / "hosts", names=names) as hs:
        _write(d / "cluster.yaml", hs, AGENTS)
        r = deploy(d, world.bundle, world.pub)
        assert r.returncode == 0, r.stdout + r.stderr
        yield hs, d


def test_converged_node_is_checked_once_and_nothing_else_runs(
    converged: tuple[HostSet, Path],
    world: World,
) -> None:
    hs, d = converged
    before = len(_audit_lines(d))
    r = deploy(d, world.bundle, world.pub)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "uploaded 0 B" in r.stdout, r.stdout
    records = _records_of_run(d, before)
    # Every node: one round trip (its facts, the first server's with the node list),
    # no upload, no port probe, no readiness poll, no kubeconfig fetched again.
    assert _commands(records) == dict.fromkeys([*SERVERS, *AGENTS], 1), _show(records)
    assert not [x for x in records if "bytes" in x], _show(records)
    assert {str(x["step"]) for x in records} == {"facts"}, _show(records)
    assert (d / "demo.kubeconfig").exists()
    assert kubectl_nodes(hs, "cp1") == dict.fromkeys([*SERVERS, *AGENTS], True)


def test_adding_one_agent_runs_join_checks_on_it_alone(
    converged: tuple[HostSet, Path],
    world: World,
) -> None:
    hs, d = converged
    _write(d / "cluster.yaml", hs, [*AGENTS, NEW])
    before = len(_audit_lines(d))
    r = deploy(d, world.bundle, world.pub)
    assert r.returncode == 0, r.stdout + r.stderr
    records = _records_of_run(d, before)
    by_step: dict[str, set[str]] = {}
    for x in records:
        by_step.setdefault(str(x["step"]), set()).add(str(x["node"]))
    # The embedded-mirror port probes, the uploads and the install: the new agent only.
    assert by_step.get("ports") == {NEW}, _show(records)
    assert by_step.get("stage") == {NEW} and by_step.get("install") == {NEW}, _show(records)
    assert {str(x["node"]) for x in records if "bytes" in x} == {NEW}, _show(records)
    counts = _commands(records)
    # The converged agent and the servers that are not asked for the node list: their
    # one check, nothing else.
    for name in [*AGENTS, "cp2", "cp3"]:
        assert counts[name] == 1, _show(records)
    assert kubectl_nodes(hs, "cp1") == dict.fromkeys([*SERVERS, *AGENTS, NEW], True)
