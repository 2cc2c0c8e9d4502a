"""RKE2 version gates: one cited table (mk8s/rke2gates.py) answers every "which
release does X" question, and preflight refuses what a release cannot do."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mk8s import rke2gates as gates
from mk8s.bundle.upstream.versions import parse_tag
from mk8s.deploy.builders import plan
from tests.support.clusters import FRESH_BARE as FRESH
from tests.support.clusters import images_cluster, images_manifest
from tests.support.paths import ROOT


@pytest.mark.parametrize(
    "tag,ok",
    [
        ("v1.28.15+rke2r1", False),
        ("v1.29.12+rke2r1", False),
        ("v1.29.13+rke2r1", True),
        ("v1.30.8+rke2r1", False),
        ("v1.30.9-rc1+rke2r1", True),
        ("v1.31.4+rke2r1", False),
        ("v1.31.5+rke2r1", True),
        ("v1.32.0+rke2r1", True),
        ("v1.26.15+rke2r1", False),
    ],
)
def test_images_are_imported_while_running_from_the_january_2025_releases(
    tag: str, ok: bool
) -> None:
    assert gates.imports_while_running(tag) is ok
    version = parse_tag(tag)
    assert version is not None and gates.imports_while_running(version) is ok


@pytest.mark.parametrize(
    "tag,ok",
    [
        ("v1.26.15+rke2r1", False),
        ("v1.27.14+rke2r1", False),
        ("v1.27.15+rke2r1", True),
        ("v1.28.10+rke2r1", False),
        ("v1.28.11+rke2r1", True),
        ("v1.29.5+rke2r1", False),
        ("v1.30.2+rke2r1", True),
        ("v1.31.0+rke2r1", True),
    ],
)
def test_a_partial_index_imports_from_the_june_2024_releases(tag: str, ok: bool) -> None:
    assert gates.imports_partial_index(tag) is ok


@pytest.mark.parametrize(
    "tag,problem",
    [
        ("v1.28.5+rke2r1", "does not have"),
        ("v1.28.6+rke2r1", None),
        ("v1.31.12+rke2r1", None),
        ("v1.31.13+rke2r1", "rancher/rke2#9197"),
        ("v1.31.14+rke2r1", "rancher/rke2#9197"),
        ("v1.32.9+rke2r1", None),
    ],
)
def test_servers_mode_is_refused_where_agents_cannot_use_the_mirror(
    tmp_path: Path, tag: str, problem: str | None
) -> None:
    c = images_cluster(tmp_path, "{distribution: servers}")
    problems = plan.preflight(c, images_manifest(tag), {"cp1": FRESH, "w1": FRESH})
    if problem is None:
        assert problems == []
    else:
        (line,) = problems
        assert problem in line and tag in line and "distribution: all" in line


def test_every_gate_is_cited_and_well_formed() -> None:
    seen = set()
    for g in gates.GATES:
        assert re.search(r"(rancher|k3s-io)/[a-z0-9-]+", g.source), g
        assert all(re.fullmatch(r"v1\.\d+\.\d+", r) for r in g.releases), g
        if g.kind == gates.Kind.SINCE:
            minors = [r.rsplit(".", 1)[0] for r in g.releases]
            assert len(set(minors)) == len(minors), g  # one first patch per minor
        seen.add((g.feature, g.kind))
    assert len(seen) == len(gates.GATES)


def test_no_other_module_holds_a_version_gate() -> None:
    """The table is the only place: no release literal like v1.29.13 elsewhere in mk8s
    (but in the version-spec parser, whose docs show examples)."""
    pattern = re.compile(r"v?1\.(2[6-9]|3[0-9])\.\d+")
    found = []
    for path in (ROOT / "mk8s").rglob("*.py"):
        if path.name in ("rke2gates.py", "versions.py", "releases.py"):
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line) and "rke2r" not in line:
                found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert found == []


def test_the_stand_in_enforces_the_same_gates() -> None:
    """The stand-in (tests/support/standin/gates.py) transcribes the same upstream facts
    on its own; the two tables must agree row for row."""
    from tests.support.standin import gates as standin

    names = {
        gates.Feature.EMBEDDED_MIRROR: "embedded-mirror",
        gates.Feature.EMBEDDED_MIRROR_AGENTS: "embedded-mirror-agents",
        gates.Feature.IMPORT_WHILE_RUNNING: "import-while-running",
        gates.Feature.IMPORT_PARTIAL_INDEX: "import-partial-index",
        gates.Feature.UNITS_REFUSE_OTHER_ROLE: "units-exec-condition",
        gates.Feature.NM_CLOUD_SETUP_ALLOWED: "nm-cloud-setup-allowed",
    }
    rows = 0
    for g in gates.GATES:
        table = standin.SINCE if g.kind == gates.Kind.SINCE else standin.BROKEN
        want = tuple(tuple(int(x) for x in r[1:].split(".")) for r in g.releases)
        assert table[names[g.feature]] == want, g
        rows += 1
    assert rows == len(standin.SINCE) + len(standin.BROKEN)
    tags = ("v1.28.10+rke2r1", "v1.28.11+rke2r1", "v1.31.13+rke2r1", "v1.33.0+rke2r1")
    for tag in (*tags, "v1.32.12+rke2r1", "v1.33.9+rke2r1", "v1.35.0+rke2r1", "v1.36.1+rke2r1"):
        for feature, name in names.items():
            assert standin.has(name, tag) == gates.has(feature, tag), (feature, tag)
