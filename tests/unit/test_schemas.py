"""Every shipped schema is a valid JSON Schema (Draft 2020-12), and mk8s loads each."""

from __future__ import annotations

import jsonschema
import pytest

from mk8s.schemas import load_schema, validator
from tests.support.paths import ROOT

SCHEMAS = sorted(p.name for p in (ROOT / "schemas").glob("*.json"))


def test_the_schemas_are_there() -> None:
    assert SCHEMAS == [
        "cluster.schema.json",
        "manifest.schema.json",
        "parts.schema.json",
        "snapshots.schema.json",
    ]


@pytest.mark.parametrize("name", SCHEMAS)
def test_schema_is_valid(name: str) -> None:
    schema = load_schema(name)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert validator(name).schema is schema
