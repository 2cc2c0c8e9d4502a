"""The transfer side of the registry client: settings, blob downloads, error texts.

:func:`download` fetches one blob with :class:`mk8s.net.RangeDownload` (resumed with
``Range``, hashed while it streams, never past the size its descriptor declares); the
helpers build the messages that name the image and both digests on a mismatch, and the
one-line summary of a registry's error body (shown through :func:`mk8s.untrusted.shown`,
with the client's credentials masked).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import urlsplit

import requests

from mk8s import net
from mk8s.callbacks import TransferProgress
from mk8s.errors import ChecksumMismatch, Mk8sError, OutputError
from mk8s.images.errors import RegistryError
from mk8s.untrusted import load_json, shown

if TYPE_CHECKING:
    from mk8s.images.client import RegistryClient

log = logging.getLogger(__name__)

UPLOAD_RANGE = re.compile(r"^(?:bytes=)?0-(\d+)$")


@dataclass(frozen=True)
class RegistrySettings:
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


def download(
    client: RegistryClient,
    repository: str,
    digest: str,
    size: int,
    out: BinaryIO,
    *,
    image: str,
    progress: TransferProgress | None,
) -> None:
    """Stream blob ``digest`` (declared ``size`` bytes) into ``out`` and check it:
    ChecksumMismatch (naming ``image``) for other bytes or another size."""
    url = f"{client.base_url}/v2/{repository}/blobs/{digest}"
    where = f"{client.registry}/{repository}"
    fix = "do not use it: the registry's copy is damaged or was tampered with"

    def report(done: int, total: int | None) -> None:
        if progress is not None:
            progress(digest, done, total)

    errors = net.DownloadErrors(
        too_big=lambda why: ChecksumMismatch(
            f"{image}: blob {digest} is {size} bytes by its descriptor, but {why}", fix
        ),
        failed=lambda why: RegistryError(
            f"downloading {digest} from {where} failed {why}",
            "check the network, then run the command again (finished blobs are cached)",
        ),
        write=lambda e: OutputError(f"cannot write blob {digest} to the cache: {e.strerror}"),
    )
    dl = net.RangeDownload(
        out,
        size=size,
        budget=size,
        limits=client.limits,
        policy=client.settings.policy,
        errors=errors,
        progress=report,
    )
    dl.run(lambda headers, deadline: client._blob_try(url, repository, headers, deadline, digest))
    client.stats.retries += dl.retries.tries
    got = "sha256:" + dl.hasher.hexdigest()
    if got != digest:
        raise mismatch(image, "blob", digest, got)
    if dl.done != size:
        raise ChecksumMismatch(
            f"{image}: blob {digest} has {dl.done} bytes, its descriptor says {size}", fix
        )
    client.stats.bytes_downloaded += dl.done


# -- helpers --------------------------------------------------------------------------------
def mismatch(image: str, what: str, want: str, got: str) -> ChecksumMismatch:
    return ChecksumMismatch(
        f"{image}: {what} should be {want} but its bytes are {got}",
        "do not use it: the registry's copy is damaged or was tampered with; "
        "re-push the image or check the registry's storage",
    )


def read_exact(source: BinaryIO, n: int, image: str, digest: str) -> bytes:
    data = source.read(n)
    if len(data) != n:
        raise ChecksumMismatch(
            f"{image}: blob {digest} ended after {len(data)} of {n} bytes",
            "the archive is truncated; recreate it",
        )
    return data


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
