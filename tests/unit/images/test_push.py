"""Pushing OCI layout and docker archives into a real registry, checked through the
registry's own API with raw requests."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from mk8s.errors import ChecksumMismatch, ImageArchiveError
from mk8s.images.auth import Credentials
from mk8s.images.client import RegistryClient, RegistryClientSettings
from mk8s.images.inspect import list_images
from mk8s.images.pull import pull_image
from mk8s.images.push import push_archive
from tests.support.oci import (
    BuiltIndex,
    build_index,
    digest_of,
    docker_archive,
    push_raw,
    put_blob,
    saved_image,
    tar_of,
)
from tests.support.registry import TestRegistry, registry_for_tests

ACCEPT = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json"


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestRegistry]:
    with registry_for_tests(tmp_path_factory.mktemp("source")) as reg:
        yield reg


@pytest.fixture
def target(tmp_path: Path) -> Iterator[TestRegistry]:
    """A fresh, empty registry per test: the one inside the air gap."""
    with registry_for_tests(tmp_path / "target", username="airgap") as reg:
        yield reg


def client_for(reg: TestRegistry, **kw: object) -> RegistryClient:
    settings = RegistryClientSettings(
        ca_file=reg.ca_file, use_docker_config=False, backoff=0.05, **kw
    )  # type: ignore[arg-type]
    return RegistryClient(reg.host, settings, credentials=Credentials(reg.username, reg.password))


def raw_manifest(reg: TestRegistry, repo: str, ref: str) -> requests.Response:
    r = reg.session().get(
        f"{reg.url}/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT}, timeout=30
    )
    assert r.status_code == 200, (repo, ref, r.status_code, r.text)
    assert r.headers["Docker-Content-Digest"] == digest_of(r.content)
    return r


def assert_blob(reg: TestRegistry, repo: str, digest: str) -> None:
    r = reg.session().get(f"{reg.url}/v2/{repo}/blobs/{digest}", timeout=30)
    assert r.status_code == 200, (repo, digest, r.status_code)
    assert digest_of(r.content) == digest


def assert_image_complete(reg: TestRegistry, repo: str, tag: str, digest: str) -> None:
    """The tag resolves to ``digest`` and every manifest and blob below it is there."""
    r = raw_manifest(reg, repo, tag)
    assert digest_of(r.content) == digest
    doc = json.loads(r.content)
    for m in doc.get("manifests", []):
        kid = json.loads(raw_manifest(reg, repo, m["digest"]).content)
        for d in [kid["config"], *kid["layers"]]:
            assert_blob(reg, repo, d["digest"])
    if "layers" in doc:
        for d in [doc["config"], *doc["layers"]]:
            assert_blob(reg, repo, d["digest"])


@pytest.fixture(scope="module")
def multi(source: TestRegistry) -> BuiltIndex:
    built = build_index(seed="push", layer_size=40_000)
    push_raw(source.session(), source.url, "team/app", "2.0", built)
    return built


@pytest.fixture(scope="module")
def oci_archive(
    source: TestRegistry, multi: BuiltIndex, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    d = tmp_path_factory.mktemp("oci")
    with client_for(source) as c:
        pulled = pull_image(
            f"{source.host}/team/app:2.0",
            d / "app.tar",
            cache_dir=d / "cache",
            client=c,
            platforms=None,
        )
    return pulled.archive


def test_push_oci_archive_then_again_skips_everything(
    source: TestRegistry, target: TestRegistry, multi: BuiltIndex, oci_archive: Path
) -> None:
    with client_for(target) as c:
        report = push_archive(oci_archive, c, kind="oci")
        (pushed,) = report.images
        assert str(pushed.target) == f"{target.host}/team/app:2.0@{multi.digest}"
        assert pushed.source == f"{source.host}/team/app:2.0"
        n_blobs = sum(len(img.blobs) for img in multi.images.values())
        assert report.blobs_uploaded == n_blobs and report.blobs_skipped == 0
        assert report.manifests_pushed == 3
    assert_image_complete(target, "team/app", "2.0", multi.digest)

    posts_before = target.request_count("POST")
    with client_for(target) as c:
        again = push_archive(oci_archive, c, kind="oci")
        assert again.blobs_uploaded == 0 and again.blobs_mounted == 0
        assert again.blobs_skipped == n_blobs and again.manifests_pushed == 0
        assert c.stats.requests["POST"] == c.stats.requests["PATCH"] == c.stats.requests["PUT"] == 0
    assert target.request_count("POST") == posts_before
    assert [str(i.target) for i in again.images] == [str(pushed.target)]


def test_push_with_a_prefix_mounts_blobs_already_in_another_repository(
    target: TestRegistry, multi: BuiltIndex, oci_archive: Path
) -> None:
    with client_for(target) as c:
        push_archive(oci_archive, c, kind="oci")
        second = push_archive(oci_archive, c, prefix="mirror", kind="oci")
    assert second.blobs_uploaded == 0 and second.blobs_mounted > 0
    assert str(second.images[0].target) == f"{target.host}/mirror/team/app:2.0@{multi.digest}"
    assert_image_complete(target, "mirror/team/app", "2.0", multi.digest)


def test_push_resumes_after_a_partial_push_in_chunks(
    target: TestRegistry, multi: BuiltIndex, oci_archive: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    amd = multi.images["linux/amd64"]
    already = list(amd.blobs.values())[:2]  # what a cut-off earlier push left behind
    for blob in already:
        put_blob(target.session(), target.url, "team/app", blob)
    with client_for(target, chunk_size=4096) as c:
        report = push_archive(oci_archive, c, kind="oci")
        assert c.stats.requests["PATCH"] > 2  # layers over 4 KiB went in chunks
    assert report.blobs_skipped == 2
    assert report.blobs_uploaded == sum(len(i.blobs) for i in multi.images.values()) - 2
    assert_image_complete(target, "team/app", "2.0", multi.digest)
    assert target.password not in caplog.text


def test_push_zstd_docker_archive(target: TestRegistry, tmp_path: Path) -> None:
    shared = tar_of({"etc/os-release": b"ID=shared\n" * 100})
    one = saved_image(["docker.io/rancher/hardened-a:v1.0-build1"], "a", shared)
    two = saved_image(["rancher/hardened-b:v2", "rancher/hardened-b:latest"], "b", shared)
    archive = docker_archive(tmp_path / "rke2-images.linux-amd64.tar.zst", [one, two])
    assert archive.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"

    listed = list_images(archive)
    assert [(i.name, i.tag) for i in listed] == [
        ("docker.io/rancher/hardened-a", "v1.0-build1"),
        ("docker.io/rancher/hardened-b", "v2"),
        ("docker.io/rancher/hardened-b", "latest"),
    ]
    assert all(i.platforms == ("linux/amd64",) for i in listed)

    with client_for(target) as c:
        report = push_archive(archive, c, kind="docker")
    targets = [str(p.target) for p in report.images]
    assert targets == [
        f"{target.host}/rancher/hardened-a:v1.0-build1@{listed[0].digest}",
        f"{target.host}/rancher/hardened-b:v2@{listed[1].digest}",
        f"{target.host}/rancher/hardened-b:latest@{listed[2].digest}",
    ]
    assert report.blobs_uploaded == 5  # 2 configs, 1 shared layer, 2 own layers
    assert report.blobs_mounted == 1  # the shared layer, linked into the second repository
    for p in report.images:
        repo = p.target.repository
        assert_image_complete(target, repo, p.target.tag or "", p.digest)
        doc = json.loads(raw_manifest(target, repo, p.digest).content)
        config = target.session().get(
            f"{target.url}/v2/{repo}/blobs/{doc['config']['digest']}", timeout=30
        )
        assert [d["digest"] for d in doc["layers"]] == json.loads(config.content)["rootfs"][
            "diff_ids"
        ]
        assert doc["layers"][0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar"

    with client_for(target) as c:
        again = push_archive(archive, c)
    assert again.blobs_uploaded == 0 and again.blobs_skipped == 6 and again.manifests_pushed == 0

    # and what was pushed pulls back, digest for digest
    with client_for(target) as c:
        back = pull_image(targets[0], tmp_path / "back.tar", cache_dir=tmp_path / "cache", client=c)
    assert back.digest == listed[0].digest


def test_plain_docker_archive_and_a_rewrite(target: TestRegistry, tmp_path: Path) -> None:
    archive = docker_archive(tmp_path / "plain.tar", [saved_image(["busybox:1"], "p")], zstd=False)
    with client_for(target) as c:
        report = push_archive(archive, c, rewrite=lambda ref: ref.retarget(target.host, "lib"))
    (p,) = report.images
    assert str(p.target).startswith(f"{target.host}/lib/library/busybox:1@sha256:")
    assert_image_complete(target, "lib/library/busybox", "1", p.digest)


def test_tampered_docker_layer_is_refused_before_any_upload(
    target: TestRegistry, tmp_path: Path
) -> None:
    img = saved_image(["rancher/evil:v1"], "evil")
    good_layer = img.layers[1]
    img.layers[1] = good_layer.replace(
        b"evil", b"EVIL", 1
    )  # the config still names the old diff_id
    archive = docker_archive(tmp_path / "evil.tar.zst", [img])
    with client_for(target) as c, pytest.raises(ChecksumMismatch) as e:
        push_archive(archive, c, kind="docker")
    assert digest_of(good_layer) in str(e.value) and digest_of(img.layers[1]) in str(e.value)
    assert c.stats.requests["POST"] == 0


def test_wrong_kind_and_unnamed_images(
    target: TestRegistry, oci_archive: Path, tmp_path: Path
) -> None:
    with client_for(target) as c:
        with pytest.raises(ImageArchiveError, match="is a oci archive, not docker"):
            push_archive(oci_archive, c, kind="docker")
        archive = docker_archive(tmp_path / "unnamed.tar", [saved_image([], "u")])
        with pytest.raises(ImageArchiveError, match="without a name"):
            push_archive(archive, c)
        report = push_archive(archive, c, name="tools/unnamed:v9")
    assert str(report.images[0].target).startswith(f"{target.host}/tools/unnamed:v9@")


def test_not_an_archive(target: TestRegistry, tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar.zst"
    junk.write_bytes(b"\x28\xb5\x2f\xfd" + b"\0" * 100)
    with client_for(target) as c, pytest.raises(ImageArchiveError, match="not a readable tar"):
        push_archive(junk, c)
