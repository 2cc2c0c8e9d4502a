"""Shared fixtures. Host fixtures live in tests/support/hosts.py."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mk8s.bundle import keys
from mk8s.cli import main
from tests.support.containerd import Containerd, containerd_for_tests
from tests.support.hosts import HostSet, hostset_for_tests

# A test suite started in the background of a non-interactive shell inherits SIGINT
# ignored (POSIX), and so would every mk8s process the tests start: their Ctrl-C tests
# would then wait for an interrupt that never comes. Python's own handler here means the
# children start with the default disposition, as from a terminal.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def run_cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., CliResult]:
    """Run ``mk8s ARGS`` in-process; returns exit code, stdout and stderr."""

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["mk8s", *args])
        with pytest.raises(SystemExit) as exc:
            main(list(args))
        out, err = capsys.readouterr()
        code = exc.value.code
        return CliResult(code if isinstance(code, int) else 1, out, err)

    return run


@pytest.fixture(scope="session")
def ed_key() -> keys.PrivateKey:
    return keys.generate_private_key("ed25519")


@pytest.fixture(scope="session")
def ec_key() -> keys.PrivateKey:
    return keys.generate_private_key("ecdsa-p256")


# ---- test hosts (tests/support/hosts.py) --------------------------------------------


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


# ---- real containerd (tests/support/containerd.py) ----------------------------------
@pytest.fixture(scope="session")
def containerd() -> Iterator[Containerd]:
    """One private containerd for the whole session, judging image archives as RKE2
    imports them. Skips when not root; fails instead when MK8S_REQUIRE_HOSTS=1."""
    with containerd_for_tests() as c:
        yield c
