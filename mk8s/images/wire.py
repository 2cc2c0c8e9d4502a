"""The wire of the registry client: one registry reached through :mod:`mk8s.net`.

:class:`Wire` owns what every call to a registry shares: TLS (system CAs, or a given
CA file), authentication (:class:`mk8s.images.challenge.RegistryAuth` answers a 401),
the retries of :func:`mk8s.net.retrying` on connection errors, timeouts, 5xx and 429
(honouring a short ``Retry-After``), a deadline on every request, and what an error
status means. Its public methods are the whole wire: the API calls
(:mod:`mk8s.images.client`) and the blob transfers (:mod:`mk8s.images.blobs`) use
nothing else.

Everything a registry says is outside input: an answer mk8s only glances at is read
up to 64 KiB (:class:`Reply`), and the one-line summary of an error body goes through
:func:`mk8s.untrusted.shown` with the credentials and tokens masked.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import requests

from mk8s import net
from mk8s.errors import (
    ImageNotFound,
    Mk8sError,
    RegistryAuthError,
    RegistryError,
    RegistryTLSError,
)
from mk8s.images.auth import Credentials, find_credentials
from mk8s.images.challenge import RegistryAuth
from mk8s.images.model import MAX_MANIFEST
from mk8s.images.reference import DOCKER_HUB, DOCKER_HUB_API
from mk8s.untrusted import load_json, shown

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class RegistryClientSettings:
    """How to reach registries. ``ca_file`` None trusts the system CAs (and
    ``REQUESTS_CA_BUNDLE`` / ``SSL_CERT_FILE``); ``use_docker_config`` looks credentials
    up in the Docker config when none are given; ``plain_http`` is for registries
    without TLS. ``retries`` counts stalled retries after the first try; delays double
    from ``backoff`` up to ``backoff_max`` seconds (see :class:`mk8s.net.RetryBudget`).
    Uploads go in ``chunk_size`` pieces. ``env`` (default: the process environment)
    also carries the deadlines of :class:`mk8s.net.Limits`."""

    ca_file: Path | None = None
    use_docker_config: bool = True
    plain_http: bool = False
    retries: int = 4
    backoff: float = 0.5
    backoff_max: float = 8.0
    connect_timeout: float = 15.0
    read_timeout: float = 60.0
    chunk_size: int = 8 << 20
    env: Mapping[str, str] | None = field(default=None, repr=False)

    @property
    def policy(self) -> net.RetryPolicy:
        return net.RetryPolicy(self.retries, self.backoff, self.backoff_max)

    @property
    def timeout(self) -> tuple[float, float]:
        return (self.connect_timeout, self.read_timeout)


@dataclass
class ClientStats:
    """What a client did: requests by method, blobs moved and skipped, bytes moved."""

    requests: Counter[str] = field(default_factory=Counter)
    blobs_uploaded: int = 0
    blobs_mounted: int = 0
    bytes_uploaded: int = 0
    bytes_downloaded: int = 0
    retries: int = 0


@dataclass(frozen=True)
class Reply:
    """A registry's answer whose body mk8s only glances at: at most 64 KiB of it."""

    status_code: int
    headers: Mapping[str, str]
    body: bytes

    @classmethod
    def of(cls, r: requests.Response) -> Reply:
        return cls(r.status_code, r.headers, net.peek_body(r))


