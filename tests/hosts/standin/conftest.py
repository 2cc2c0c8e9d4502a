"""The stand-in upgrade tests' fixtures (test_upgrade.py, test_rollback.py): the example
upstream, each tag's release files, and three test hosts (cp1, cp2 servers, w1 agent)
reset before each test. A module here that defines a fixture of the same name uses its
own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.hosts import Host, HostSet, hostset_for_tests
from tests.support.standin_nodes import ARCH, IMAGES, RESET
from tests.support.standin_upgrade import TAGS
from tests.support.upstream import ExampleUpstream


# ---- the example upstream, and the releases it serves ----------------------------------
@pytest.fixture(scope="module")
def up() -> Iterator[ExampleUpstream]:
    with ExampleUpstream() as u:
        yield u


# ---- on test hosts -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def releases(up: ExampleUpstream, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Per tag, the files install.sh reads (from the example upstream), and install.sh."""
    out = {}
    for tag in TAGS:
        d = tmp_path_factory.mktemp("release")
        for name in (f"rke2.linux-{ARCH}.tar.gz", f"sha256sum-{ARCH}.txt", IMAGES, "install.sh"):
            (d / name).write_bytes(up.asset_bytes(tag, name))
        out[tag] = d
    return out


@pytest.fixture(scope="module")
def hs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostSet]:
    with hostset_for_tests(
        3, tmp_path_factory.mktemp("standin-upgrade"), names=["cp1", "cp2", "w1"]
    ) as hs:
        yield hs


@pytest.fixture
def nodes(hs: HostSet) -> Iterator[dict[str, Host]]:
    for h in hs.hosts:
        if not h.running:
            h.start()
        h.run(RESET, check=True)
    yield {h.name: h for h in hs.hosts}
