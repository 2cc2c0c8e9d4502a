"""Fixtures for every test: the CLI run in-process, signing keys, a private containerd.
The fixtures of the tests on test hosts are in tests/hosts/conftest.py."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from mk8s.bundle.format import keys
from mk8s.cli import main
from tests.support.containerd import Containerd, containerd_for_tests

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


# ---- real containerd (tests/support/containerd.py) ----------------------------------
@pytest.fixture(scope="session")
def containerd() -> Iterator[Containerd]:
    """One private containerd for the whole session, judging image archives as RKE2
    imports them. Skips when not root; fails instead when MK8S_REQUIRE_HOSTS=1."""
    with containerd_for_tests() as c:
        yield c
