"""A small client for the OCI distribution API, on ``requests``.

It owns the wire: TLS (system CAs, or a given CA file), authentication (HTTP basic,
or bearer tokens from the registry's token realm, with basic credentials or
anonymously), retries with backoff on connection errors, timeouts, 5xx and 429
(honouring a short ``Retry-After``), resuming a cut blob download with ``Range``, and
checking every byte against its digest while it streams. Uploads go in bounded chunks
(each chunk is re-sent on a transient failure), are hashed while they stream, and are
only committed (``PUT ?digest=``) when the hash matches; a mismatch cancels the upload.

It never logs or raises a header, a password or a token; messages name the registry,
the repository and the digest.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from typing import BinaryIO
from urllib.parse import urlencode, urljoin, urlsplit

import requests

from mk8s.callbacks import TransferProgress
from mk8s.images.auth import Credentials, find_credentials
from mk8s.images.errors import (
    ImageNotFound,
    RegistryAuthError,
    RegistryError,
    RegistryTLSError,
)
from mk8s.images.model import ACCEPT, MAX_MANIFEST, Manifest, media_type_of, sha256_digest
from mk8s.images.reference import DOCKER_HUB, DOCKER_HUB_API
from mk8s.images.transfer import (
    RETRY_STATUS,
    TRANSIENT,
    ClientStats,
    Download,
    RegistrySettings,
    error_codes,
    mismatch,
    new_session,
    read_capped,
    retry_after,
    url_path,
)
from mk8s.images.upload import cancel_upload

log = logging.getLogger(__name__)

_CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*"([^"]*)"')


class _Retry(Exception):
    def __init__(self, reason: str, wait: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.wait = wait


class RegistryClient:
    """The distribution API of one registry (``host[:port]``; ``docker.io`` works)."""

    def __init__(
        self,
        registry: str,
        settings: RegistrySettings | None = None,
        *,
        credentials: Credentials | None = None,
        session: requests.Session | None = None,
    ) -> None:
        self.registry = registry
        self.settings = settings or RegistrySettings()
        if credentials is None and self.settings.use_docker_config:
            credentials = find_credentials(registry, self.settings.env)
        self._credentials = credentials
        host = DOCKER_HUB_API if registry == DOCKER_HUB else registry
        scheme = "http" if self.settings.plain_http else "https"
        self.base_url = f"{scheme}://{host}"
        self.session = session or new_session()
        # Passed with every request: a session's own ``verify`` loses to
        # REQUESTS_CA_BUNDLE when trust_env is on (a requests quirk), a given CA must not.
        self._verify: str | None = str(self.settings.ca_file) if self.settings.ca_file else None
        self.stats = ClientStats()
        self._basic = False  # the registry asked for basic auth: send it up front
        self._tokens: dict[str, str] = {}  # bearer token by scope
        self.known_blobs: dict[str, str] = {}
        """digest -> a repository seen holding it: the source of cross-repository mounts."""

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- API: manifests ------------------------------------------------------------------
    def get_manifest(self, repository: str, ref: str, *, image: str) -> Manifest:
        """GET a manifest or index by tag or digest; its bytes are checked.

        By digest: the bytes must hash to it. By tag: the digest is computed from the
        bytes, and must equal the registry's ``Docker-Content-Digest`` when sent.
        Raises ChecksumMismatch (naming ``image`` and both digests), ImageNotFound,
        RegistryAuthError, RegistryTLSError or RegistryError.
        """
        url = f"{self.base_url}/v2/{repository}/manifests/{ref}"
        with self._request("GET", url, repository, headers={"Accept": ACCEPT}, stream=True) as r:
            self._expect(r, (200,), f"manifest {ref} of {repository}")
            data = read_capped(r, MAX_MANIFEST, f"the manifest of {image}")
            header_digest = r.headers.get("Docker-Content-Digest")
            content_type = r.headers.get("Content-Type")
        got = sha256_digest(data)
        want = ref if ref.startswith("sha256:") else header_digest
        if want and want != got:
            raise mismatch(image, "manifest", want, got)
        return Manifest(data, media_type_of(data, f"the manifest of {image}", content_type), got)

    def manifest_digest(self, repository: str, ref: str) -> str | None:
        """HEAD a manifest: its digest, or None when the registry has no such ref."""
        url = f"{self.base_url}/v2/{repository}/manifests/{ref}"
        with self._request("HEAD", url, repository, headers={"Accept": ACCEPT}) as r:
            if r.status_code == 404:
                return None
            self._expect(r, (200,), f"manifest {ref} of {repository}")
            return r.headers.get("Docker-Content-Digest")

    def put_manifest(self, repository: str, ref: str, manifest: Manifest) -> str:
        """PUT the exact bytes of ``manifest`` under a tag or its digest.

        Returns the digest, after checking the registry computed the same one.
        """
        if sha256_digest(manifest.data) != manifest.digest:
            raise mismatch(
                f"{repository}:{ref}", "manifest", manifest.digest, sha256_digest(manifest.data)
            )
        url = f"{self.base_url}/v2/{repository}/manifests/{ref}"
        headers = {"Content-Type": manifest.media_type}
        with self._request(
            "PUT", url, repository, headers=headers, data=manifest.data, push=True
        ) as r:
            self._expect(r, (201, 200), f"pushing manifest {ref} to {repository}")
            got = r.headers.get("Docker-Content-Digest")
        if got and got != manifest.digest:
            raise mismatch(f"{self.registry}/{repository}:{ref}", "manifest", manifest.digest, got)
        return manifest.digest

    # -- API: blobs ----------------------------------------------------------------------
    def blob_exists(self, repository: str, digest: str) -> bool:
        """HEAD a blob in ``repository``."""
        url = f"{self.base_url}/v2/{repository}/blobs/{digest}"
        with self._request("HEAD", url, repository) as r:
            if r.status_code == 404:
                return False
            self._expect(r, (200,), f"blob {digest} of {repository}")
        self.known_blobs.setdefault(digest, repository)
        return True

    def download_blob(
        self,
        repository: str,
        digest: str,
        out: BinaryIO,
        *,
        image: str,
        progress: TransferProgress | None = None,
    ) -> int:
        """Stream a blob into ``out`` (empty, writable, seekable); return its size.

        A cut transfer resumes with ``Range: bytes=N-`` (or restarts when the registry
        answers 200 or a wrong ``Content-Range``). The bytes are hashed as they arrive;
        raises ChecksumMismatch naming ``image`` and both digests if they differ.
        """
        dl = Download(self, repository, digest, out, progress)
        dl.run()
        got = "sha256:" + dl.hasher.hexdigest()
        if got != digest:
            raise mismatch(image, "blob", digest, got)
        self.stats.bytes_downloaded += dl.done
        return dl.done

    def mount_blob(self, repository: str, digest: str, source_repository: str) -> bool:
        """Ask the registry to link a blob it holds in another repository (no bytes
        move). True when mounted; False when it wants an upload instead."""
        query = urlencode({"mount": digest, "from": source_repository})
        url = f"{self.base_url}/v2/{repository}/blobs/uploads/?{query}"
        with self._request("POST", url, repository, data=b"", push=True) as r:
            if r.status_code == 201:
                self.stats.blobs_mounted += 1
                self.known_blobs.setdefault(digest, repository)
                return True
            self._expect(r, (202,), f"mounting {digest} into {repository}")
            location = r.headers.get("Location")
        if location:  # an upload session we will not use
            cancel_upload(self, repository, urljoin(self.base_url, location))
        return False

    def upload_blob(
        self,
        repository: str,
        digest: str,
        size: int,
        source: BinaryIO,
        *,
        image: str,
        progress: TransferProgress | None = None,
    ) -> None:
        """Upload ``size`` bytes from ``source`` as blob ``digest`` (see
        :func:`mk8s.images.upload.upload_blob`); ChecksumMismatch if they differ."""
        from mk8s.images.upload import upload_blob

        upload_blob(self, repository, digest, size, source, image=image, progress=progress)

    # -- requests ------------------------------------------------------------------------
    def _request(
        self,
        method: str,
        url: str,
        repository: str,
        *,
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
        stream: bool = False,
        push: bool = False,
        retry: bool = True,
    ) -> requests.Response:
        """One API call with authentication and retries; returns the final response
        (any status, the caller judges it) or raises RegistryError after the retries."""
        attempts = self.settings.retries + 1 if retry else 1
        last = ""
        for attempt in range(attempts):
            if attempt:
                self.stats.retries += 1
            try:
                return self._authed(method, url, repository, headers, data, stream, push)
            except _Retry as e:
                last = e.reason
                wait = e.wait if e.wait is not None else self.settings.backoff_delay(attempt)
            except requests.exceptions.SSLError as e:
                raise self._tls_error(e) from e
            except TRANSIENT as e:
                last = type(e).__name__
                wait = self.settings.backoff_delay(attempt)
            if attempt + 1 < attempts:
                log.debug("%s %s: %s, retrying in %.1fs", method, url_path(url), last, wait)
                time.sleep(wait)
        raise RegistryError(
            f"{method} {url_path(url)} on {self.registry} failed after {attempts}"
            f" attempts ({last})",
            "check the network and that the registry is up, then run the command again",
        )

    def _authed(
        self,
        method: str,
        url: str,
        repository: str,
        headers: Mapping[str, str] | None,
        data: bytes | None,
        stream: bool,
        push: bool,
    ) -> requests.Response:
        scope = f"repository:{repository}:{'pull,push' if push else 'pull'}"
        r = self._send(method, url, headers, data, stream, scope)
        if r.status_code == 401:
            challenge = r.headers.get("WWW-Authenticate", "")
            r.close()
            self._answer_challenge(challenge, scope)
            r = self._send(method, url, headers, data, stream, scope)
            if r.status_code == 401:
                r.close()
                raise self._refused() if self._credentials else self._needs_credentials()
        if r.status_code in RETRY_STATUS:
            wait = retry_after(r, self.settings)
            r.close()
            raise _Retry(f"HTTP {r.status_code}", wait)
        return r

    def _send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        data: bytes | None,
        stream: bool,
        scope: str,
    ) -> requests.Response:
        h = dict(headers or {})
        auth = self._auth_header(scope)
        if auth is not None:
            h["Authorization"] = auth
        self.stats.requests[method] += 1
        timeout = (self.settings.connect_timeout, self.settings.read_timeout)
        return self.session.request(
            method,
            url,
            headers=h,
            data=data,
            stream=stream,
            timeout=timeout,
            allow_redirects=True,
            verify=self._verify,
        )

    def _auth_header(self, scope: str) -> str | None:
        token = self._tokens.get(scope)
        if token is not None:
            return f"Bearer {token}"
        if self._basic and self._credentials is not None:
            return self._credentials.basic_header()
        return None

    def _answer_challenge(self, challenge: str, scope: str) -> None:
        kind = challenge.split(" ", 1)[0].lower()
        params = dict(_CHALLENGE_PARAM.findall(challenge))
        if kind == "basic":
            if self._credentials is None:
                raise self._needs_credentials()
            if self._basic:
                raise self._refused()
            self._basic = True
        elif kind == "bearer" and params.get("realm"):
            self._tokens[scope] = self._fetch_token(params, scope)
        else:
            raise RegistryAuthError(
                f"{self.registry} asked for an authentication scheme mk8s does not speak",
                "use a registry with basic or token authentication",
            )

    def _fetch_token(self, params: Mapping[str, str], scope: str) -> str:
        realm = params["realm"]
        # A challenge may name several scopes, space-separated (a cross-repository
        # mount needs push on one repository and pull on another): one parameter each.
        query: dict[str, str | list[str]] = {"scope": (params.get("scope") or scope).split()}
        if params.get("service"):
            query["service"] = params["service"]
        headers: dict[str, str] = {}
        if self._credentials is not None:
            if urlsplit(realm).scheme != "https" and not self.settings.plain_http:
                raise RegistryAuthError(
                    f"{self.registry} sends credentials to a token service without TLS",
                    "refusing to send the password in clear; fix the registry's token realm",
                )
            headers["Authorization"] = self._credentials.basic_header()
        timeout = (self.settings.connect_timeout, self.settings.read_timeout)
        try:
            r = self.session.get(
                realm, params=query, headers=headers, timeout=timeout, verify=self._verify
            )
        except requests.exceptions.SSLError as e:
            raise self._tls_error(e) from e
        except TRANSIENT as e:
            raise _Retry(f"token service: {type(e).__name__}") from e
        with r:
            if r.status_code in (401, 403):
                raise self._refused() if self._credentials else self._needs_credentials()
            if r.status_code in RETRY_STATUS:
                raise _Retry(f"token service HTTP {r.status_code}", retry_after(r, self.settings))
            try:
                doc = r.json()
                token = doc.get("token") or doc.get("access_token")
            except (ValueError, AttributeError):
                token = None
            if r.status_code != 200 or not isinstance(token, str) or not token:
                raise RegistryAuthError(
                    f"the token service of {self.registry} answered HTTP {r.status_code} "
                    "without a token",
                    "check the registry's auth configuration",
                )
            return token

    # -- errors ----------------------------------------------------------------------------
    def _refused(self) -> RegistryAuthError:
        user = self._credentials.username if self._credentials else "anonymous"
        return RegistryAuthError(
            f"{self.registry} refused the credentials of user {user!r}",
            "check the username and password (or docker login again)",
        )

    def _needs_credentials(self) -> RegistryAuthError:
        return RegistryAuthError(
            f"{self.registry} requires credentials and none were found",
            "log in with docker login, or give a username and password file",
        )

    def _tls_error(self, e: requests.exceptions.SSLError) -> RegistryTLSError:
        reason = (
            "certificate verify failed" if "CERTIFICATE_VERIFY_FAILED" in str(e) else "TLS failed"
        )
        return RegistryTLSError(
            f"cannot verify the TLS certificate of {self.registry} ({reason})",
            "give the CA that signed the registry's certificate (caFile), "
            "or check that the address is the registry's",
        )

    def _expect(
        self,
        r: requests.Response,
        ok: tuple[int, ...],
        what: str,
    ) -> None:
        if r.status_code in ok:
            return
        detail = error_codes(r)
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


__all__ = ["ClientStats", "RegistryClient", "RegistrySettings"]
