"""Answering a registry's ``WWW-Authenticate`` challenge: HTTP basic, or a bearer token
from the registry's token service (what Docker Hub, ghcr.io and Harbor do).

The token answer is outside input like any other: read with a deadline and a
:data:`mk8s.net.MAX_SMALL` byte cap, parsed by :func:`mk8s.untrusted.load_json` (so no
nesting or size can raise anything but :class:`RegistryAuthError`). The realm must be
an ``https`` URL before credentials are sent to it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import requests

from mk8s import net
from mk8s.images.errors import RegistryAuthError
from mk8s.untrusted import load_json

if TYPE_CHECKING:
    from mk8s.images.client import RegistryClient

_PARAM = re.compile(r'(\w+)\s*=\s*"([^"]*)"')


def answer(client: RegistryClient, challenge: str, scope: str) -> None:
    """Prepare the client to retry with credentials: basic up front, or a token for
    ``scope``. Raises RegistryAuthError when it cannot."""
    kind = challenge.split(" ", 1)[0].lower()
    params = dict(_PARAM.findall(challenge))
    if kind == "basic":
        if client.credentials is None:
            raise client.needs_credentials()
        if client.basic:
            raise client.refused()
        client.basic = True
    elif kind == "bearer" and params.get("realm"):
        client.tokens[scope] = fetch_token(client, params, scope)
    else:
        raise RegistryAuthError(
            f"{client.registry} asked for an authentication scheme mk8s does not speak",
            "use a registry with basic or token authentication",
        )


def fetch_token(client: RegistryClient, params: Mapping[str, str], scope: str) -> str:
    realm = params["realm"]
    parts = urlsplit(realm)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RegistryAuthError(
            f"{client.registry} names a token service that is not an http(s) URL",
            "check the registry's auth configuration",
        )
    # A challenge may name several scopes, space-separated (a cross-repository mount
    # needs push on one repository and pull on another): one parameter each.
    query: dict[str, str | list[str]] = {"scope": (params.get("scope") or scope).split()}
    if params.get("service"):
        query["service"] = params["service"]
    headers: dict[str, str] = {}
    if client.credentials is not None:
        if parts.scheme != "https" and not client.settings.plain_http:
            raise RegistryAuthError(
                f"{client.registry} sends credentials to a token service without TLS",
                "refusing to send the password in clear; fix the registry's token realm",
            )
        headers["Authorization"] = client.credentials.basic_header()
    try:
        r = net.send(
            client.session,
            "GET",
            realm,
            params=query,
            headers=headers,
            timeout=client.settings.timeout,
            verify=client.verify,
            stream=True,
            limits=client.limits,
            deadline=client.limits.deadline(net.MAX_SMALL),
        )
    except requests.exceptions.SSLError as e:
        raise client.tls_error(e) from e
    with r:
        if r.status_code in (401, 403):
            raise client.refused() if client.credentials else client.needs_credentials()
        if r.status_code in net.RETRY_STATUS:
            raise net.RetryStatus(
                f"token service HTTP {r.status_code}",
                net.retry_after(r, client.settings.backoff_max),
            )
        if r.status_code != 200:
            raise _no_token(client, f"answered HTTP {r.status_code}")
        data = net.read_body(r, net.MAX_SMALL, what="the token answer", error=RegistryAuthError)
    what = f"the token answer of {client.registry}"
    doc = load_json(data, what=what, error=RegistryAuthError, max_bytes=net.MAX_SMALL)
    token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
    if not isinstance(token, str) or not token or len(token) > net.MAX_SMALL:
        raise _no_token(client, "answered without a token")
    if any(ord(c) < 0x21 or ord(c) > 0x7E for c in token):
        raise _no_token(client, "answered a token that cannot go in a header")
    return token


def _no_token(client: RegistryClient, what: str) -> RegistryAuthError:
    return RegistryAuthError(
        f"the token service of {client.registry} {what}",
        "check the registry's auth configuration",
    )
