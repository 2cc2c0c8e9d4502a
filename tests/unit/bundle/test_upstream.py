"""The releases client against the example upstream on 127.0.0.1 (no mocks)."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator

import pytest

from mk8s.bundle.upstream import settings as up_mod
from mk8s.bundle.upstream.releases import (
    UpstreamRelease,
    asset_url,
    install_script_url,
    list_releases,
    resolve,
    resolve_release,
    select_assets,
)
from mk8s.bundle.upstream.settings import UpstreamSettings
from mk8s.errors import InputError, UpstreamError, VersionNotFound
from tests.support.upstream import UNPARSEABLE_TAGS, ExampleUpstream


@pytest.fixture(scope="module")
def server() -> Iterator[ExampleUpstream]:
    with ExampleUpstream() as up:
        yield up


@pytest.fixture
def upstream(server: ExampleUpstream) -> ExampleUpstream:
    server.faults.clear()
    server.clear_requests()
    return server


def settings_for(up: ExampleUpstream, **kw: object) -> UpstreamSettings:
    base: dict[str, object] = {"backoff": 0.01, "backoff_max": 0.05, "retries": 3}
    base.update(kw)
    return UpstreamSettings.from_env(up.env, **base)


@pytest.fixture(scope="module")
def releases(server: ExampleUpstream) -> list[UpstreamRelease]:
    server.faults.clear()
    return list_releases(settings_for(server))


# -- settings ------------------------------------------------------------------------------
def test_settings_from_env_and_defaults() -> None:
    s = UpstreamSettings.from_env({})
    assert s.api_url == "https://api.github.com"
    assert s.release_url == "https://github.com/rancher/rke2/releases/download"
    assert s.raw_url == "https://raw.githubusercontent.com/rancher/rke2"
    assert s.token is None
    s = UpstreamSettings.from_env(
        {"MK8S_GITHUB_API_URL": "https://ghe.example/api/v3/", "GITHUB_TOKEN": "t0k"},
        retries=1,
        raw_url=None,
    )
    assert s.api_url == "https://ghe.example/api/v3"
    assert s.retries == 1
    assert s.raw_url == up_mod.DEFAULT_RAW_URL
    assert "t0k" not in repr(s)
    # The token goes to the API's host only, never to a mirror elsewhere.
    assert s.auth_headers("https://ghe.example/rancher/x") == {"Authorization": "Bearer t0k"}
    assert s.auth_headers("https://mirror.example/x") == {}
    with pytest.raises(InputError):
        UpstreamSettings(api_url="ftp://x")


def test_url_builders() -> None:
    s = UpstreamSettings()
    assert (
        asset_url(s, "v1.28.15+rke2r1", "sha256sum-amd64.txt")
        == "https://github.com/rancher/rke2/releases/download/v1.28.15%2Brke2r1/sha256sum-amd64.txt"
    )
    assert (
        install_script_url(s, "v1.28.15+rke2r1")
        == "https://raw.githubusercontent.com/rancher/rke2/v1.28.15%2Brke2r1/install.sh"
    )


# -- listing -------------------------------------------------------------------------------
def test_pagination_follows_link_next(upstream: ExampleUpstream) -> None:
    got = list_releases(settings_for(upstream))
    pages = [r for r in upstream.requests if "/releases" in r.path and r.server == "main"]
    assert len(pages) == 3
    assert "per_page=100" in pages[0].path
    # Later pages come from the Link header (GitHub's /repositories/<id>/ form).
    assert all("/api/repositories/" in p.path for p in pages[1:])
    assert len(got) == len(upstream.releases) - len(UNPARSEABLE_TAGS)
    assert {r.tag for r in got} >= {"v1.28.15+rke2r1", "v1.28.3+rke2r3", "v1.31.3+rke2r1"}
    one = next(r for r in got if r.tag == "v1.28.15+rke2r1")
    assert "rke2-images.linux-arm64.tar.zst" in one.asset_names
    assert one.asset("rke2-images.linux-amd64.tar.zst").size == upstream.image_size


def test_token_is_sent_as_bearer(upstream: ExampleUpstream) -> None:
    list_releases(settings_for(upstream, token="ghp_secret"))
    pages = [r for r in upstream.requests if "/releases" in r.path]
    assert pages and all(r.header("Authorization") == "Bearer ghp_secret" for r in pages)


def test_no_token_no_header(upstream: ExampleUpstream) -> None:
    list_releases(settings_for(upstream))
    assert all(r.header("Authorization") is None for r in upstream.requests)


def test_rate_limit_says_when_and_token(upstream: ExampleUpstream) -> None:
    upstream.faults.rate_limited(status=403, reset_in=1800)
    reset = time.strftime("%H:%M", time.localtime(upstream.faults.rate_limit.reset))  # type: ignore[union-attr]
    t = time.monotonic()
    with pytest.raises(UpstreamError) as e:
        list_releases(settings_for(upstream, backoff=5.0))
    assert time.monotonic() - t < 2  # no pointless retries against a rate limit
    msg = str(e.value)
    assert "rate limit" in msg and "HTTP 403" in msg
    assert reset in msg and "in about 30 min" in msg
    assert "GITHUB_TOKEN" in msg
    assert e.value.exit_code == 1


def test_429_with_long_retry_after_is_rate_limit(upstream: ExampleUpstream) -> None:
    upstream.faults.rate_limited(status=429, reset_in=600, retry_after=600)
    with pytest.raises(UpstreamError, match="GITHUB_TOKEN"):
        list_releases(settings_for(upstream))


def test_429_with_short_retry_after_is_retried(upstream: ExampleUpstream) -> None:
    upstream.faults.fail_times("api", 1, 429, {"Retry-After": "0"})
    assert list_releases(settings_for(upstream))


def test_page_that_is_not_json(upstream: ExampleUpstream) -> None:
    upstream.faults.not_json(page=2)
    with pytest.raises(UpstreamError) as e:
        list_releases(settings_for(upstream))
    assert "page=2" in str(e.value) and "did not answer JSON" in str(e.value)
    assert "text/html" in str(e.value)


def test_500_then_success(upstream: ExampleUpstream) -> None:
    upstream.faults.fail_times("api", 2, 500)
    got = list_releases(settings_for(upstream))
    assert len(got) > 250
    assert len([r for r in upstream.requests if "/releases" in r.path]) == 5


def test_500_forever_gives_up(upstream: ExampleUpstream) -> None:
    upstream.faults.fail_times("api", 10, 503)
    with pytest.raises(UpstreamError, match=r"HTTP 503 .* after 3 attempts"):
        list_releases(settings_for(upstream, retries=2))


def test_connection_refused_is_upstream_error() -> None:
    s = UpstreamSettings(api_url="http://127.0.0.1:9", retries=1, backoff=0.01)
    with pytest.raises(UpstreamError, match=r"cannot reach .* after 2 attempts"):
        list_releases(s)


# -- resolving -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "tag"),
    [
        ("v1.28.15+rke2r1", "v1.28.15+rke2r1"),
        ("1.28.15+rke2r1", "v1.28.15+rke2r1"),
        ("v1.28.15", "v1.28.15+rke2r1"),
        ("v1.28.x", "v1.28.15+rke2r1"),
        ("v1.28", "v1.28.15+rke2r1"),
        ("1.28", "v1.28.15+rke2r1"),
        ("v1.28.8", "v1.28.8+rke2r2"),  # r2 beats r1
        ("v1.28.3", "v1.28.3+rke2r3"),  # r3 beats r2 (published later than v1.28.4)
        ("v1.28.3+rke2r1", "v1.28.3+rke2r1"),  # an exact older respin is still reachable
        ("v1.30", "v1.30.5+rke2r1"),  # v1.30.6 is marked prerelease
        ("latest", "v1.31.2+rke2r1"),  # the drafted v1.31.3 never counts
        ("v1.24.x", "v1.24.17+rke2r1"),
    ],
)
def test_resolve(releases: list[UpstreamRelease], spec: str, tag: str) -> None:
    assert resolve(spec, releases).tag == tag


@pytest.mark.parametrize(
    ("spec", "tag"),
    [
        ("latest", "v1.32.0-rc1+rke2r1"),
        ("v1.30", "v1.30.6+rke2r1"),
        ("v1.31.3", "v1.31.3-rc1+rke2r1"),  # drafts stay out even now
        ("v1.28.15-rc1+rke2r1", "v1.28.15-rc1+rke2r1"),
        ("v1.28.13-rc2", "v1.28.13-rc2+rke2r1"),
    ],
)
def test_resolve_with_prereleases(releases: list[UpstreamRelease], spec: str, tag: str) -> None:
    assert resolve(spec, releases, allow_prerelease=True).tag == tag


def test_published_order_is_not_version_order(server: ExampleUpstream) -> None:
    # Guards the data itself: a resolver that trusts listing order must fail the tests.
    order = [r.tag for r in server.releases]
    assert order.index("v1.28.3+rke2r3") < order.index("v1.28.4+rke2r1")
    assert order.index("v1.28.15+rke2r1") < order.index("v1.31.2+rke2r1")


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ("v1.28.99", ["v1.28.15+rke2r1", "v1.28.14+rke2r1"]),
        ("v1.28.16+rke2r1", ["v1.28.15+rke2r1"]),
        ("v1.28.15+rke2r7", ["v1.28.15+rke2r1"]),
        ("v1.40", ["v1.31.2+rke2r1", "v1.30.5+rke2r1"]),
        ("v1.20.x", ["v1.24.17+rke2r1", "v1.25.16+rke2r1"]),
    ],
)
def test_no_match_names_nearest(
    releases: list[UpstreamRelease], spec: str, named: list[str]
) -> None:
    with pytest.raises(VersionNotFound) as e:
        resolve(spec, releases)
    assert e.value.exit_code == 2
    for tag in named:
        assert tag in str(e.value)


def test_prerelease_only_match_suggests_flag(releases: list[UpstreamRelease]) -> None:
    with pytest.raises(VersionNotFound, match="--allow-prerelease"):
        resolve("v1.32", releases)
    with pytest.raises(VersionNotFound, match="--allow-prerelease"):
        resolve("v1.28.15-rc1+rke2r1", releases)


def test_drafts_never_match(releases: list[UpstreamRelease]) -> None:
    with pytest.raises(VersionNotFound):
        resolve("v1.30.7+rke2r1", releases, allow_prerelease=True)


def test_resolve_release_end_to_end(upstream: ExampleUpstream) -> None:
    rel = resolve_release("v1.27", settings_for(upstream))
    assert rel.tag == "v1.27.16+rke2r1"
    with pytest.raises(InputError):
        resolve_release("v1.27.y", settings_for(upstream))


# -- assets --------------------------------------------------------------------------------
def test_select_default_cni(releases: list[UpstreamRelease]) -> None:
    rel = resolve("v1.28.15+rke2r1", releases)
    assert select_assets(rel.asset_names, ["amd64", "arm64"]) == [
        "sha256sum-amd64.txt",
        "rke2.linux-amd64.tar.gz",
        "rke2-images.linux-amd64.tar.zst",
        "sha256sum-arm64.txt",
        "rke2.linux-arm64.tar.gz",
        "rke2-images.linux-arm64.tar.zst",
    ]


def test_select_cni_and_groups(releases: list[UpstreamRelease]) -> None:
    rel = resolve("v1.28.15+rke2r1", releases)
    got = select_assets(rel.asset_names, ["amd64"], "cilium", ["multus", "cilium", "vsphere"])
    assert got == [
        "sha256sum-amd64.txt",
        "rke2.linux-amd64.tar.gz",
        "rke2-images-core.linux-amd64.tar.zst",
        "rke2-images-cilium.linux-amd64.tar.zst",
        "rke2-images-multus.linux-amd64.tar.zst",
        "rke2-images-vsphere.linux-amd64.tar.zst",
    ]
    assert all(not n.endswith(".tar.gz") or n.startswith("rke2.linux") for n in got)
    canal = select_assets(rel.asset_names, ["amd64"], "canal", ["harvester"])
    assert canal[2:] == [
        "rke2-images.linux-amd64.tar.zst",
        "rke2-images-harvester.linux-amd64.tar.zst",
    ]


def test_select_missing_group_lists_what_exists(releases: list[UpstreamRelease]) -> None:
    rel = resolve("v1.28.15+rke2r1", releases)
    with pytest.raises(InputError) as e:
        select_assets(rel.asset_names, ["arm64"], None, ["vsphere"], tag=rel.tag)
    msg = str(e.value)
    assert "image group vsphere" in msg and "arm64" in msg
    assert "calico, canal, cilium, core, flannel, multus" in msg
    old = resolve("v1.25", releases)
    with pytest.raises(InputError, match="images for CNI flannel"):
        select_assets(old.asset_names, ["amd64"], "flannel")
    with pytest.raises(InputError, match=r"no arm64 build \(it has: amd64\)"):
        select_assets(old.asset_names, ["arm64"])
    with pytest.raises(InputError, match="unknown CNI"):
        select_assets(old.asset_names, ["amd64"], "weave")
    with pytest.raises(InputError, match="unknown architecture"):
        select_assets(old.asset_names, ["s390x"])


# -- credentials in URLs, bad URLs -------------------------------------------------------
# -------------------------------------------------------------- credentials in URLs
def test_credentials_are_taken_out_of_urls() -> None:
    s = up_mod.UpstreamSettings(
        api_url="https://api.example",
        release_url="https://u%40x:p%3Ass@mirror.example:8443/rel/",
        raw_url="https://mirror.example:8443/raw",
    )
    assert s.release_url == "https://mirror.example:8443/rel"
    assert "p:ss" not in repr(s) and "p%3Ass" not in repr(s)
    want = "Basic " + base64.b64encode(b"u@x:p:ss").decode()
    assert s.auth_headers("https://mirror.example:8443/raw/x") == {"Authorization": want}
    assert s.auth_headers("https://other.example/x") == {}
    assert up_mod.redact_url("https://a:b@h/p") == "https://h/p"


@pytest.mark.parametrize(
    "url",
    [
        "http://[::1",
        "http://h:99999/",
        "http://h:0/",
        "http:///path",
        "https://h/\x00",
        "https://h/a b",
        "ftp://h/",
        "",
        "https://h:port/",
    ],
)
def test_bad_urls_are_input_errors(url: str) -> None:
    with pytest.raises(InputError):
        up_mod.UpstreamSettings(api_url=url)
