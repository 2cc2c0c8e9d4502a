"""HTTP to the release server: settings, URLs and their credentials, retries.

:class:`UpstreamSettings` holds the three configurable endpoints (GitHub, a mirror or
a test server), takes credentials out of URLs (used at run time, never written), and
validates every URL. :func:`get_document` and the helpers here are shared by the releases client
(:mod:`mk8s.bundle.upstream.releases`) and the downloader (:mod:`.fetch`); both reach the
network only through :mod:`mk8s.net` (deadlines, byte caps, one retry budget).
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import requests

from mk8s import net
from mk8s.errors import InputError, UpstreamError
from mk8s.untrusted import shown

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
    limits: net.Limits = field(default_factory=net.Limits.from_env)

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

    @property
    def policy(self) -> net.RetryPolicy:
        return net.RetryPolicy(self.retries, self.backoff, self.backoff_max)

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
    safe_url = shown(redact_url(url), limit=300)
    fix = "give a full URL such as https://mirror.example/path"
    if not url or any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise InputError(f"{what} {safe_url!r} has spaces or control characters", fix)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise InputError(f"{what} {safe_url!r} is not a valid URL ({e})", fix) from e
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"{what} {safe_url!r} is not an http(s) URL with a host", fix)
    if port == 0:
        raise InputError(f"{what} {safe_url!r} has port 0", fix)
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


# -- requests --------------------------------------------------------------------------
new_session = net.new_session
#: A page of the release list (100 releases with their assets).
MAX_RELEASE_PAGE = 32 << 20


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
        f"rate limited by {urlsplit(url).netloc} (HTTP {response.status_code}) at"
        f" {shown(url, limit=300)}{at}",
        f"retry then, or {AUTH_HINT}",
    )


@dataclass(frozen=True)
class Document:
    """A small answer read whole: its bytes, headers and parsed ``Link`` header."""

    data: bytes
    headers: Mapping[str, str]
    links: Mapping[str, Mapping[str, str]]


def get_document(
    session: requests.Session,
    url: str,
    settings: UpstreamSettings,
    *,
    what: str,
    cap: int,
    headers: Mapping[str, str] | None = None,
    sleep: Callable[[float], Any] = time.sleep,
) -> Document:
    """GET ``url`` and read its body (at most ``cap`` bytes), retrying connection
    errors, timeouts, 5xx and 429 within one :class:`mk8s.net.RetryBudget`.

    Raises UpstreamError for a rate limit (saying when it resets), for a 4xx (naming
    ``what`` and the URL), for a body over ``cap`` and when the retries are spent.
    """
    hdrs = {**settings.auth_headers(url), **(headers or {})}
    deadline = settings.limits.deadline(cap)
    budget = net.RetryBudget(settings.policy, 2 * deadline, sleep=sleep)
    shown_url = shown(url, limit=300)
    while True:
        wait, error = None, None
        try:
            with net.send(
                session,
                "GET",
                url,
                headers=hdrs,
                timeout=settings.timeout,
                stream=True,
                limits=settings.limits,
                deadline=deadline,
            ) as r:
                _judge(r, url, what, settings)
                data = net.read_body(r, cap, what=f"{what} at {shown_url}", error=UpstreamError)
                return Document(data, r.headers, r.links)
        except net.RetryStatus as e:
            last, wait = e.reason, e.wait
        except net.TRANSIENT as e:
            last, error = net.reason(e), e
        except requests.RequestException as e:  # a redirect or URL mk8s cannot follow
            raise UpstreamError(
                f"cannot follow {shown_url} for {what} ({shown(e, limit=160)})",
                "check the MK8S_* URLs and the server",
            ) from None
        if not budget.retry(wait=wait, error=error):
            if last.startswith("HTTP "):
                raise UpstreamError(
                    f"{shown_url} answered {last} for {what} after {budget.tries} attempts",
                    "the server is failing; try again later",
                )
            raise UpstreamError(
                f"cannot reach {shown_url} for {what} after {budget.tries} attempts ({last})",
                "check the network, proxy settings and the MK8S_* URLs",
            )


def _judge(r: requests.Response, url: str, what: str, settings: UpstreamSettings) -> None:
    """Raise for an answer that is not the document: RetryStatus for what to retry."""
    limited = rate_limit_error(r, url)
    wait = net.retry_after(r, settings.backoff_max)
    if limited is not None and (r.status_code != 429 or wait is None):
        raise limited
    if r.status_code in net.RETRY_STATUS:
        raise net.RetryStatus(f"HTTP {r.status_code}", wait)
    if r.status_code >= 400:
        raise status_error(r, url, what)


def status_error(r: requests.Response, url: str, what: str) -> UpstreamError:
    """``URL answered HTTP N REASON for WHAT``, the server's reason shown safely."""
    return UpstreamError(
        f"{shown(url, limit=300)} answered HTTP {r.status_code} {shown(r.reason, limit=80)}"
        f" for {what}",
        _fix_for_status(r.status_code),
    )


def _fix_for_status(status: int) -> str:
    if status == 404:
        return "check the version and the MK8S_RELEASE_URL / MK8S_RAW_URL mirror settings"
    if status in (401, 403):
        return f"check access to the server; {AUTH_HINT}"
    return "check the URL and the server"
