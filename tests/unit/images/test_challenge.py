"""Bearer-token authentication (the Docker Hub / ghcr.io scheme) against the real
registry configured with ``auth.token`` and a token service on loopback."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mk8s.errors import RegistryAuthError
from mk8s.images.auth import Credentials
from mk8s.images.client import RegistryClient, RegistryClientSettings
from mk8s.images.pull import pull_image
from mk8s.images.push import push_archive
from tests.support.oci import docker_archive, saved_image
from tests.support.registry import TestCA, TestRegistry, registry_for_tests
from tests.support.tokenauth import TokenService

PASSWORD = "tok-pw-" + "q" * 12


@dataclass
class World:
    registry: TestRegistry
    tokens: TokenService
    digest: str


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    d = tmp_path_factory.mktemp("token")
    ca = TestCA.create()
    with (
        TokenService(d / "tokens", ca, {"robot": PASSWORD}, anonymous_pull=["pub/app"]) as svc,
        registry_for_tests(d / "registry", ca=ca, token_auth=svc.registry_config()) as reg,
    ):
        archive = docker_archive(
            d / "img.tar.zst", [saved_image(["team/app:v1", "pub/app:v1"], "tok")]
        )
        with client(reg, Credentials("robot", PASSWORD)) as c:
            report = push_archive(archive, c)
        # the second repository got its blobs by a mount, which needs a two-scope token
        assert report.blobs_uploaded == 3 and report.blobs_mounted == 3
        yield World(reg, svc, report.images[0].digest)


def client(reg: TestRegistry, creds: Credentials | None) -> RegistryClient:
    settings = RegistryClientSettings(ca_file=reg.ca_file, use_docker_config=False, backoff=0.01)
    return RegistryClient(reg.host, settings, credentials=creds)


def test_push_and_pull_with_tokens(
    world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    before = world.tokens.requests
    with client(world.registry, Credentials("robot", PASSWORD)) as c:
        out = pull_image(
            f"{world.registry.host}/team/app:v1",
            tmp_path / "a.tar",
            cache_dir=tmp_path / "c",
            client=c,
        )
        assert c.stats.requests["GET"] >= 3
    assert out.digest == world.digest
    assert world.tokens.requests == before + 1  # one token per scope, reused for every call
    assert PASSWORD not in caplog.text and "Bearer" not in caplog.text


def test_anonymous_pull_where_allowed(world: World, tmp_path: Path) -> None:
    with client(world.registry, None) as c:
        out = pull_image(
            f"{world.registry.host}/pub/app:v1", tmp_path / "a.tar", cache_dir=tmp_path, client=c
        )
    assert out.digest == world.digest


def test_anonymous_pull_where_not_allowed(world: World, tmp_path: Path) -> None:
    with (
        client(world.registry, None) as c,
        pytest.raises(RegistryAuthError, match="requires credentials"),
    ):
        pull_image(
            f"{world.registry.host}/team/app:v1", tmp_path / "a.tar", cache_dir=tmp_path, client=c
        )


def test_wrong_password_at_the_token_service(world: World, tmp_path: Path) -> None:
    wrong = "not-" + PASSWORD
    with (
        client(world.registry, Credentials("robot", wrong)) as c,
        pytest.raises(RegistryAuthError) as e,
    ):
        pull_image(
            f"{world.registry.host}/team/app:v1", tmp_path / "a.tar", cache_dir=tmp_path, client=c
        )
    assert "refused the credentials of user 'robot'" in str(e.value)
    assert wrong not in str(e.value) and PASSWORD not in str(e.value)
