"""Where releases come from: settings, URLs and their credentials.

:class:`UpstreamSettings` holds the three configurable endpoints (GitHub, a mirror or
a test server), takes credentials out of URLs (used at run time, never written), and
validates every URL. What the server's answers mean is :mod:`.server`.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from mk8s import net
from mk8s.errors import InputError
from mk8s.untrusted import shown

REPO = "rancher/rke2"
DEFAULT_API_URL = "https://api.github.com"
DEFAULT_RELEASE_URL = f"https://github.com/{REPO}/releases/download"
DEFAULT_RAW_URL = f"https://raw.githubusercontent.com/{REPO}"
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
