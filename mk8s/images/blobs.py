"""Blob transfers over the wire (:class:`mk8s.images.wire.Wire`): downloads resumed
and hashed as they stream, uploads in one PUT or in PATCH chunks that survive a lost
answer.

A download is :class:`mk8s.net.RangeDownload` (resumed with ``Range``, hashed while it
streams, never past the size its descriptor declares); bytes that differ from the
digest or the size are a ChecksumMismatch naming the image and both digests. An
upload hashes the bytes while it reads them and commits (``PUT ?digest=``) only a blob
that hashes to its digest; otherwise the upload session is cancelled.
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import BinaryIO
from urllib.parse import urlencode, urljoin, urlsplit

from mk8s import net
from mk8s.callbacks import TransferProgress
from mk8s.errors import ChecksumMismatch, OutputError, RegistryError
from mk8s.images.model import mismatch
from mk8s.images.wire import Reply, Wire

log = logging.getLogger(__name__)

UPLOAD_RANGE = re.compile(r"^(?:bytes=)?0-(\d+)$")


# -- download -------------------------------------------------------------------------------
def download(
    wire: Wire,
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
    url = f"{wire.base_url}/v2/{repository}/blobs/{digest}"
    where = f"{wire.registry}/{repository}"
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
        limits=wire.limits,
        policy=wire.settings.policy,
        errors=errors,
        progress=report,
    )
    dl.run(lambda headers, deadline: wire.open_blob(url, repository, headers, deadline, digest))
    wire.stats.retries += dl.retries.tries
    got = "sha256:" + dl.hasher.hexdigest()
    if got != digest:
        raise mismatch(image, "blob", digest, got)
    if dl.done != size:
        raise ChecksumMismatch(
            f"{image}: blob {digest} has {dl.done} bytes, its descriptor says {size}", fix
        )
    wire.stats.bytes_downloaded += dl.done


def blob_exists(wire: Wire, repository: str, digest: str) -> bool:
    """HEAD a blob in ``repository``."""
    url = f"{wire.base_url}/v2/{repository}/blobs/{digest}"
    r = wire.request("HEAD", url, repository)
    if r.status_code == 404:
        return False
    wire.expect(r, (200,), f"blob {digest} of {repository}")
    return True


# -- upload ---------------------------------------------------------------------------------
def upload_blob(
    wire: Wire,
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
    location = start_upload(wire, repository)
    hasher = hashlib.sha256()
    sent = 0
    try:
        if size <= wire.settings.chunk_size:
            body = read_exact(source, size, image, digest)
            hasher.update(body)
            check_upload_digest(hasher, digest, image)
            finish_upload(wire, repository, location, digest, body)
        else:
            while sent < size:
                want = min(wire.settings.chunk_size, size - sent)
                chunk = read_exact(source, want, image, digest)
                hasher.update(chunk)
                location = patch_chunk(wire, repository, location, chunk, sent)
                sent += len(chunk)
                if progress is not None:
                    progress(digest, sent, size)
            check_upload_digest(hasher, digest, image)
            finish_upload(wire, repository, location, digest, b"")
    except BaseException:
        cancel_upload(wire, repository, location)
        raise
    wire.stats.blobs_uploaded += 1
    wire.stats.bytes_uploaded += size


def start_upload(wire: Wire, repository: str) -> str:
    url = f"{wire.base_url}/v2/{repository}/blobs/uploads/"
    r = wire.request("POST", url, repository, data=b"", push=True)
    wire.expect(r, (202,), f"starting an upload to {repository}")
    return upload_location(wire, r, repository)


def upload_location(wire: Wire, r: Reply, repository: str) -> str:
    location = r.headers.get("Location")
    if not location:
        raise RegistryError(
            f"{wire.registry} sent no upload location for {repository}",
            "the registry does not follow the distribution API; check its version",
        )
    return urljoin(wire.base_url + "/", location)


def patch_chunk(wire: Wire, repository: str, location: str, chunk: bytes, start: int) -> str:
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
        r = wire.request("PATCH", location, repository, headers=headers, data=chunk, push=True)
        if r.status_code != 416:
            wire.expect(r, (202,), f"uploading to {repository}")
            return upload_location(wire, r, repository)
        have = upload_offset(wire, repository, location)
        if have == end + 1:
            return location
        if not start < have <= end:
            break
        chunk, start = chunk[have - start :], have
    raise RegistryError(
        f"{wire.registry} lost track of an upload to {repository}",
        "run the command again: the upload restarts",
    )


def upload_offset(wire: Wire, repository: str, location: str) -> int:
    r = wire.request("GET", location, repository, push=True)
    m = UPLOAD_RANGE.match(r.headers.get("Range", ""))
    return int(m[1]) + 1 if m and r.status_code == 204 else 0


def check_upload_digest(hasher: hashlib._Hash, digest: str, image: str) -> None:
    got = "sha256:" + hasher.hexdigest()
    if got != digest:
        raise mismatch(image, "blob", digest, got)


def finish_upload(wire: Wire, repository: str, location: str, digest: str, body: bytes) -> None:
    sep = "&" if urlsplit(location).query else "?"
    url = f"{location}{sep}{urlencode({'digest': digest})}"
    headers = {"Content-Type": "application/octet-stream"}
    r = wire.request("PUT", url, repository, headers=headers, data=body, push=True)
    if r.status_code in (404, 400) and blob_exists(wire, repository, digest):
        return  # a retried PUT whose first try had committed the blob
    wire.expect(r, (201,), f"committing blob {digest} to {repository}")


def cancel_upload(wire: Wire, repository: str, location: str) -> None:
    try:
        wire.request("DELETE", location, repository, push=True, retry=False)
    except Exception as e:  # best effort: the registry purges stale uploads itself
        log.debug("cancelling an upload to %s failed: %s", repository, type(e).__name__)


def read_exact(source: BinaryIO, n: int, image: str, digest: str) -> bytes:
    data = source.read(n)
    if len(data) != n:
        raise ChecksumMismatch(
            f"{image}: blob {digest} ended after {len(data)} of {n} bytes",
            "the archive is truncated; recreate it",
        )
    return data
