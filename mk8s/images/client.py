"""A small client for the OCI distribution API, on ``requests`` through :mod:`mk8s.net`.

It owns the wire: TLS (system CAs, or a given CA file), authentication (basic, or
bearer tokens: :mod:`.challenge`), retries within one budget on connection errors,
timeouts, 5xx and 429 (honouring a short ``Retry-After``), a deadline on every request,
resumed blob downloads checked against digest and declared size as they stream, and
chunked uploads committed (``PUT ?digest=``) only when the hash matches.

Everything a registry says is outside input: manifests are read with a 4 MiB cap, error
and token bodies with 64 KiB, and any text shown goes through
:func:`mk8s.untrusted.shown` with this client's password and tokens masked.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import BinaryIO, TypeVar
from urllib.parse import urlencode, urljoin

import requests

from mk8s import net
from mk8s.callbacks import TransferProgress
from mk8s.images import challenge
from mk8s.images.auth import Credentials, find_credentials
from mk8s.images.errors import (
    ImageNotFound,
    RegistryAuthError,
    RegistryError,
    RegistryTLSError,
)
from mk8s.images.model import ACCEPT, MAX_MANIFEST, Manifest, media_type_of, sha256_digest
from mk8s.images.reference import DOCKER_HUB, DOCKER_HUB_API, is_digest
from mk8s.images.transfer import (
    ClientStats,
    RegistrySettings,
    Reply,
    download,
    error_codes,
    mismatch,
    url_path,
)
from mk8s.images.upload import cancel_upload
from mk8s.untrusted import shown

log = logging.getLogger(__name__)
T = TypeVar("T")


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
        self.limits = net.Limits.from_env(self.settings.env)
        if credentials is None and self.settings.use_docker_config:
            credentials = find_credentials(registry, self.settings.env)
        self.credentials = credentials
        host = DOCKER_HUB_API if registry == DOCKER_HUB else registry
        scheme = "http" if self.settings.plain_http else "https"
        self.base_url = f"{scheme}://{host}"
        self.session = session or net.new_session()
        # Passed with every request: a session's own ``verify`` loses to
        # REQUESTS_CA_BUNDLE when trust_env is on (a requests quirk), a given CA must not.
        self.verify: str | None = str(self.settings.ca_file) if self.settings.ca_file else None
        self.stats = ClientStats()
        self.basic = False  # the registry asked for basic auth: send it up front
        self.tokens: dict[str, str] = {}  # bearer token by scope
        self.known_blobs: dict[str, str] = {}
        """digest -> a repository seen holding it: the source of cross-repository mounts."""

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def secrets(self) -> list[str]:
        """What no message may show: the password, the basic header, the tokens."""
        out = list(self.tokens.values())
        if self.credentials is not None:
            out += [self.credentials.password, self.credentials.basic_header().split()[1]]
        return out

    # -- API: manifests ------------------------------------------------------------------
    def get_manifest(self, repository: str, ref: str, *, image: str) -> Manifest:
        """GET a manifest or index by tag or digest; its bytes are checked.

        By digest: the bytes must hash to it. By tag: the digest is computed from the
        bytes, and must equal the registry's ``Docker-Content-Digest`` when sent.
        Raises ChecksumMismatch (naming ``image`` and both digests), ImageNotFound,
        RegistryAuthError, RegistryTLSError or RegistryError.
        """
        url = f"{self.base_url}/v2/{repository}/manifests/{ref}"

        def once() -> tuple[bytes, str | None, str | None]:
            with self._authed("GET", url, repository, {"Accept": ACCEPT}) as r:
                if r.status_code != 200:
                    self._expect(Reply.of(r), (200,), f"manifest {ref} of {repository}")
                data = net.read_body(
                    r, MAX_MANIFEST, what=f"the manifest of {image}", error=RegistryError
                )
                return data, r.headers.get("Docker-Content-Digest"), r.headers.get("Content-Type")

        data, header_digest, content_type = self._retrying("GET", url, once)
        if header_digest is not None and not is_digest(header_digest):
            raise RegistryError(
                f"{self.registry} sent {shown(header_digest, limit=80)!r} as the digest of"
                f" {image}, which is not a sha256 digest",
                "the registry does not follow the distribution API; check it",
            )
        got = sha256_digest(data)
        want = ref if ref.startswith("sha256:") else header_digest
        if want and want != got:
            raise mismatch(image, "manifest", want, got)
        return Manifest(data, media_type_of(data, f"the manifest of {image}", content_type), got)

    def manifest_digest(self, repository: str, ref: str) -> str | None:
        """HEAD a manifest: its digest, or None (no such ref, or no valid digest sent)."""
        url = f"{self.base_url}/v2/{repository}/manifests/{ref}"
        r = self._request("HEAD", url, repository, headers={"Accept": ACCEPT})
        if r.status_code == 404:
            return None
        self._expect(r, (200,), f"manifest {ref} of {repository}")
        got = r.headers.get("Docker-Content-Digest")
        return got if got is not None and is_digest(got) else None

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
        r = self._request("PUT", url, repository, headers=headers, data=manifest.data, push=True)
        self._expect(r, (201, 200), f"pushing manifest {ref} to {repository}")
        got = r.headers.get("Docker-Content-Digest")
        if got and got != manifest.digest:
            got = got if is_digest(got) else shown(got, limit=80)
            raise mismatch(f"{self.registry}/{repository}:{ref}", "manifest", manifest.digest, got)
        return manifest.digest

    # -- API: blobs ----------------------------------------------------------------------
    def blob_exists(self, repository: str, digest: str) -> bool:
        """HEAD a blob in ``repository``."""
        url = f"{self.base_url}/v2/{repository}/blobs/{digest}"
        r = self._request("HEAD", url, repository)
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
        size: int,
        image: str,
        progress: TransferProgress | None = None,
    ) -> int:
        """Stream a blob of ``size`` bytes (what its descriptor declares) into ``out``
        (empty, writable, seekable); return its size.

        A cut transfer resumes with ``Range: bytes=N-`` (or restarts when the registry
        answers 200 or a wrong ``Content-Range``); no byte past ``size`` is taken. The
        bytes are hashed as they arrive; raises ChecksumMismatch naming ``image`` and
        both digests (or both sizes) if they differ.
        """
        download(self, repository, digest, size, out, image=image, progress=progress)
        return size

    def mount_blob(self, repository: str, digest: str, source_repository: str) -> bool:
        """Ask the registry to link a blob it holds in another repository (no bytes
        move). True when mounted; False when it wants an upload instead."""
        query = urlencode({"mount": digest, "from": source_repository})
        url = f"{self.base_url}/v2/{repository}/blobs/uploads/?{query}"
        r = self._request("POST", url, repository, data=b"", push=True)
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
        push: bool = False,
        retry: bool = True,
    ) -> Reply:
        """One API call with authentication and retries: the final answer (any status,
        the caller judges it; at most 64 KiB of body), or RegistryError."""

        def once() -> Reply:
            with self._authed(method, url, repository, headers, data=data, push=push) as r:
                return Reply.of(r)

        return self._retrying(method, url, once, retry=retry, sending=len(data or b""))

    def _retrying(
        self, method: str, url: str, once: Callable[[], T], *, retry: bool = True, sending: int = 0
    ) -> T:
        """``once()`` until it returns, retrying what :mod:`mk8s.net` calls transient
        and :class:`~mk8s.net.RetryStatus` within one :class:`~mk8s.net.RetryBudget`."""
        seconds = 2 * self.limits.deadline(MAX_MANIFEST + sending)
        budget = net.RetryBudget(self.settings.policy, seconds)
        while True:
            wait, error = None, None
            try:
                return once()
            except net.RetryStatus as e:
                last, wait = e.reason, e.wait
            except net.TRANSIENT as e:
                last, error = net.reason(e), e
            except requests.RequestException as e:  # a redirect or URL mk8s cannot follow
                raise RegistryError(
                    f"{method} {shown(url_path(url), limit=120)} on {self.registry} failed"
                    f" ({shown(e, limit=160, secrets=self.secrets)})",
                    "the registry does not follow the distribution API; check it",
                ) from None
            if not retry or not budget.retry(wait=wait, error=error):
                raise RegistryError(
                    f"{method} {shown(url_path(url), limit=120)} on {self.registry} failed"
                    f" after {budget.tries + (not retry)} attempts ({last})",
                    "check the network and that the registry is up, then run the command again",
                )
            self.stats.retries += 1
            log.debug("%s %s: %s, retrying", method, shown(url_path(url), limit=120), last)

    def _blob_try(
        self, url: str, repository: str, headers: dict[str, str], deadline: float, digest: str
    ) -> requests.Response:
        """One GET of a blob for :func:`mk8s.images.transfer.download`: a response to
        stream (200, 206, or 416 on a resume), else the error it means."""
        r = self._authed("GET", url, repository, headers, deadline=deadline)
        if r.status_code not in (200, 206) and not (r.status_code == 416 and "Range" in headers):
            with r:
                self._expect(Reply.of(r), (200, 206), f"blob {digest} in {repository}")
        return r

    def _authed(
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
        scope = f"repository:{repository}:{'pull,push' if push else 'pull'}"
        if deadline is None:
            deadline = self.limits.deadline(MAX_MANIFEST + len(data or b""))
        r = self._send(method, url, headers, data, scope, deadline)
        if r.status_code == 401:
            found = r.headers.get("WWW-Authenticate", "")
            r.close()
            challenge.answer(self, found, scope)
            r = self._send(method, url, headers, data, scope, deadline)
            if r.status_code == 401:
                r.close()
                raise self.refused() if self.credentials else self.needs_credentials()
        if r.status_code in net.RETRY_STATUS:
            wait = net.retry_after(r, self.settings.backoff_max)
            r.close()
            raise net.RetryStatus(f"HTTP {r.status_code}", wait)
        return r

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
        auth = self._auth_header(scope)
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

    def _auth_header(self, scope: str) -> str | None:
        token = self.tokens.get(scope)
        if token is not None:
            return f"Bearer {token}"
        if self.basic and self.credentials is not None:
            return self.credentials.basic_header()
        return None

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

    def tls_error(self, e: requests.exceptions.SSLError) -> RegistryTLSError:
        reason = (
            "certificate verify failed" if "CERTIFICATE_VERIFY_FAILED" in str(e) else "TLS failed"
        )
        return RegistryTLSError(
            f"cannot verify the TLS certificate of {self.registry} ({reason})",
            "give the CA that signed the registry's certificate (caFile), "
            "or check that the address is the registry's",
        )

    def _expect(self, r: Reply, ok: tuple[int, ...], what: str) -> None:
        if r.status_code in ok:
            return
        detail = error_codes(r.body, self.secrets)
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
