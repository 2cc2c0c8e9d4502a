"""The RKE2 releases client: list releases, resolve a version spec, pick the assets.

Every endpoint is configurable (SPEC section 2) so a mirror or a test server can stand
in for GitHub. The HTTP helpers here (session, retries, rate-limit messages) are
shared with :mod:`mk8s.bundle.fetch`, which downloads what this module selects.
"""

from __future__ import annotations

import base64
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import requests

from mk8s import __version__
from mk8s.bundle.versions import SPEC_HELP, Version, VersionSpec, parse_spec, parse_tag
from mk8s.errors import InputError, UpstreamError, VersionNotFound

REPO = "rancher/rke2"
DEFAULT_API_URL = "https://api.github.com"
DEFAULT_RELEASE_URL = f"https://github.com/{REPO}/releases/download"
DEFAULT_RAW_URL = f"https://raw.githubusercontent.com/{REPO}"
ARCHES = ("amd64", "arm64")
DEFAULT_CNI = "canal"
CNIS = ("canal", "cilium", "calico", "flannel")
# Over a thousand releases exist; 100 per page is GitHub's maximum. The page cap only
# guards against a server whose Link headers loop.
PER_PAGE = 100
MAX_PAGES = 1000
AUTH_HINT = "set GITHUB_TOKEN to a GitHub token (5000 API requests an hour instead of 60)"


@dataclass(frozen=True, kw_only=True)
class UpstreamSettings:
    """Where releases come from and how hard to try. Build with :meth:`from_env`.

    ``backoff`` is the first retry delay in seconds; each retry doubles it up to
    ``backoff_max``. ``retries`` counts retries after the first attempt.
    """

    api_url: str = DEFAULT_API_URL
    release_url: str = DEFAULT_RELEASE_URL
    raw_url: str = DEFAULT_RAW_URL
    token: str | None = field(default=None, repr=False)
    # origin -> (user, password), taken out of URLs given with ``user:password@``.
    credentials: Mapping[tuple[str, str], tuple[str, str]] = field(default_factory=dict, repr=False)
    connect_timeout: float = 15.0
    read_timeout: float = 60.0
    retries: int = 5
    backoff: float = 1.0
    backoff_max: float = 30.0

    def __post_init__(self) -> None:
        credentials = dict(self.credentials)
        for name in ("api_url", "release_url", "raw_url"):
            url, userinfo = split_credentials(check_url(getattr(self, name), name))
            if userinfo is not None:
                credentials[_origin(url)] = userinfo
            object.__setattr__(self, name, url.rstrip("/"))
        # Credentials given in a URL are used at run time only: the URLs kept here (and
        # so every URL in a lock, a manifest or a message) carry none.
        object.__setattr__(self, "credentials", credentials)
        if self.retries < 0 or self.backoff < 0 or self.backoff_max < 0:
            raise InputError("retries and backoff must not be negative")
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise InputError("timeouts must be positive")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> UpstreamSettings:
        """Settings from ``MK8S_GITHUB_API_URL``, ``MK8S_RELEASE_URL``, ``MK8S_RAW_URL``
        and ``GITHUB_TOKEN`` (empty values count as unset); ``overrides`` that are not
        None win (the CLI passes its flags here). Raises InputError on a bad URL."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for key, var in (
            ("api_url", "MK8S_GITHUB_API_URL"),
            ("release_url", "MK8S_RELEASE_URL"),
            ("raw_url", "MK8S_RAW_URL"),
            ("token", "GITHUB_TOKEN"),
        ):
            if env.get(var):
                values[key] = env[var]
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def timeout(self) -> tuple[float, float]:
        return (self.connect_timeout, self.read_timeout)

    def auth_headers(self, url: str) -> dict[str, str]:
        """The ``Authorization`` header for ``url``, or nothing.

        Basic auth for a URL on a host whose configured URL carried ``user:password@``;
        otherwise ``Bearer GITHUB_TOKEN`` for URLs on the API's host. A GitHub token is
        only sent where GitHub (or GitHub Enterprise, whose API and downloads share a
        host) asked for it, never to a mirror on another host. requests drops the header
        itself when a redirect leaves the host; without either, requests reads ~/.netrc.
        """
        userinfo = self.credentials.get(_origin(url))
        if userinfo is not None:
            raw = f"{userinfo[0]}:{userinfo[1]}".encode()
            return {"Authorization": "Basic " + base64.b64encode(raw).decode("ascii")}
        if self.token and _origin(url) == _origin(self.api_url):
            return {"Authorization": f"Bearer {self.token}"}
        return {}

    def backoff_delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based)."""
        return float(min(self.backoff_max, self.backoff * (2**attempt)))


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return (parts.scheme, parts.netloc.rpartition("@")[2].lower())


