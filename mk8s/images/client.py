"""A small client for the OCI distribution API: the calls mk8s makes of a registry.

Manifests by tag or digest (their bytes checked against the digest), blobs (HEAD,
download, cross-repository mount, upload). The wire under every call (TLS,
authentication, retries, deadlines, what an error status means) is
:class:`mk8s.images.wire.Wire`; blob transfers are :mod:`mk8s.images.blobs`.

Everything a registry says is outside input: manifests are read with a 4 MiB cap, error
and token bodies with 64 KiB, and any text shown goes through
:func:`mk8s.untrusted.shown` with this client's password and tokens masked.
"""

from __future__ import annotations

from typing import BinaryIO
from urllib.parse import urlencode, urljoin

import requests

from mk8s import net
from mk8s.callbacks import TransferProgress
from mk8s.errors import RegistryError
from mk8s.images import blobs
from mk8s.images.auth import Credentials
from mk8s.images.model import (
    ACCEPT,
    MAX_MANIFEST,
    Manifest,
    media_type_of,
    mismatch,
    sha256_digest,
)
from mk8s.images.reference import is_digest
from mk8s.images.wire import ClientStats, RegistryClientSettings, Reply, Wire
from mk8s.untrusted import shown


class RegistryClient:
    """The distribution API of one registry (``host[:port]``; ``docker.io`` works)."""

    def __init__(
        self,
        registry: str,
        settings: RegistryClientSettings | None = None,
        *,
        credentials: Credentials | None = None,
        session: requests.Session | None = None,
    ) -> None:
        self.wire = Wire(registry, settings, credentials=credentials, session=session)
        self.registry = registry
        self.settings = self.wire.settings
        self.stats: ClientStats = self.wire.stats
        self.known_blobs: dict[str, str] = {}
        """digest -> a repository seen holding it: the source of cross-repository mounts."""

    def close(self) -> None:
        self.wire.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def secrets(self) -> list[str]:
        """What no message may show: the password, the basic header, the tokens."""
        return self.wire.auth.secrets

    # -- API: manifests ------------------------------------------------------------------
    def get_manifest(self, repository: str, ref: str, *, image: str) -> Manifest:
        """GET a manifest or index by tag or digest; its bytes are checked.

        By digest: the bytes must hash to it. By tag: the digest is computed from the
        bytes, and must equal the registry's ``Docker-Content-Digest`` when sent.
        Raises ChecksumMismatch (naming ``image`` and both digests), ImageNotFound,
        RegistryAuthError, RegistryTLSError or RegistryError.
        """
        url = f"{self.wire.base_url}/v2/{repository}/manifests/{ref}"

        def once() -> tuple[bytes, str | None, str | None]:
            with self.wire.open("GET", url, repository, {"Accept": ACCEPT}) as r:
                if r.status_code != 200:
                    self.wire.expect(Reply.of(r), (200,), f"manifest {ref} of {repository}")
                data = net.read_body(
                    r, MAX_MANIFEST, what=f"the manifest of {image}", error=RegistryError
                )
                return data, r.headers.get("Docker-Content-Digest"), r.headers.get("Content-Type")

        data, header_digest, content_type = self.wire.retrying("GET", url, once)
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
        url = f"{self.wire.base_url}/v2/{repository}/manifests/{ref}"
        r = self.wire.request("HEAD", url, repository, headers={"Accept": ACCEPT})
        if r.status_code == 404:
            return None
        self.wire.expect(r, (200,), f"manifest {ref} of {repository}")
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
        url = f"{self.wire.base_url}/v2/{repository}/manifests/{ref}"
        headers = {"Content-Type": manifest.media_type}
        data = manifest.data
        r = self.wire.request("PUT", url, repository, headers=headers, data=data, push=True)
        self.wire.expect(r, (201, 200), f"pushing manifest {ref} to {repository}")
        got = r.headers.get("Docker-Content-Digest")
        if got and got != manifest.digest:
            got = got if is_digest(got) else shown(got, limit=80)
            raise mismatch(f"{self.registry}/{repository}:{ref}", "manifest", manifest.digest, got)
        return manifest.digest

    # -- API: blobs ----------------------------------------------------------------------
    def blob_exists(self, repository: str, digest: str) -> bool:
        """HEAD a blob in ``repository``."""
        if not blobs.blob_exists(self.wire, repository, digest):
            return False
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
        blobs.download(self.wire, repository, digest, size, out, image=image, progress=progress)
        return size

    def mount_blob(self, repository: str, digest: str, source_repository: str) -> bool:
        """Ask the registry to link a blob it holds in another repository (no bytes
        move). True when mounted; False when it wants an upload instead."""
        query = urlencode({"mount": digest, "from": source_repository})
        url = f"{self.wire.base_url}/v2/{repository}/blobs/uploads/?{query}"
        r = self.wire.request("POST", url, repository, data=b"", push=True)
        if r.status_code == 201:
            self.stats.blobs_mounted += 1
            self.known_blobs.setdefault(digest, repository)
            return True
        self.wire.expect(r, (202,), f"mounting {digest} into {repository}")
        location = r.headers.get("Location")
        if location:  # an upload session we will not use
            blobs.cancel_upload(self.wire, repository, urljoin(self.wire.base_url, location))
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
        :func:`mk8s.images.blobs.upload_blob`); ChecksumMismatch if they differ."""
        blobs.upload_blob(
            self.wire, repository, digest, size, source, image=image, progress=progress
        )
        self.known_blobs.setdefault(digest, repository)


__all__ = ["ClientStats", "RegistryClient", "RegistryClientSettings"]