class Wire:
    """One registry (``host[:port]``; ``docker.io`` works) on the wire."""

    def __init__(
        self,
        registry: str,
        settings: RegistryClientSettings | None = None,
        *,
        credentials: Credentials | None = None,
        session: requests.Session | None = None,
    ) -> None:
        self.registry = registry
        self.settings = settings or RegistryClientSettings()
        self.limits = net.Limits.from_env(self.settings.env)
        if credentials is None and self.settings.use_docker_config:
            credentials = find_credentials(registry, self.settings.env)
        self.auth = RegistryAuth(
            registry,
            credentials,
            plain_http=self.settings.plain_http,
            longest_wait=self.settings.backoff_max,
        )
        host = DOCKER_HUB_API if registry == DOCKER_HUB else registry
        scheme = "http" if self.settings.plain_http else "https"
        self.base_url = f"{scheme}://{host}"
        self.session = session or net.new_session()
        # Passed with every request: a session's own ``verify`` loses to
        # REQUESTS_CA_BUNDLE when trust_env is on (a requests quirk), a given CA must not.
        self.verify: str | None = str(self.settings.ca_file) if self.settings.ca_file else None
        self.stats = ClientStats()

    def close(self) -> None:
        self.session.close()

    def request(
        self,
        method: str,
        url: str,
        repository: str,
        *,
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
        push: bool = False,
        retry: bool = True,
    ) -> Reply:
        """One API call with authentication and retries: the final answer (any status,
        the caller judges it with :meth:`expect`; at most 64 KiB of body), or
        RegistryError."""

        def once() -> Reply:
            with self.open(method, url, repository, headers, data=data, push=push) as r:
                return Reply.of(r)

        return self.retrying(method, url, once, retry=retry, sending=len(data or b""))

    def retrying(
        self, method: str, url: str, once: Callable[[], T], *, retry: bool = True, sending: int = 0
    ) -> T:
        """``once()`` until it returns, within one :class:`~mk8s.net.RetryBudget`
        (:func:`mk8s.net.retrying`); without ``retry``, one try."""
        where = shown(url_path(url), limit=120)
        seconds = 2 * self.limits.deadline(MAX_MANIFEST + sending)
        policy = self.settings.policy if retry else net.RetryPolicy(retries=0)

        def unusable(e: requests.RequestException) -> RegistryError:
            return RegistryError(
                f"{method} {where} on {self.registry} failed"
                f" ({shown(e, limit=160, secrets=self.auth.secrets)})",
                "the registry does not follow the distribution API; check it",
            )

        def spent(last: str, tries: int) -> RegistryError:
            return RegistryError(
                f"{method} {where} on {self.registry} failed after {tries} attempts ({last})",
                "check the network and that the registry is up, then run the command again",
            )

        def retried(last: str) -> None:
            self.stats.retries += 1
            log.debug("%s %s: %s, retrying", method, where, last)

        budget = net.RetryBudget(policy, seconds)
        return net.retrying(once, budget, unusable=unusable, spent=spent, retried=retried)

    def open(
        self,
        method: str,
        url: str,
        repository: str,
        headers: Mapping[str, str] | None,
        *,
        data: bytes | None = None,
        push: bool = False,
        deadline: float | None = None,
    ) -> requests.Response:
        """One authenticated request, its answer to stream (the caller closes it): a
        401 is answered once (:class:`RegistryAuth`), a status worth retrying raises
        :class:`mk8s.net.RetryStatus`."""
        scope = f"repository:{repository}:{'pull,push' if push else 'pull'}"
        if deadline is None:
            deadline = self.limits.deadline(MAX_MANIFEST + len(data or b""))
        r = self._send(method, url, headers, data, scope, deadline)
        if r.status_code == 401:
            found = r.headers.get("WWW-Authenticate", "")
            r.close()
            self.auth.answer(found, scope, self._token_request)
            r = self._send(method, url, headers, data, scope, deadline)
            if r.status_code == 401:
                r.close()
                auth = self.auth
                raise auth.refused() if auth.credentials else auth.needs_credentials()
        retry = net.retryable(r, self.settings.backoff_max)
        if retry is not None:
            r.close()
            raise retry
        return r

    def open_blob(
        self, url: str, repository: str, headers: dict[str, str], deadline: float, digest: str
    ) -> requests.Response:
        """One GET of a blob for :class:`mk8s.net.RangeDownload`: a response to stream
        (200, 206, or 416 on a resume), else the error it means."""
        r = self.open("GET", url, repository, headers, deadline=deadline)
        if r.status_code not in (200, 206) and not (r.status_code == 416 and "Range" in headers):
            with r:
                self.expect(Reply.of(r), (200, 206), f"blob {digest} in {repository}")
        return r

    def expect(self, r: Reply, ok: tuple[int, ...], what: str) -> None:
        """Nothing when ``r`` has a status in ``ok``; else the error it means, naming
        ``what`` and the registry's own error codes."""
        if r.status_code in ok:
            return
        detail = error_codes(r.body, self.auth.secrets)
        if r.status_code == 404:
            raise ImageNotFound(
                f"{self.registry} has no {what}{detail}",
                "check the image name, tag and digest",
            )
        if r.status_code == 403:
            raise RegistryAuthError(
                f"{self.registry} denied {what}{detail}",
                "the user lacks permission; check the registry's access rules",
            )
        raise RegistryError(
            f"{self.registry} answered HTTP {r.status_code} for {what}{detail}",
            "check the registry's logs",
        )

    def tls_error(self, e: requests.exceptions.SSLError) -> RegistryTLSError:
        reason = (
            "certificate verify failed" if "CERTIFICATE_VERIFY_FAILED" in str(e) else "TLS failed"
        )
        return RegistryTLSError(
            f"cannot verify the TLS certificate of {self.registry} ({reason})",
            "give the CA that signed the registry's certificate (caFile), "
            "or check that the address is the registry's",
        )

    def _send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        data: bytes | None,
        scope: str,
        deadline: float,
    ) -> requests.Response:
        h = dict(headers or {})
        auth = self.auth.header(scope)
        if auth is not None:
            h["Authorization"] = auth
        self.stats.requests[method] += 1
        try:
            return net.send(
                self.session,
                method,
                url,
                headers=h,
                data=data,
                stream=True,
                timeout=self.settings.timeout,
                allow_redirects=True,
                verify=self.verify,
                limits=self.limits,
                deadline=deadline,
            )
        except requests.exceptions.SSLError as e:
            raise self.tls_error(e) from e

    def _token_request(
        self, realm: str, query: Mapping[str, str | list[str]], headers: Mapping[str, str]
    ) -> requests.Response:
        try:
            return net.send(
                self.session,
                "GET",
                realm,
                params=query,
                headers=headers,
                timeout=self.settings.timeout,
                verify=self.verify,
                stream=True,
                limits=self.limits,
                deadline=self.limits.deadline(net.MAX_SMALL),
            )
        except requests.exceptions.SSLError as e:
            raise self.tls_error(e) from e


def error_codes(body: bytes, secrets: Iterable[str] = ()) -> str:
    """`` (CODE: message; ...)`` from a distribution error body, if it has one: shown
    as one line, capped, with ``secrets`` (and any credential) masked."""

    def unusable(problem: str) -> Mk8sError:
        return RegistryError(problem)

    try:
        doc = load_json(body, what="an error body", error=unusable, max_bytes=net.MAX_SMALL)
    except RegistryError:
        return ""
    errors = doc.get("errors") if isinstance(doc, dict) else None
    if not isinstance(errors, list):
        return ""
    parts = [f"{e.get('code')}: {e.get('message')}" for e in errors[:10] if isinstance(e, dict)]
    return f" ({shown('; '.join(parts), limit=300, secrets=secrets)})" if parts else ""


def url_path(url: str) -> str:
    """A URL's path without its query (upload URLs carry state in the query)."""
    return urlsplit(url).path


__all__ = ["ClientStats", "RegistryClientSettings", "Reply", "Wire", "error_codes", "url_path"]
