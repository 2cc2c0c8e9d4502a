"""Locate and load the JSON Schemas in ``schemas/``: the contract of every file format."""

from __future__ import annotations

import json
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
    """Load and check one schema; raises if the file is missing or not a valid schema."""
    import jsonschema  # ~50 ms: only where a file is validated

    schema = cast(dict[str, Any], json.loads(schema_path(name).read_text(encoding="utf-8")))
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


def validator(name: str) -> jsonschema.Draft202012Validator:
    """A validator for ``schemas/<name>``."""
    import jsonschema

    return jsonschema.Draft202012Validator(load_schema(name))


def json_path(path: Any) -> str:
    """Render a jsonschema error path as ``spec.nodes[1].role``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"
