"""The bounds on outside input: shown text, JSON and YAML (mk8s/untrusted.py)."""

from __future__ import annotations

import pytest
import yaml

from mk8s.cli import ERROR_LINE_CHARS, ERROR_LINES, bounded_message
from mk8s.errors import InputError, UpstreamError
from mk8s.untrusted import (
    MAX_DEPTH,
    UNRESOLVED,
    load_json,
    load_yaml,
    redact,
    resolve_tag,
    shown,
    yaml_nodes,
)


def err(problem: str) -> InputError:
    return InputError(problem, "fix it")


def test_shown_escapes_newlines_so_no_second_line_can_be_forged() -> None:
    text = shown("denied\nmk8s: bundle VERIFIED\r\x1b[2K")
    assert "\n" not in text and "\r" not in text and "\x1b" not in text
    assert text.startswith("denied\\nmk8s: bundle VERIFIED")


def test_shown_caps_length_and_counts_the_rest() -> None:
    text = shown("x" * 1000, limit=50)
    assert text == "x" * 50 + "... (950 more characters)"
    assert shown("short", limit=50) == "short"


@pytest.mark.parametrize(
    ("raw", "secret"),
    [
        ("GET https://bob:hunter2@reg.example/v2/", "hunter2"),
        ("Authorization: Basic Ym9iOmh1bnRlcjI=", "Ym9iOmh1bnRlcjI="),
        ("Authorization: Bearer eyJhbGciOi.abc.def", "eyJhbGciOi.abc.def"),
        ('{"password": "hunter2"}', "hunter2"),
        ("token=s3cr3tvalue&x=1", "s3cr3tvalue"),
    ],
)
def test_redact_masks_reflected_credentials(raw: str, secret: str) -> None:
    assert secret not in redact(raw)
    assert "***" in redact(raw)


def test_redact_masks_known_secrets_anywhere() -> None:
    assert redact("the text pa55word shows", ["pa55word"]) == "the text *** shows"


def test_load_json_refuses_deep_nesting_without_recursion_error() -> None:
    with pytest.raises(InputError, match="nested deeper than 64 levels"):
        load_json(b"[" * 100_000, what="doc", error=err, max_bytes=1 << 20)
    with pytest.raises(InputError, match="nested deeper"):
        load_json(
            b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), what="d", error=err, max_bytes=1 << 20
        )
    assert load_json(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH, what="d", error=err, max_bytes=1 << 20)


def test_load_json_byte_cap_is_checked_before_parsing() -> None:
    with pytest.raises(InputError, match="larger than 10 bytes"):
        load_json(b'{"a": "0123456789"}', what="doc", error=err, max_bytes=10)


def test_load_json_error_class_is_the_callers() -> None:
    def up(problem: str) -> UpstreamError:
        return UpstreamError(problem, "try another registry")

    with pytest.raises(UpstreamError, match="not valid JSON"):
        load_json(b"{nope", what="the registry's answer", error=up, max_bytes=100)
    with pytest.raises(UpstreamError, match="not UTF-8"):
        load_json(b"\xff\xfe", what="x", error=up, max_bytes=100)


def test_load_yaml_refuses_alias_bomb_before_expanding() -> None:
    lines = ["a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]"]
    prev = "a"
    for name in "bcdefg":
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
        prev = name
    with pytest.raises(InputError, match="more than 1000000 values"):
        load_yaml("\n".join(lines), what="chart", error=err, max_bytes=1 << 20)


def test_load_yaml_deep_nesting_and_multi_documents() -> None:
    with pytest.raises(InputError, match="nested deeper"):
        load_yaml("[" * 5000, what="chart", error=err, max_bytes=1 << 20)
    with pytest.raises(InputError, match="more than one YAML document"):
        load_yaml("a: 1\n---\nb: 2\n", what="chart", error=err, max_bytes=1 << 20)
    assert load_yaml("a: 1\n---\n---\nb: 2\n", what="m", error=err, max_bytes=99, multi=True) == [
        {"a": 1},
        {"b": 2},
    ]


def test_error_output_is_bounded() -> None:
    msg = bounded_message("\n".join(["y" * 5000] * 100))
    lines = msg.split("\n")
    assert len(lines) == ERROR_LINES + 1
    assert lines[-1] == f"... ({100 - ERROR_LINES} more lines)"
    assert all(len(ln) <= ERROR_LINE_CHARS + 20 for ln in lines)


# -- YAML nodes: tags resolved on demand -------------------------------------------------
def test_yaml_nodes_leaves_tags_to_resolve_on_demand() -> None:
    def err(problem: str) -> InputError:
        return InputError(problem)

    text = "a: 1\nb: null\nc: '1'\nd: !!str 2\ne: [x]\n"
    (node,) = yaml_nodes(text, what="m", error=err, max_bytes=100, tags=False)
    values = {k.value: v for k, v in node.value}
    assert values["a"].tag == UNRESOLVED
    assert [resolve_tag(values[k]) for k in "abcde"] == [
        "tag:yaml.org,2002:int",
        "tag:yaml.org,2002:null",
        "tag:yaml.org,2002:str",
        "tag:yaml.org,2002:str",
        "tag:yaml.org,2002:seq",
    ]
    (resolved,) = yaml_nodes(text, what="m", error=err, max_bytes=100)
    want = yaml.compose(text, Loader=yaml.SafeLoader)
    assert [v.tag for _, v in resolved.value] == [v.tag for _, v in want.value]
