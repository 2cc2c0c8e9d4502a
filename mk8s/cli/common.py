"""Pieces shared by the click commands: passphrases, option groups, JSON output."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any, TypeVar

import click

from mk8s.errors import KeyFileError

PASSPHRASE_ENV = "MK8S_KEY_PASSPHRASE"  # noqa: S105  (a variable name)
F = TypeVar("F", bound=Callable[..., Any])


def stdin_is_terminal() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


def passphrase_for_new_key() -> bytes:
    """The passphrase for a new key: from the environment, else asked twice on a terminal."""
    env = os.environ.get(PASSPHRASE_ENV)
    if env:
        return env.encode()
    if not stdin_is_terminal():
        raise KeyFileError(
            "no passphrase for the new key",
            f"set {PASSPHRASE_ENV}, run on a terminal, or pass --no-passphrase",
        )
    value: str = click.prompt(
        "Passphrase for the new key", hide_input=True, confirmation_prompt=True, err=True
    )
    if not value:
        raise KeyFileError("an empty passphrase was given", "use --no-passphrase on purpose")
    return value.encode()


def passphrase_reader() -> Callable[[], bytes | None]:
    """A callable that finds the passphrase of an existing key when one is needed."""

    def read() -> bytes | None:
        env = os.environ.get(PASSPHRASE_ENV)
        if env:
            return env.encode()
        if not stdin_is_terminal():
            return None
        value: str = click.prompt("Passphrase for the signing key", hide_input=True, err=True)
        return value.encode()

    return read


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def gather_options(
    f: F, cls: Callable[..., object], options: Sequence[Callable[[Any], Any]], keyword: str
) -> F:
    """``f`` with ``options`` added; it receives what they said as one ``cls`` (a
    dataclass whose fields are the options' names) under ``keyword``."""
    names = [fl.name for fl in fields(cls)]  # type: ignore[arg-type]

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        given = cls(**{n: kwargs.pop(n) for n in names})
        return f(*args, **{keyword: given}, **kwargs)

    out: Any = wrapper
    for opt in reversed(options):
        out = opt(out)
    return out  # type: ignore[no-any-return]
