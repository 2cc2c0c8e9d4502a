"""Answering a registry's ``WWW-Authenticate`` challenge: HTTP basic, or a bearer token
from the registry's token service (what Docker Hub, ghcr.io and Harbor do).

:class:`RegistryAuth` holds what a client knows to authenticate to one registry; the
wire (:mod:`mk8s.images.wire`) asks it for the ``Authorization`` header of a scope and
hands it each 401's challenge, with a function that sends the token request.

The token answer is outside input like any other: read with a deadline and a
:data:`mk8s.net.MAX_SMALL` byte cap, parsed by :func:`mk8s.untrusted.load_json` (so no
nesting or size can raise anything but :class:`RegistryAuthError`). The realm must be
an ``https`` URL before credentials are sent to it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

import requests

from mk8s import net
from mk8s.errors import RegistryAuthError
from mk8s.images.auth import Credentials
from mk8s.untrusted import load_json, shown

_PARAM = re.compile(r'(\w+)\s*=\s*"([^"]*)"')

#: ``get(realm, query, headers)``: the token service's answer, to stream.
TokenRequest = Callable[[str, Mapping[str, str | list[str]], Mapping[str, str]], requests.Response]


class RegistryAuth:
    """The credentials for one registry (None: anonymous), whether it asked for basic
    auth (then sent up front), and the bearer tokens it granted, by scope.
    ``plain_http``: the registry speaks no TLS, nor may its token service;
    ``longest_wait``: the longest ``Retry-After`` of the token service honoured."""

    def __init__(
        self,
        registry: str,
        credentials: Credentials | None,
        *,
        plain_http: bool = False,
        longest_wait: float = 0.0,
    ) -> None:
        self.registry = registry
        self.credentials = credentials
        self.plain_http = plain_http
        self.longest_wait = longest_wait
        self.basic = False
        self.tokens: dict[str, str] = {}

    @property
    def secrets(self) -> list[str]:
        """What no message may show: the password, the basic header, the tokens."""
        out = list(self.tokens.values())
        if self.credentials is not None:
            out += [self.credentials.password, self.credentials.basic_header().split()[1]]
        return out

    def header(self, scope: str) -> str | None:
        """The ``Authorization`` header for a request in ``scope``, if any."""
        token = self.tokens.get(scope)
        if token is not None:
            return f"Bearer {token}"
        if self.basic and self.credentials is not None:
            return self.credentials.basic_header()
        return None

    def answer(self, challenge: str, scope: str, get: TokenRequest) -> None:
        """Prepare to retry with credentials: basic up front, or a token for ``scope``
        (asked of the token service with ``get``). Raises RegistryAuthError when it
        cannot."""
        kind = challenge.split(" ", 1)[0].lower()
        params = dict(_PARAM.findall(challenge))
        if kind == "basic":
            if self.credentials is None:
                raise self.needs_credentials()
            if self.basic:
                raise self.refused()
            self.basic = True
        elif kind == "bearer" and params.get("realm"):
            self.tokens[scope] = self.fetch_token(params, scope, get)
        else:
            raise RegistryAuthError(
                f"{self.registry} asked for an authentication scheme mk8s does not speak",
                "use a registry with basic or token authentication",
            )

    def fetch_token(self, params: Mapping[str, str], scope: str, get: TokenRequest) -> str:
        realm = params["realm"]
        parts = urlsplit(realm)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RegistryAuthError(
                f"{self.registry} names a token service that is not an http(s) URL",
                "check the registry's auth configuration",
            )
        # A challenge may name several scopes, space-separated (a cross-repository mount
        # needs push on one repository and pull on another): one parameter each.
        query: dict[str, str | list[str]] = {"scope": (params.get("scope") or scope).split()}
        if params.get("service"):
            query["service"] = params["service"]
        headers: dict[str, str] = {}
        if self.credentials is not None:
            if parts.scheme != "https" and not self.plain_http:
                raise RegistryAuthError(
                    f"{self.registry} sends credentials to a token service without TLS",
                    "refusing to send the password in clear; fix the registry's token realm",
                )
            headers["Authorization"] = self.credentials.basic_header()
        with get(realm, query, headers) as r:
            if r.status_code in (401, 403):
                raise self.refused() if self.credentials else self.needs_credentials()
            retry = net.retryable(r, self.longest_wait, "token service HTTP")
            if retry is not None:
                raise retry
            if r.status_code != 200:
                raise self._no_token(f"answered HTTP {r.status_code}")
            data = net.read_body(r, net.MAX_SMALL, what="the token answer", error=RegistryAuthError)
        what = f"the token answer of {self.registry}"
        doc = load_json(data, what=what, error=RegistryAuthError, max_bytes=net.MAX_SMALL)
        token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
        if not isinstance(token, str) or not token or len(token) > net.MAX_SMALL:
            raise self._no_token("answered without a token")
        if any(ord(c) < 0x21 or ord(c) > 0x7E for c in token):
            raise self._no_token("answered a token that cannot go in a header")
        return token

    # -- errors ----------------------------------------------------------------------------
    def refused(self) -> RegistryAuthError:
        user = shown(self.credentials.username, limit=80) if self.credentials else "anonymous"
        return RegistryAuthError(
            f"{self.registry} refused the credentials of user {user!r}",
            "check the username and password (or docker login again)",
        )

    def needs_credentials(self) -> RegistryAuthError:
        return RegistryAuthError(
            f"{self.registry} requires credentials and none were found",
            "log in with docker login, or give a username and password file",
        )

    def _no_token(self, what: str) -> RegistryAuthError:
        return RegistryAuthError(
            f"the token service of {self.registry} {what}",
            "check the registry's auth configuration",
        )
