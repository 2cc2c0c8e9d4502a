"""What the release server's answers mean, and reading a small one whole.

GitHub (or a mirror) answers through :mod:`mk8s.net` like any server; here its answers
are judged: a rate limit says when it resets, a status worth retrying (the one policy
of :func:`mk8s.net.retryable`) is retried, any other error names the URL and a fix.
:func:`judge` serves both the release list (:func:`get_document`) and the downloads
(:mod:`.transfer`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests

from mk8s import net
from mk8s.bundle.upstream.settings import AUTH_HINT, UpstreamSettings, redact_url
from mk8s.errors import UpstreamError
from mk8s.untrusted import shown

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


def judge(
    r: requests.Response,
    url: str,
    what: str,
    settings: UpstreamSettings,
    *,
    resuming: bool = False,
) -> None:
    """Raise for an answer that is not ``what``: the rate limit (unless a 429 asks for a
    short wait), :class:`mk8s.net.RetryStatus` for what to retry, UpstreamError for any
    other error status. ``resuming``: a 416 passes (the offset asked for is past the
    server's end; :class:`mk8s.net.RangeDownload` starts over)."""
    limited = rate_limit_error(r, url)
    if limited is not None and (
        r.status_code != 429 or net.retry_after(r, settings.backoff_max) is None
    ):
        raise limited
    retry = net.retryable(r, settings.backoff_max)
    if retry is not None:
        raise retry
    if r.status_code == 416 and resuming:
        return
    if r.status_code >= 400:
        raise status_error(r, redact_url(url), what)


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


def unfollowable(url: str, what: str, e: requests.RequestException) -> UpstreamError:
    """A redirect or URL mk8s cannot follow (not worth a retry)."""
    return UpstreamError(
        f"cannot follow {shown(url, limit=300)} for {what} ({shown(e, limit=160)})",
        "check the MK8S_* URLs and the server",
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
    shown_url = shown(url, limit=300)

    def once() -> Document:
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
            judge(r, url, what, settings)
            data = net.read_body(r, cap, what=f"{what} at {shown_url}", error=UpstreamError)
            return Document(data, r.headers, r.links)

    def spent(last: str, tries: int) -> UpstreamError:
        if last.startswith("HTTP "):
            return UpstreamError(
                f"{shown_url} answered {last} for {what} after {tries} attempts",
                "the server is failing; try again later",
            )
        return UpstreamError(
            f"cannot reach {shown_url} for {what} after {tries} attempts ({last})",
            "check the network, proxy settings and the MK8S_* URLs",
        )

    budget = net.RetryBudget(settings.policy, 2 * deadline, sleep=sleep)
    return net.retrying(once, budget, unusable=lambda e: unfollowable(url, what, e), spent=spent)
