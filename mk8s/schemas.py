"""Locate and load the JSON Schemas in ``schemas/``: the contract of every file format."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cache
from itertools import islice
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
    valid Draft 2020-12 schema is a test (tests/unit/test_schemas.py), not a cost paid by
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


#: Schema errors one check collects: a hostile document can hold millions, and the
#: first by path is the one shown.
MAX_ERRORS = 1000
_BOUNDS = {
    "maxItems": ("items", "at most", list),
    "minItems": ("items", "at least", list),
    "maxLength": ("characters", "at most", str),
    "minLength": ("characters", "at least", str),
    "maxProperties": ("fields", "at most", dict),
    "minProperties": ("fields", "at least", dict),
}


def errors(
    validator: jsonschema.Draft202012Validator, instance: Any
) -> tuple[list[jsonschema.ValidationError], bool]:
    """The first :data:`MAX_ERRORS` errors of ``instance``, sorted by path, and whether
    there were more."""
    found = list(islice(validator.iter_errors(instance), MAX_ERRORS + 1))
    kept = sorted(found[:MAX_ERRORS], key=lambda e: [_order(p) for p in e.absolute_path])
    return kept, len(found) > MAX_ERRORS


def _order(part: str | int) -> tuple[int, int, str]:
    # list indexes in number order; names after them; never an int compared with a str
    return (0, part, "") if isinstance(part, int) else (1, 0, str(part))


def first_problem(name: str, instance: Any) -> str | None:
    """``PATH: problem (and N more)`` for the first error by path of ``instance``
    against ``schemas/<name>``, or None when it is valid."""
    found, more = errors(validator(name), instance)
    if not found:
        return None
    extra = len(found) - 1
    tail = f" (and {extra}{'+' if more else ''} more)" if extra or more else ""
    return f"{json_path(found[0].absolute_path)}: {problem(found[0])}{tail}"


def problem(err: jsonschema.ValidationError) -> str:
    """One schema error fit to show on one line: for a size bound, the sizes (the
    message would quote a 10,000-item list whole); otherwise the message through
    :func:`mk8s.untrusted.shown`, so a URL's password is masked, a newline is escaped
    and the length is capped."""
    from mk8s.untrusted import shown

    bound = _BOUNDS.get(str(err.validator))
    if bound is not None and isinstance(err.instance, bound[2]):
        unit, how, _ = bound
        return f"has {len(err.instance)} {unit}; {how} {err.validator_value} are allowed"
    return shown(err.message, limit=300)


def json_path(path: Any) -> str:
    """Render a jsonschema error path as ``spec.nodes[1].role`` (a key from the file
    made fit to show: escaped, capped)."""
    from mk8s.untrusted import shown

    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{shown(part, limit=80)}" if out else shown(part, limit=80)
    return out or "(top level)"
