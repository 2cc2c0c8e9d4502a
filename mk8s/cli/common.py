"""Pieces shared by the click commands: passphrases, option groups, JSON output."""

from __future__ import annotations

import functools
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
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


def key_option(required: bool = True) -> Callable[[F], F]:
    """``--key``, repeatable: the public keys a bundle's signature is checked against."""
    return click.option(
        "--key",
        "key_paths",
        multiple=True,
        required=required,
        type=click.Path(path_type=Path, dir_okay=False),
        help="A trusted public key (PEM); repeat to trust several.",
    )


ALLOW_UNSIGNED = click.option(
    "--allow-unsigned",
    is_flag=True,
    help="Accept a bundle made with --unsigned (its origin is then NOT proven).",
)

JOBS = click.option(
    "--jobs",
    type=click.IntRange(1, 256),
    default=None,
    help="Nodes worked on at once (default: options.concurrency).",
)


class Seconds(click.FloatRange):
    """A number of seconds from 1 to a week: click's FloatRange lets NaN through (it
    compares False with both ends), and NaN or infinity is no time to wait."""

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        return rv


MAX_WAIT = 7 * 24 * 3600.0

WAIT = click.option(
    "--wait",
    "ready_timeout",
    type=Seconds(1, MAX_WAIT),
    default=900.0,
    show_default=True,
    help="Seconds to wait for each node to be Ready.",
)
