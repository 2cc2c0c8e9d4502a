"""Blob uploads to a registry: one PUT, or PATCH chunks that survive a lost answer.

The bytes are hashed while read; only a blob that hashes to its digest is committed,
otherwise the upload session is cancelled and ChecksumMismatch names the image.
"""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import urlencode, urljoin, urlsplit

from mk8s.callbacks import TransferProgress
from mk8s.images.errors import RegistryError
from mk8s.images.transfer import UPLOAD_RANGE, Reply, mismatch, read_exact

if TYPE_CHECKING:
    from mk8s.images.client import RegistryClient

log = logging.getLogger(__name__)


def upload_blob(
    client: RegistryClient,
    repository: str,
    digest: str,
    size: int,
    source: BinaryIO,
    *,
    image: str,
    progress: TransferProgress | None = None,
) -> None:
    """Upload ``size`` bytes read from ``source`` as blob ``digest``.

    One PUT for a blob up to ``chunk_size``; otherwise PATCH chunks of that size,
    each re-sent on a transient failure (after asking the registry how much it
    has). The bytes are hashed while read; only a match is committed, else the
    upload is cancelled and ChecksumMismatch names ``image`` and both digests.
    """
    location = start_upload(client, repository)
    hasher = hashlib.sha256()
    sent = 0
    try:
        if size <= client.settings.chunk_size:
            body = read_exact(source, size, image, digest)
            hasher.update(body)
            check_upload_digest(hasher, digest, image)
            finish_upload(client, repository, location, digest, body)
        else:
            while sent < size:
                chunk = read_exact(
                    source, min(client.settings.chunk_size, size - sent), image, digest
                )
                hasher.update(chunk)
                location = patch_chunk(client, repository, location, chunk, sent)
                sent += len(chunk)
                if progress is not None:
                    progress(digest, sent, size)
            check_upload_digest(hasher, digest, image)
            finish_upload(client, repository, location, digest, b"")
    except BaseException:
        cancel_upload(client, repository, location)
        raise
    client.stats.blobs_uploaded += 1
    client.stats.bytes_uploaded += size
    client.known_blobs.setdefault(digest, repository)


def start_upload(client: RegistryClient, repository: str) -> str:
    url = f"{client.base_url}/v2/{repository}/blobs/uploads/"
    r = client._request("POST", url, repository, data=b"", push=True)
    client._expect(r, (202,), f"starting an upload to {repository}")
    return upload_location(client, r, repository)


def upload_location(client: RegistryClient, r: Reply, repository: str) -> str:
    location = r.headers.get("Location")
    if not location:
        raise RegistryError(
            f"{client.registry} sent no upload location for {repository}",
            "the registry does not follow the distribution API; check its version",
        )
    return urljoin(client.base_url + "/", location)


def patch_chunk(
    client: RegistryClient, repository: str, location: str, chunk: bytes, start: int
) -> str:
    """Send ``chunk`` (bytes ``start``..) and return the next upload location.

    When the registry answers 416 (an earlier try of this chunk was partly or
    wholly stored and only its answer was lost), send just what it lacks.
    """
    end = start + len(chunk) - 1
    for _ in range(3):
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Range": f"{start}-{end}",
        }
        r = client._request("PATCH", location, repository, headers=headers, data=chunk, push=True)
        if r.status_code != 416:
            client._expect(r, (202,), f"uploading to {repository}")
            return upload_location(client, r, repository)
        have = upload_offset(client, repository, location)
        if have == end + 1:
            return location
        if not start < have <= end:
            break
        chunk, start = chunk[have - start :], have
    raise RegistryError(
        f"{client.registry} lost track of an upload to {repository}",
        "run the command again: the upload restarts",
    )


def upload_offset(client: RegistryClient, repository: str, location: str) -> int:
    r = client._request("GET", location, repository, push=True)
    m = UPLOAD_RANGE.match(r.headers.get("Range", ""))
    return int(m[1]) + 1 if m and r.status_code == 204 else 0


def check_upload_digest(hasher: hashlib._Hash, digest: str, image: str) -> None:
    got = "sha256:" + hasher.hexdigest()
    if got != digest:
        raise mismatch(image, "blob", digest, got)


def finish_upload(
    client: RegistryClient, repository: str, location: str, digest: str, body: bytes
) -> None:
    sep = "&" if urlsplit(location).query else "?"
    url = f"{location}{sep}{urlencode({'digest': digest})}"
    headers = {"Content-Type": "application/octet-stream"}
    r = client._request("PUT", url, repository, headers=headers, data=body, push=True)
    if r.status_code in (404, 400) and client.blob_exists(repository, digest):
        return  # a retried PUT whose first try had committed the blob
    client._expect(r, (201,), f"committing blob {digest} to {repository}")


def cancel_upload(client: RegistryClient, repository: str, location: str) -> None:
    try:
        client._request("DELETE", location, repository, push=True, retry=False)
    except Exception as e:  # best effort: the registry purges stale uploads itself
        log.debug("cancelling an upload to %s failed: %s", repository, type(e).__name__)
