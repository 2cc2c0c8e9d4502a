"""One artifact's workload fields, pinned: a chart's (name, version) and an image's
carried platforms survive JSON both ways under their exact keys, and check_workload
refuses each malformed value with its exact message (a lock built in code, or read
without the schema, has no other guard)."""

from __future__ import annotations

from typing import Any

import pytest

from mk8s.bundle.format.artifact import (
    Artifact,
    ArtifactKind,
    artifact_path,
    check_workload,
)

SHA = "c" * 64


def art(name: str, kind: ArtifactKind, **kw: Any) -> Artifact:
    return Artifact(name=name, kind=kind, path=artifact_path(name, kind), size=3, sha256=SHA, **kw)


CHART = art("app-1.2.3.tgz", ArtifactKind.CHART, chart=("app", "1.2.3"))
IMAGE = art("img.oci.tar", ArtifactKind.IMAGE, platforms=("linux/amd64", "linux/arm64/v8"))


def test_chart_and_platforms_are_written_under_their_keys() -> None:
    assert CHART.to_json()["chart"] == {"name": "app", "version": "1.2.3"}
    assert IMAGE.to_json()["platforms"] == ["linux/amd64", "linux/arm64/v8"]
    plain = art("x.tgz", ArtifactKind.RKE2).to_json()
    assert "chart" not in plain and "platforms" not in plain


@pytest.mark.parametrize("a", [CHART, IMAGE], ids=["chart", "image"])
def test_chart_and_platforms_read_back(a: Artifact) -> None:
    assert Artifact.from_json(a.to_json()) == a


def test_reading_takes_the_chart_and_platforms_keys_only() -> None:
    doc = CHART.to_json() | {"platforms": ["linux/s390x"]}
    got = Artifact.from_json(doc)
    assert got.chart == ("app", "1.2.3") and got.platforms == ("linux/s390x",)
    bare = {k: v for k, v in doc.items() if k not in ("chart", "platforms")}
    assert Artifact.from_json(bare).chart is None
    assert Artifact.from_json(bare).platforms == ()


@pytest.mark.parametrize("a", [CHART, IMAGE, art("x.tgz", ArtifactKind.RKE2)])
def test_well_formed_workloads_pass(a: Artifact) -> None:
    check_workload(a)


LONG = "n" * 150
REFUSED = {
    "chart on a file": (
        art("a.tgz", ArtifactKind.FILE, chart=("app", "1.0")),
        "artifact a.tgz: only a chart has chart name and version",
    ),
    "chart name": (
        art("a.tgz", ArtifactKind.CHART, chart=("-app", "1.0")),
        "artifact a.tgz: chart name '-app' is invalid",
    ),
    "chart name not text": (
        art("a.tgz", ArtifactKind.CHART, chart=(7, "1.0")),
        "artifact a.tgz: chart name '7' is invalid",
    ),
    "long chart name": (
        art("a.tgz", ArtifactKind.CHART, chart=(LONG, "1.0")),
        f"artifact a.tgz: chart name {LONG[:100]!r} is invalid",
    ),
    "chart version": (
        art("a.tgz", ArtifactKind.CHART, chart=("app", "1.0 beta")),
        "artifact a.tgz: chart version '1.0 beta' is invalid",
    ),
    "chart version not text": (
        art("a.tgz", ArtifactKind.CHART, chart=("app", 1.5)),
        "artifact a.tgz: chart version '1.5' is invalid",
    ),
    "long chart version": (
        art("a.tgz", ArtifactKind.CHART, chart=("app", LONG)),
        f"artifact a.tgz: chart version {LONG[:64]!r} is invalid",
    ),
    "platforms on a chart": (
        art("a.tgz", ArtifactKind.CHART, platforms=("linux/amd64",)),
        "artifact a.tgz: only an image lists the platforms it carries",
    ),
    "platform twice": (
        art("i.oci.tar", ArtifactKind.IMAGE, platforms=("linux/amd64", "linux/amd64")),
        "artifact i.oci.tar: platforms must be distinct os/arch[/variant]",
    ),
    "platform shape": (
        art("i.oci.tar", ArtifactKind.IMAGE, platforms=("linux/amd64", "Linux")),
        "artifact i.oci.tar: platforms must be distinct os/arch[/variant]",
    ),
    "platform not text": (
        art("i.oci.tar", ArtifactKind.IMAGE, platforms=("linux/amd64", 5)),
        "artifact i.oci.tar: platforms must be distinct os/arch[/variant]",
    ),
}


@pytest.mark.parametrize(("a", "message"), REFUSED.values(), ids=REFUSED.keys())
def test_malformed_workloads_are_refused_by_name(a: Artifact, message: str) -> None:
    with pytest.raises(ValueError) as e:
        check_workload(a)
    assert str(e.value) == message
