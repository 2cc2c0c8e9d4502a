"""Shared fixtures. Host fixtures live in tests/support/hosts.py."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from mk8s.bundle import keys
from mk8s.cli import main


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
