"""Retries and resume against a real registry behind a fault-injecting TLS proxy."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mk8s.errors import RegistryError
from mk8s.images.auth import Credentials
from mk8s.images.client import RegistryClient, RegistryClientSettings
from mk8s.images.pull import pull_image
from mk8s.images.push import push_archive
from tests.support.faultproxy import FaultProxy
from tests.support.oci import (
    BuiltImage,
    build_image,
    digest_of,
    docker_archive,
    push_raw,
    saved_image,
)
from tests.support.registry import TestRegistry, registry_for_tests

BIG = 600_000  # a layer of random bytes, so several reads and a cut in the middle


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestRegistry]:
    with registry_for_tests(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


@pytest.fixture(scope="module")
def image(registry: TestRegistry) -> BuiltImage:
    built = build_image(seed="faults", layers=1, layer_size=BIG)
    push_raw(registry.session(), registry.url, "team/faulty", "v1", built)
    return built


@pytest.fixture
def proxy(registry: TestRegistry, tmp_path: Path) -> Iterator[FaultProxy]:
    with FaultProxy(registry, tmp_path / "proxy") as p:
        yield p


def client_via(proxy: FaultProxy, registry: TestRegistry, **kw: float) -> RegistryClient:
    settings = RegistryClientSettings(
        ca_file=registry.ca_file, use_docker_config=False, backoff=0.01, backoff_max=0.05, **kw
    )
    return RegistryClient(
        proxy.host, settings, credentials=Credentials(registry.username, registry.password)
    )


def test_cut_blob_download_resumes_with_range(
    proxy: FaultProxy, registry: TestRegistry, image: BuiltImage, tmp_path: Path
) -> None:
    layer = image.layers[0]
    proxy.cut(rf"/blobs/{digest_of(layer)}", after=200_000)
    with client_via(proxy, registry) as c:
        out = pull_image(
            f"{proxy.host}/team/faulty:v1", tmp_path / "a.tar", cache_dir=tmp_path / "c", client=c
        )
        assert c.stats.bytes_downloaded == sum(len(b) for b in image.blobs.values())
    assert out.digest == image.digest
    gets = [s for s in proxy.seen if s.method == "GET" and digest_of(layer) in s.path]
    assert len(gets) == 2 and gets[0].range is None
    assert gets[1].range is not None and gets[1].range.startswith("bytes=")
    resumed_at = int(gets[1].range.removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= 200_000  # only the missing part was asked for again
    assert (tmp_path / "c/sha256" / digest_of(layer)[7:]).read_bytes() == layer


def test_5xx_and_429_are_retried(
    proxy: FaultProxy, registry: TestRegistry, image: BuiltImage, tmp_path: Path
) -> None:
    proxy.fail("GET", r"/manifests/v1", 503, times=2)
    proxy.fail("GET", r"/blobs/", 429, times=1, headers={"Retry-After": "0"})
    proxy.fail("GET", r"/blobs/", 502, times=1)
    with client_via(proxy, registry) as c:
        out = pull_image(
            f"{proxy.host}/team/faulty:v1", tmp_path / "a.tar", cache_dir=tmp_path / "c", client=c
        )
        assert c.stats.retries == 4
    assert out.digest == image.digest


def test_a_registry_that_keeps_failing_fails_clearly(
    proxy: FaultProxy, registry: TestRegistry, image: BuiltImage, tmp_path: Path
) -> None:
    proxy.fail("GET", r"/manifests/", 500, times=100)
    t0 = time.monotonic()
    with client_via(proxy, registry, retries=2) as c, pytest.raises(RegistryError) as e:
        pull_image(
            f"{proxy.host}/team/faulty:v1", tmp_path / "a.tar", cache_dir=tmp_path / "c", client=c
        )
    assert "failed after 3 attempts (HTTP 500)" in str(e.value)
    assert proxy.host in str(e.value) and registry.password not in str(e.value)
    assert time.monotonic() - t0 < 5


def test_upload_chunk_failures_are_retried(
    proxy: FaultProxy, registry: TestRegistry, tmp_path: Path
) -> None:
    archive = docker_archive(tmp_path / "d.tar.zst", [saved_image(["rancher/retry:v1"], "retry")])
    proxy.fail("PATCH", r"/blobs/uploads/", 503, times=2)
    proxy.fail("PUT", r"/blobs/uploads/", 502, times=1)
    with client_via(proxy, registry, chunk_size=1024) as c:
        report = push_archive(archive, c)
        assert c.stats.retries >= 3
    (p,) = report.images
    r = registry.session().get(
        f"{registry.url}/v2/rancher/retry/manifests/v1",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        timeout=30,
    )
    assert r.status_code == 200 and digest_of(r.content) == p.digest
