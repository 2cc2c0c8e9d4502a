"""One release file: what to fetch (:class:`FetchItem`) and its download across
retries, on :class:`mk8s.net.RangeDownload`.

:class:`Transfer` adds what the release server needs to the shared resumable download:
its credentials, GitHub's rate limits, and the messages. The byte budget is the pinned
size, or :data:`MAX_UNPINNED` for a file nothing pins yet (the checksum file and
``install.sh`` on a first lock); more bytes than pinned are a supply-chain alarm (exit
3), more than an unpinned file may have is a server answering nonsense (exit 1).
Used by :mod:`mk8s.bundle.upstream.fetch`.
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass
from typing import BinaryIO

import requests

from mk8s import net
from mk8s.bundle.upstream.server import judge, unfollowable
from mk8s.bundle.upstream.settings import UpstreamSettings, redact_url
from mk8s.callbacks import TransferProgress
from mk8s.errors import ChecksumMismatch, InputError, Mk8sError, OutputError, UpstreamError
from mk8s.net import Cancelled
from mk8s.untrusted import shown

CHUNK = 1 << 20
#: The most a file nothing pins may have (checksum files and install.sh are kilobytes).
MAX_UNPINNED = 16 << 20

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")

__all__ = ["CHUNK", "MAX_UNPINNED", "Cancelled", "FetchItem", "Transfer"]


@dataclass(frozen=True)
class FetchItem:
    """One file to fetch. ``sha256`` None means "nothing pins it yet" (install.sh on
    first lock): the file is kept under the hash it has and the caller pins that.
    ``source`` names where ``sha256`` came from, for error messages."""

    name: str
    url: str
    sha256: str | None = None
    size: int | None = None
    source: str = "the expected checksum"

    def __post_init__(self) -> None:
        if self.sha256 is not None:
            if not _HEX64.match(self.sha256):
                raise InputError(f"{self.name}: {self.sha256!r} is not a sha256 hex digest")
            object.__setattr__(self, "sha256", self.sha256.lower())


class Transfer:
    """The state of one download across retries: bytes written and the running hash."""

    def __init__(
        self,
        item: FetchItem,
        settings: UpstreamSettings,
        f: BinaryIO,
        progress: TransferProgress | None,
        stop: threading.Event,
    ) -> None:
        self.item = item
        self.settings = settings
        self.url_shown = shown(redact_url(item.url), limit=300)

        def report(done: int, total: int | None) -> None:
            if progress is not None:
                progress(item.name, done, total)

        errors = net.DownloadErrors(too_big=self._too_big, failed=self._failed, write=self._write)
        self.download = net.RangeDownload(
            f,
            size=item.size,
            budget=item.size if item.size is not None else MAX_UNPINNED,
            limits=settings.limits,
            policy=settings.policy,
            errors=errors,
            progress=report,
            stop=stop,
        )

    @property
    def done(self) -> int:
        return self.download.done

    @property
    def hasher(self) -> hashlib._Hash:
        return self.download.hasher

    def run(self, session: requests.Session) -> None:
        self.download.run(lambda headers, deadline: self._attempt(session, headers, deadline))

    def _attempt(
        self, session: requests.Session, headers: dict[str, str], deadline: float
    ) -> requests.Response:
        """One request: a response to stream, or the error its status means."""
        url = self.item.url
        try:
            r = net.send(
                session,
                "GET",
                url,
                headers={**self.settings.auth_headers(url), **headers},
                timeout=self.settings.timeout,
                stream=True,
                limits=self.settings.limits,
                deadline=deadline,
            )
        except net.TRANSIENT:
            raise
        except requests.RequestException as e:  # a redirect or URL mk8s cannot follow
            raise unfollowable(redact_url(url), self.item.name, e) from None
        try:
            judge(r, url, self.item.name, self.settings, resuming=self.download.done > 0)
        except BaseException:
            r.close()
            raise
        return r

    def _too_big(self, what: str) -> Mk8sError:
        if self.item.size is None:
            return UpstreamError(
                f"{self.item.name} from {self.url_shown}: {what}, more than such a file has",
                "the server is not answering with the release's file; check the MK8S_* URLs",
            )
        pin = f" with sha256 {self.item.sha256}" if self.item.sha256 else ""
        return ChecksumMismatch(
            f"{self.item.name} from {self.url_shown}: expected {self.item.size} bytes{pin}, {what}",
            "do not use it: upstream changed the file or it was tampered with in transit; "
            "run `mk8s bundle lock` again and review the change",
        )

    def _failed(self, why: str) -> Mk8sError:
        return UpstreamError(
            f"downloading {self.item.name} from {self.url_shown} failed {why}",
            "check the network and proxy settings, then run the command again "
            "(finished files are cached)",
        )

    def _write(self, e: OSError) -> Mk8sError:
        return OutputError(f"cannot write {self.item.name} to the cache: {e.strerror or e}")