def check_url(url: str, what: str) -> str:
    """``url`` if it is a usable http(s) URL, else InputError (exit 2) naming ``what``.

    Refuses control characters and whitespace, an empty host, a malformed IPv6
    literal and a port that is not a number in 1-65535.
    """
    shown = redact_url(url)
    fix = "give a full URL such as https://mirror.example/path"
    if not url or any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise InputError(f"{what} {shown!r} has spaces or control characters", fix)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise InputError(f"{what} {shown!r} is not a valid URL ({e})", fix) from e
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"{what} {shown!r} is not an http(s) URL with a host", fix)
    if port == 0:
        raise InputError(f"{what} {shown!r} has port 0", fix)
    return url


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """(``url`` without ``user:password@``, (user, password) or None), percent-decoded."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    return urlunsplit(parts._replace(netloc=host)), (unquote(user), unquote(password))


def redact_url(url: str) -> str:
    """``url`` with any ``user:password@`` removed: the only form a message may show."""
    try:
        return split_credentials(url)[0]
    except ValueError:
        return "<invalid URL>"


def new_session() -> requests.Session:
    """A session that honours proxy and CA-bundle variables (``HTTPS_PROXY``,
    ``NO_PROXY``, ``REQUESTS_CA_BUNDLE``, ``SSL_CERT_FILE``) like any requests client."""
    session = requests.Session()
    session.trust_env = True
    ca = os.environ.get("SSL_CERT_FILE")
    if ca and not os.environ.get("REQUESTS_CA_BUNDLE") and not os.environ.get("CURL_CA_BUNDLE"):
        # requests reads REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE only; honour OpenSSL's name too.
        session.verify = ca
    session.headers["User-Agent"] = f"mk8s/{__version__}"
    return session


# -- retries ---------------------------------------------------------------------------
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)


def rate_limit_error(response: requests.Response, url: str) -> UpstreamError | None:
    """An UpstreamError telling when to retry if ``response`` is a rate-limit answer.

    GitHub answers 403 or 429 with ``X-RateLimit-Remaining: 0`` and
    ``X-RateLimit-Reset`` (epoch seconds), or with ``Retry-After`` for its secondary
    limits. Returns None when the response is not a rate limit.
    """
    if response.status_code not in (403, 429):
        return None
    h = response.headers
    if h.get("X-RateLimit-Remaining") != "0" and "Retry-After" not in h:
        return None
    when = None
    if h.get("X-RateLimit-Reset", "").isdigit():
        when = float(h["X-RateLimit-Reset"])
    elif h.get("Retry-After", "").isdigit():
        when = time.time() + float(h["Retry-After"])
    if when is not None:
        local = time.strftime("%H:%M:%S %Z", time.localtime(when)).strip()
        minutes = max(0, round((when - time.time()) / 60))
        at = f"; it resets at {local} (in about {minutes} min)"
    else:
        at = ""
    return UpstreamError(
        f"rate limited by {urlsplit(url).netloc} (HTTP {response.status_code}) at {url}{at}",
        f"retry then, or {AUTH_HINT}",
    )


def short_retry_after(response: requests.Response, settings: UpstreamSettings) -> float | None:
    """The wait a 429/503 asks for with ``Retry-After`` if it is short enough to honour."""
    value = response.headers.get("Retry-After", "")
    if value.isdigit() and float(value) <= settings.backoff_max:
        return float(value)
    return None


def get_with_retries(
    session: requests.Session,
    url: str,
    settings: UpstreamSettings,
    *,
    what: str,
    headers: Mapping[str, str] | None = None,
    stream: bool = False,
    sleep: Callable[[float], Any] = time.sleep,
) -> requests.Response:
    """GET ``url``, retrying connection errors, timeouts, 5xx and 429 with backoff.

    Returns the first 2xx response. Raises UpstreamError for a rate limit (saying when
    it resets), for a 4xx (naming ``what`` and the URL), and when retries run out.
    """
    hdrs = {**settings.auth_headers(url), **(headers or {})}
    last = ""
    delay = 0.0
    for attempt in range(settings.retries + 1):
        if attempt:
            sleep(delay)
        delay = settings.backoff_delay(attempt)
        try:
            r = session.get(url, headers=hdrs, timeout=settings.timeout, stream=stream)
        except TRANSIENT_ERRORS as e:
            last = f"{type(e).__name__}: {e}"
            if attempt == settings.retries:
                raise UpstreamError(
                    f"cannot reach {url} for {what} after {attempt + 1} attempts ({last})",
                    "check the network, proxy settings and the MK8S_* URLs",
                ) from e
            continue
        limited = rate_limit_error(r, url)
        if limited is not None and (r.status_code != 429 or short_retry_after(r, settings) is None):
            r.close()
            raise limited
        if r.status_code in RETRY_STATUS:
            last = f"HTTP {r.status_code}"
            wait = short_retry_after(r, settings)
            r.close()
            if attempt == settings.retries:
                raise UpstreamError(
                    f"{url} answered HTTP {r.status_code} for {what} after {attempt + 1} attempts",
                    "the server is failing; try again later",
                )
            delay = max(delay, wait or 0.0)
            continue
        if r.status_code >= 400:
            r.close()
            raise UpstreamError(
                f"{url} answered HTTP {r.status_code} {r.reason} for {what}",
                _fix_for_status(r.status_code),
            )
        return r
    raise AssertionError("unreachable")  # pragma: no cover


def _fix_for_status(status: int) -> str:
    if status == 404:
        return "check the version and the MK8S_RELEASE_URL / MK8S_RAW_URL mirror settings"
    if status in (401, 403):
        return f"check access to the server; {AUTH_HINT}"
    return "check the URL and the server"


# -- releases --------------------------------------------------------------------------
@dataclass(frozen=True)
class ReleaseAsset:
    """One file attached to a release, as the API lists it."""

    name: str
    size: int
    url: str = ""


@dataclass(frozen=True)
class UpstreamRelease:
    """One RKE2 release with a parseable tag."""

    version: Version
    tag: str
    draft: bool = False
    prerelease: bool = False
    published_at: str | None = None
    assets: tuple[ReleaseAsset, ...] = ()

    @property
    def asset_names(self) -> list[str]:
        return [a.name for a in self.assets]

    def asset(self, name: str) -> ReleaseAsset:
        """The asset called ``name``; raises UpstreamError if the release lacks it."""
        for a in self.assets:
            if a.name == name:
                return a
        raise UpstreamError(
            f"release {self.tag} has no asset {name}", "pick another release or report it upstream"
        )

    def eligible(self, allow_prerelease: bool) -> bool:
        """Drafts never match (they have no public download URL); prereleases and
        ``-rc`` tags only with ``allow_prerelease``."""
        if self.draft:
            return False
        return allow_prerelease or not (self.prerelease or self.version.is_rc)


def releases_url(settings: UpstreamSettings) -> str:
    return f"{settings.api_url}/repos/{REPO}/releases?per_page={PER_PAGE}"


def list_releases(
    settings: UpstreamSettings,
    session: requests.Session | None = None,
    *,
    sleep: Callable[[float], Any] = time.sleep,
) -> list[UpstreamRelease]:
    """Every release with a parseable tag, following ``Link: rel="next"`` page by page.

    Tags that are not ``vX.Y.Z[-rcK]+rke2rN`` are skipped. Raises UpstreamError when a
    page cannot be fetched (after retries), is rate limited, or is not a JSON list of
    releases; the message names the URL.
    """
    own = session is None
    s = new_session() if session is None else session
    out: list[UpstreamRelease] = []
    seen: set[str] = set()
    url: str | None = releases_url(settings)
    try:
        while url is not None:
            if url in seen or len(seen) >= MAX_PAGES:
                raise UpstreamError(f"the release list's Link headers loop at {url}")
            seen.add(url)
            with get_with_retries(
                s,
                url,
                settings,
                what="the release list",
                headers={"Accept": "application/vnd.github+json"},
                sleep=sleep,
            ) as r:
                out.extend(_parse_page(r, url))
                nxt = r.links.get("next", {}).get("url")
            url = nxt or None
    finally:
        if own:
            s.close()
    return out


def _parse_page(r: requests.Response, url: str) -> list[UpstreamRelease]:
    try:
        data = r.json()
    except ValueError as e:
        ctype = r.headers.get("Content-Type", "no content type")
        raise UpstreamError(
            f"{url} did not answer JSON ({ctype}): is MK8S_GITHUB_API_URL a GitHub API?",
            "point MK8S_GITHUB_API_URL at the API root (https://api.github.com or "
            "https://HOST/api/v3 for GitHub Enterprise)",
        ) from e
    if not isinstance(data, list):
        raise UpstreamError(
            f"{url} answered JSON that is not a list of releases",
            "point MK8S_GITHUB_API_URL at the API root",
        )
    out = []
    for item in data:
        rel = _parse_release(item)
        if rel is not None:
            out.append(rel)
    return out


def _parse_release(item: Any) -> UpstreamRelease | None:
    if not isinstance(item, dict) or not isinstance(item.get("tag_name"), str):
        return None
    version = parse_tag(item["tag_name"])
    if version is None:
        return None
    assets = []
    for a in item.get("assets") or ():
        if isinstance(a, dict) and isinstance(a.get("name"), str):
            size = a.get("size")
            url = a.get("browser_download_url")
            assets.append(
                ReleaseAsset(
                    name=a["name"],
                    size=size if isinstance(size, int) else -1,
                    url=url if isinstance(url, str) else "",
                )
            )
    return UpstreamRelease(
        version=version,
        tag=item["tag_name"],
        draft=bool(item.get("draft")),
        prerelease=bool(item.get("prerelease")),
        published_at=item.get("published_at"),
        assets=tuple(assets),
    )


def resolve(
    spec: str | VersionSpec,
    releases: Iterable[UpstreamRelease],
    *,
    allow_prerelease: bool = False,
) -> UpstreamRelease:
    """The newest release matching ``spec`` (pure; no I/O).

    Raises InputError for a malformed spec and VersionNotFound (exit 2) when nothing
    matches; that message lists the nearest versions that do exist, and says so when
    the only match is a prerelease that ``--allow-prerelease`` would admit.
    """
    vs = parse_spec(spec) if isinstance(spec, str) else spec
    all_releases = list(releases)
    eligible = [r for r in all_releases if r.eligible(allow_prerelease)]
    matches = [r for r in eligible if vs.matches(r.version)]
    if matches:
        return max(matches, key=lambda r: r.version.key)
    raise _not_found(vs, all_releases, eligible, allow_prerelease)


def _not_found(
    vs: VersionSpec,
    all_releases: list[UpstreamRelease],
    eligible: list[UpstreamRelease],
    allow_prerelease: bool,
) -> VersionNotFound:
    hidden = [r for r in all_releases if not r.draft and vs.matches(r.version)]
    if hidden and not allow_prerelease:
        best = max(hidden, key=lambda r: r.version.key)
        return VersionNotFound(
            f"RKE2 {vs.text} matches only prereleases (newest {best.tag})",
            "pass --allow-prerelease to use it, or pick a final release",
        )
    if not eligible:
        return VersionNotFound(
            f"RKE2 {vs.text}: the release list has no usable releases at all",
            "check MK8S_GITHUB_API_URL",
        )
    nearest = nearest_versions(vs, eligible)
    return VersionNotFound(
        f"no RKE2 release matches {vs.text}; nearest: {', '.join(nearest)}",
        f"pick one of those; {SPEC_HELP}",
    )


def nearest_versions(vs: VersionSpec, releases: Sequence[UpstreamRelease], n: int = 5) -> list[str]:
    """Up to ``n`` tags near ``vs``, newest first: the newest of the same minor when it
    has any, else the newest of the minors just below and above."""
    newest_first = sorted(releases, key=lambda r: r.version.key, reverse=True)
    if vs.major is None:
        return [r.tag for r in newest_first[:n]]
    same = [r for r in newest_first if (r.version.major, r.version.minor) == (vs.major, vs.minor)]
    if same:
        if vs.patch is not None:
            # Closest patches first, so v1.28.99 shows the newest and v1.28.0 the oldest.
            same.sort(key=lambda r: (abs(r.version.patch - (vs.patch or 0)), -r.version.patch))
            same = sorted(same[:n], key=lambda r: r.version.key, reverse=True)
        return [r.tag for r in same[:n]]
    target = (vs.major, vs.minor)
    minors = sorted({(r.version.major, r.version.minor) for r in releases})
    below = [m for m in minors if m < target][-2:]
    above = [m for m in minors if m > target][:2]
    picks = []
    for m in (*reversed(above), *reversed(below)):
        picks.append(next(r for r in newest_first if (r.version.major, r.version.minor) == m))
    return [r.tag for r in picks]


def resolve_release(
    spec: str,
    settings: UpstreamSettings,
    *,
    allow_prerelease: bool = False,
    session: requests.Session | None = None,
) -> UpstreamRelease:
    """List releases and resolve ``spec``: :func:`list_releases` then :func:`resolve`.

    Raises InputError for a malformed spec before any request, UpstreamError for
    network or server problems, VersionNotFound when nothing matches.
    """
    vs = parse_spec(spec)
    return resolve(vs, list_releases(settings, session), allow_prerelease=allow_prerelease)


# -- assets ----------------------------------------------------------------------------
_IMAGE_ASSET = re.compile(
    r"^rke2-images(?:-(?P<group>[a-z0-9][a-z0-9-]*))?\.linux-(?P<arch>[a-z0-9]+)\.tar\.zst$"
)


def sha256sums_name(arch: str) -> str:
    return f"sha256sum-{arch}.txt"


def tarball_name(arch: str) -> str:
    return f"rke2.linux-{arch}.tar.gz"


def images_name(arch: str, group: str | None = None) -> str:
    """``rke2-images.linux-ARCH.tar.zst`` or ``rke2-images-GROUP.linux-ARCH.tar.zst``."""
    return f"rke2-images{'-' + group if group else ''}.linux-{arch}.tar.zst"


def image_groups(asset_names: Iterable[str], arch: str) -> list[str]:
    """The image groups a release has for ``arch`` (``.tar.zst`` only), sorted."""
    groups = set()
    for name in asset_names:
        m = _IMAGE_ASSET.match(name)
        if m and m["arch"] == arch and m["group"]:
            groups.add(m["group"])
    return sorted(groups)


def select_assets(
    asset_names: Iterable[str],
    arches: Sequence[str],
    cni: str | None = None,
    groups: Sequence[str] = (),
    *,
    tag: str = "the release",
) -> list[str]:
    """The release files a bundle needs (SPEC section 4), per arch in the order given.

    Always ``sha256sum-ARCH.txt`` and ``rke2.linux-ARCH.tar.gz``; images are
    ``.tar.zst`` only: ``rke2-images.linux-ARCH`` for canal (the default), else
    ``rke2-images-core`` plus ``rke2-images-<cni>``, plus one file per extra group.
    Raises InputError (exit 2) for an unknown arch or CNI, an arch the release was not
    built for, or a CNI / group it lacks (listing the groups it has).
    """
    names = set(asset_names)
    cni = cni or DEFAULT_CNI
    if cni not in CNIS:
        raise InputError(f"unknown CNI {cni!r}", f"use one of {', '.join(CNIS)}")
    if not arches:
        raise InputError("no architecture given", f"use one of {', '.join(ARCHES)}")
    out: list[str] = []
    for arch in arches:
        if arch not in ARCHES:
            raise InputError(f"unknown architecture {arch!r}", f"use one of {', '.join(ARCHES)}")
        base = [sha256sums_name(arch), tarball_name(arch)]
        if not all(b in names for b in base):
            built = [a for a in ARCHES if tarball_name(a) in names] or ["none"]
            raise InputError(
                f"{tag} has no {arch} build (it has: {', '.join(built)})",
                "drop that --arch or pick another release",
            )
        wanted: list[str | None] = [None] if cni == DEFAULT_CNI else ["core", cni]
        wanted += [g for g in groups if g not in wanted]
        have = image_groups(names, arch)
        out += base
        for group in wanted:
            name = images_name(arch, group)
            if name not in names:
                if group is None:
                    what = "default image tarball"
                elif group in ("core", cni) and cni != DEFAULT_CNI:
                    what = f"images for CNI {cni}"
                else:
                    what = f"image group {group}"
                raise InputError(
                    f"{tag} has no {what} for {arch} ({name} is missing); "
                    f"its image groups: {', '.join(have) or 'none'}",
                    "pick one of those or another release",
                )
            out.append(name)
    return out


# -- URLs ------------------------------------------------------------------------------
def quote_tag(tag: str) -> str:
    """The tag as a URL path segment: ``v1.28.15+rke2r1`` -> ``v1.28.15%2Brke2r1``."""
    return quote(tag, safe="")


def asset_url(settings: UpstreamSettings, tag: str, name: str) -> str:
    """``{release_url}/{tag}/{name}`` with the tag's ``+`` as ``%2B``."""
    return f"{settings.release_url}/{quote_tag(tag)}/{quote(name, safe='')}"


def install_script_url(settings: UpstreamSettings, tag: str) -> str:
    """``{raw_url}/{tag}/install.sh``: the installer at the resolved tag, never floating."""
    return f"{settings.raw_url}/{quote_tag(tag)}/install.sh"


__all__ = [
    "ARCHES",
    "CNIS",
    "DEFAULT_API_URL",
    "DEFAULT_CNI",
    "DEFAULT_RAW_URL",
    "DEFAULT_RELEASE_URL",
    "ReleaseAsset",
    "UpstreamRelease",
    "UpstreamSettings",
    "asset_url",
    "get_with_retries",
    "image_groups",
    "images_name",
    "install_script_url",
    "list_releases",
    "nearest_versions",
    "new_session",
    "quote_tag",
    "rate_limit_error",
    "resolve",
    "resolve_release",
    "select_assets",
    "sha256sums_name",
    "tarball_name",
]
