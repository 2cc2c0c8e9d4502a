"""Fixtures of the tests on real sshd test hosts (tests/support/hosts.py): host sets, and
the deploy world (one signed bundle of the example upstream, tests/support/world.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mk8s.bundle.format import keys
from tests.support.hosts import HostSet, hostset_for_tests
from tests.support.upstream import ExampleUpstream
from tests.support.world import World, make_bundle


@pytest.fixture(scope="module")
def hosts3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostSet]:
    """Three test hosts (node1..node3) shared by one test module.  Skips when not
    root; fails instead when MK8S_REQUIRE_HOSTS=1."""
    with hostset_for_tests(3, tmp_path_factory.mktemp("hosts3")) as hs:
        yield hs


@pytest.fixture
def make_hosts(tmp_path: Path) -> Iterator[Callable[..., HostSet]]:
    """Factory: ``make_hosts(n, names=[...])`` -> a HostSet torn down after the test."""
    started: list[HostSet] = []

    def make(n: int, **kw: object) -> HostSet:
        cm = hostset_for_tests(n, tmp_path / f"hosts{len(started)}", **kw)
        hs = cm.__enter__()
        started.append(hs)
        return hs

    yield make
    for hs in started:
        hs.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One signed bundle of the example upstream per test module (tests/support/world.py)."""
    d = tmp_path_factory.mktemp("world")
    key = keys.generate_private_key()
    pub = keys.write_key_pair(key, d / "mk8s", None).public
    with ExampleUpstream(image_size=64 << 10) as up:
        yield World(d, make_bundle(up, d, key), pub, key, up)
