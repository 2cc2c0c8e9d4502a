"""Tag parsing, spec parsing and ordering: pure functions, no server."""

from __future__ import annotations

import pytest

from mk8s.bundle.upstream.versions import Version, parse_spec, parse_tag
from mk8s.errors import InputError


def test_parse_tag() -> None:
    assert parse_tag("v1.28.15+rke2r1") == Version(1, 28, 15, None, 1)
    assert parse_tag("v1.28.15-rc4+rke2r2") == Version(1, 28, 15, 4, 2)
    assert parse_tag("1.28.3+rke2r2") == Version(1, 28, 3, None, 2)
    assert parse_tag("v1.28.15+rke2r1").tag == "v1.28.15+rke2r1"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "tag",
    ["latest", "v1.28.15", "v1.28.15+k3s1", "v1.26.0-alpha1+rke2r1", "v1.28+rke2r1", "v01.2.3+rke2r1",
     "v1.28.15+rke2r0", "", "v1.28.15+rke2r1 extra"],
)  # fmt: skip
def test_unparseable_tags_are_none(tag: str) -> None:
    assert parse_tag(tag) is None


def test_order_is_numeric_and_respin_aware() -> None:
    tags = [
        "v1.28.9+rke2r1",
        "v1.28.10+rke2r1",
        "v1.28.10+rke2r2",
        "v1.28.10-rc1+rke2r1",
        "v1.28.10-rc2+rke2r1",
        "v1.29.0-rc1+rke2r1",
        "v1.28.10+rke2r10",
    ]
    versions = [parse_tag(t) for t in tags]
    assert all(v is not None for v in versions)
    ordered = sorted(v for v in versions if v is not None)
    assert [v.tag for v in ordered] == [
        "v1.28.9+rke2r1",
        "v1.28.10-rc1+rke2r1",
        "v1.28.10-rc2+rke2r1",
        "v1.28.10+rke2r1",
        "v1.28.10+rke2r2",
        "v1.28.10+rke2r10",
        "v1.29.0-rc1+rke2r1",
    ]


@pytest.mark.parametrize(
    ("text", "fields"),
    [
        ("latest", (None, None, None, None, None)),
        ("LATEST", (None, None, None, None, None)),
        ("v1.28", (1, 28, None, None, None)),
        ("1.28", (1, 28, None, None, None)),
        ("v1.28.x", (1, 28, None, None, None)),
        ("v1.28.15", (1, 28, 15, None, None)),
        ("1.28.15-rc2", (1, 28, 15, 2, None)),
        ("v1.28.15+rke2r1", (1, 28, 15, None, 1)),
        ("v1.28.15-rc4+rke2r1", (1, 28, 15, 4, 1)),
    ],
)
def test_parse_spec(text: str, fields: tuple[int | None, ...]) -> None:
    s = parse_spec(text)
    assert (s.major, s.minor, s.patch, s.rc, s.build) == fields


@pytest.mark.parametrize(
    "text", ["", "v1", "1.28.15.1", "v1.28.y", "newest", "v1.28.15+rke2", "~1.28"]
)
def test_bad_spec_is_input_error(text: str) -> None:
    with pytest.raises(InputError) as e:
        parse_spec(text)
    assert e.value.exit_code == 2
    assert "v1.28.x" in str(e.value)


def test_matches() -> None:
    final = Version(1, 28, 15, None, 1)
    rc = Version(1, 28, 15, 4, 1)
    assert parse_spec("v1.28.15+rke2r1").matches(final)
    assert not parse_spec("v1.28.15+rke2r1").matches(rc)
    assert parse_spec("v1.28.15-rc4+rke2r1").matches(rc)
    assert not parse_spec("v1.28.15-rc4+rke2r1").matches(final)
    assert parse_spec("v1.28.15").matches(final)
    assert parse_spec("v1.28.15-rc4").matches(rc)
    assert not parse_spec("v1.28.15-rc3").matches(rc)
    assert parse_spec("v1.28.x").matches(rc)
    assert not parse_spec("v1.29").matches(final)
    assert not parse_spec("v1.28.1").matches(final)
    assert parse_spec("latest").matches(rc)
