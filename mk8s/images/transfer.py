"""The transfer side of the registry client: settings, retries, blob downloads.

:class:`Download` fetches one blob across retries, resuming with ``Range`` and hashing
as it streams; the helpers read bounded bodies and build the error messages that name
the image and both digests on a mismatch.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import urlsplit

import requests

from mk8s import __version__
from mk8s.callbacks import TransferProgress
from mk8s.errors import ChecksumMismatch
from mk8s.images.errors import RegistryError

if TYPE_CHECKING:
    from mk8s.images.client import RegistryClient

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
TRANSIENT: tuple[type[BaseException], ...] = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)
CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
UPLOAD_RANGE = re.compile(r"^(?:bytes=)?0-(\d+)$")
READ = 1 << 16
"""Download read size: a cut connection loses at most this much already-received data
(urllib3 drops a partial read), and the resume asks only for the rest."""

"""``progress(digest, bytes_done, total)``; ``bytes_done`` may fall back to 0."""


@dataclass(frozen=True)
class RegistrySettings:
    """How to reach registries. ``ca_file`` None trusts the system CAs (and
    ``REQUESTS_CA_BUNDLE``); ``use_docker_config`` looks credentials up in the Docker
    config when none are given; ``plain_http`` is for registries without TLS.
    ``retries`` counts retries after the first try; delays double from ``backoff``
    up to ``backoff_max`` seconds. Uploads go in ``chunk_size`` pieces."""

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

    def backoff_delay(self, attempt: int) -> float:
        return float(min(self.backoff * (2**attempt), self.backoff_max))


@dataclass
class ClientStats:
    """What a client did: requests by method, blobs moved and skipped, bytes moved."""

    requests: Counter[str] = field(default_factory=Counter)
    blobs_uploaded: int = 0
    blobs_mounted: int = 0
    bytes_uploaded: int = 0
    bytes_downloaded: int = 0
    retries: int = 0


class Download:
    """One blob download across retries: bytes written and the running hash."""

    def __init__(
        self,
        client: RegistryClient,
        repository: str,
        digest: str,
        out: BinaryIO,
        progress: TransferProgress | None,
    ) -> None:
        self.client = client
        self.repository = repository
        self.digest = digest
        self.out = out
        self.progress = progress
        self.url = f"{client.base_url}/v2/{repository}/blobs/{digest}"
        self.done = 0
        self.total: int | None = None
        self.hasher = hashlib.sha256()

    def restart(self) -> None:
        self.out.seek(0)
        self.out.truncate()
        self.done = 0
        self.hasher = hashlib.sha256()

    def run(self) -> None:
        settings = self.client.settings
        failures = 0
        last = ""
        while True:
            before = self.done
            try:
                if self._attempt():
                    return
                last = "the connection closed early"
            except TRANSIENT as e:
                last = type(e).__name__
            # A try that moved bytes earns a fresh budget: a flaky link finishes, a dead
            # one still fails after ``retries`` tries.
            failures = 0 if self.done > before else failures + 1
            if failures > settings.retries:
                raise RegistryError(
                    f"downloading {self.digest} from {self.client.registry}/{self.repository} "
                    f"failed after {settings.retries + 1} attempts ({last})",
                    "check the network, then run the command again (finished blobs are cached)",
                )
            self.client.stats.retries += 1
            log.debug("blob %s cut at %d bytes (%s); resuming", self.digest, self.done, last)
            time.sleep(settings.backoff_delay(failures - 1) if failures else 0.0)

    def _attempt(self) -> bool:
        headers = {"Accept-Encoding": "identity"}
        if self.done:
            headers["Range"] = f"bytes={self.done}-"
        r = self.client._request("GET", self.url, self.repository, headers=headers, stream=True)
        with r:
            if r.status_code == 416 and self.done:
                self.restart()
                return False
            self.client._expect(r, (200, 206), f"blob {self.digest} in {self.repository}")
            self._place(r)
            for chunk in r.iter_content(READ):
                self.out.write(chunk)
                self.hasher.update(chunk)
                self.done += len(chunk)
                if self.progress is not None:
                    self.progress(self.digest, self.done, self.total)
        return self.total is None or self.done >= self.total

    def _place(self, r: requests.Response) -> None:
        if r.status_code == 206:
            m = CONTENT_RANGE.match(r.headers.get("Content-Range", ""))
            if m is None or int(m[1]) != self.done:
                self.restart()
                raise requests.exceptions.ChunkedEncodingError("bad Content-Range on resume")
            self.total = None if m[3] == "*" else int(m[3])
            return
        if self.done:
            self.restart()  # 200: the registry ignored Range and sends it all again
        length = r.headers.get("Content-Length", "")
        self.total = int(length) if length.isdigit() else None


# -- helpers --------------------------------------------------------------------------------
def new_session() -> requests.Session:
    s = requests.Session()
    s.trust_env = True  # proxies and REQUESTS_CA_BUNDLE, like any requests client
    s.headers["User-Agent"] = f"mk8s/{__version__}"
    return s


def mismatch(image: str, what: str, want: str, got: str) -> ChecksumMismatch:
    return ChecksumMismatch(
        f"{image}: {what} should be {want} but its bytes are {got}",
        "do not use it: the registry's copy is damaged or was tampered with; "
        "re-push the image or check the registry's storage",
    )


def read_capped(r: requests.Response, cap: int, what: str) -> bytes:
    buf = bytearray()
    for chunk in r.iter_content(65536):
        buf += chunk
        if len(buf) > cap:
            raise RegistryError(f"{what} is larger than {cap} bytes", "this is not a manifest")
    return bytes(buf)


def read_exact(source: BinaryIO, n: int, image: str, digest: str) -> bytes:
    data = source.read(n)
    if len(data) != n:
        raise ChecksumMismatch(
            f"{image}: blob {digest} ended after {len(data)} of {n} bytes",
            "the archive is truncated; recreate it",
        )
    return data


def retry_after(r: requests.Response, settings: RegistrySettings) -> float | None:
    value = r.headers.get("Retry-After", "")
    if value.isdigit() and float(value) <= settings.backoff_max:
        return float(value)
    return None


def error_codes(r: requests.Response) -> str:
    """`` (CODE: message)`` from the distribution error body, if any."""
    try:
        errors = r.json().get("errors") or []
        parts = [f"{e.get('code')}: {e.get('message')}" for e in errors if isinstance(e, dict)]
    except (ValueError, AttributeError):
        return ""
    return f" ({'; '.join(parts)[:300]})" if parts else ""


def url_path(url: str) -> str:
    """A URL's path without its query (upload URLs carry state in the query)."""
    return urlsplit(url).path
