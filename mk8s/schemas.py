"""Locate and load the JSON Schemas in ``schemas/``: the contract of every file format."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import jsonschema

_HERE = Path(__file__).resolve().parent


def schema_path(name: str) -> Path:
    """Return the path of ``schemas/<name>``.

    Installed wheels carry the schemas inside the package (``mk8s/schemas/``); a source
    checkout has them at the project root. Raises FileNotFoundError if neither has it.
    """
    for base in (_HERE / "schemas", _HERE.parent / "schemas"):
        candidate = base / name
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"schema {name} is missing from this mk8s installation")


@cache
def load_schema(name: str) -> dict[str, Any]:
    """Load one schema; raises if the file is missing. That every shipped schema is a
    valid Draft 2020-12 schema is a test (tests/test_schemas.py), not a cost paid by
    every command (checking them took ~60 ms a run)."""
    return cast(dict[str, Any], json.loads(schema_path(name).read_text(encoding="utf-8")))


def validator(name: str) -> jsonschema.Draft202012Validator:
    """A validator for ``schemas/<name>`` whose ``pattern`` matches whole strings.

    JSON Schema's ``pattern`` is ECMA-262, where ``$`` is the end of the string; Python's
    ``re`` lets ``$`` match before a trailing newline, which would let ``"cp1\\n"`` past
    a name pattern. Here a final ``$`` means ``\\Z``, as the schema's authors meant.
    """
    cls = _strict_class()
    return cast("jsonschema.Draft202012Validator", cls(load_schema(name)))


@cache
def _strict_class() -> Any:
    import jsonschema

    def pattern(
        v: jsonschema.Draft202012Validator, patrn: str, instance: Any, schema: Any
    ) -> Iterator[jsonschema.ValidationError]:
        if v.is_type(instance, "string") and not _whole(patrn).search(instance):
            yield jsonschema.ValidationError(f"{instance!r} does not match {patrn!r}")

    extend: Any = jsonschema.validators.extend
    keywords = {**jsonschema.Draft202012Validator.VALIDATORS, "pattern": pattern}
    return extend(
        jsonschema.Draft202012Validator, {k: _shown_errors(v) for k, v in keywords.items()}
    )


def _shown_errors(check: Any) -> Any:
    """``check`` whose error messages quote the instance only as
    :func:`mk8s.untrusted.shown` allows: a URL's password, a token or a newline in a
    cluster file never reaches the terminal through a schema error."""
    from mk8s.untrusted import shown

    def checked(*args: Any) -> Iterator[jsonschema.ValidationError]:
        for error in check(*args):
            error.message = shown(error.message, limit=500)
            yield error

    return checked


@cache
def _whole(pattern: str) -> re.Pattern[str]:
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + "\\Z"
    return re.compile(pattern)


def json_path(path: Any) -> str:
    """Render a jsonschema error path as ``spec.nodes[1].role``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"
