"""One download across retries: resume with Range, hash while streaming, cut off early.

:class:`Transfer` keeps the bytes written and the running sha256 of one file; each
attempt asks for the rest (``Range``), checks that the server answered the part asked
for, refuses more bytes than pinned as soon as they arrive, and retries connection
errors, timeouts, 5xx and 429 with backoff. Used by :mod:`mk8s.bundle.fetch`.
"""

from __future__ import annotations

import hashlib
import re
import threading
from typing import TYPE_CHECKING, BinaryIO

import requests

from mk8s.bundle.http import (
    RETRY_STATUS,
    TRANSIENT_ERRORS,
    UpstreamSettings,
    rate_limit_error,
    redact_url,
    short_retry_after,
)
from mk8s.callbacks import TransferProgress
from mk8s.errors import ChecksumMismatch, OutputError, UpstreamError

if TYPE_CHECKING:
    from mk8s.bundle.fetch import FetchItem

CHUNK = 1 << 20
_CONTENT_RANGE = re.compile(r"^bytes (?P<start>\d+)-(?P<end>\d+)/(?P<total>\d+|\*)$")


class Cancelled(Exception):
    """The download was stopped (Ctrl-C or another download failed)."""


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
        self.f = f
        self.progress = progress
        self.stop = stop
        self.done = 0
        self.total: int | None = item.size
        self.hasher = hashlib.sha256()

    def restart(self) -> None:
        self.f.seek(0)
        self.f.truncate()
        self.done = 0
        self.hasher = hashlib.sha256()

    def run(self, session: requests.Session) -> None:
        url = self.item.url
        failures = 0
        last = ""
        while True:
            if self.stop.is_set():
                raise Cancelled
            before = self.done
            try:
                if self._attempt(session):
                    return
                last = "the connection closed early"
            except TRANSIENT_ERRORS as e:
                last = f"{type(e).__name__}: {e}"
            except _RetryStatus as e:
                last = e.reason
                if e.wait is not None:
                    failures += 1
                    if failures > self.settings.retries:
                        break
                    if self.stop.wait(max(e.wait, self.settings.backoff_delay(failures - 1))):
                        raise Cancelled from None
                    continue
            # A try that moved bytes earns a fresh retry budget: a slow, flaky link
            # should finish, while a dead one still fails after `retries` tries.
            failures = 0 if self.done > before else failures + 1
            if failures > self.settings.retries:
                break
            if failures and self.stop.wait(self.settings.backoff_delay(failures - 1)):
                raise Cancelled
        raise UpstreamError(
            f"downloading {self.item.name} from {url} failed after "
            f"{self.settings.retries + 1} attempts ({last})",
            "check the network and proxy settings, then run the command again "
            "(finished files are cached)",
        )

    def _attempt(self, session: requests.Session) -> bool:
        """One request. True when the whole body arrived; raises for what to retry."""
        url = self.item.url
        headers = {**self.settings.auth_headers(url), "Accept-Encoding": "identity"}
        if self.done:
            headers["Range"] = f"bytes={self.done}-"
        with session.get(url, headers=headers, timeout=self.settings.timeout, stream=True) as r:
            self._check_status(r)
            start, total = self._placement(r)
            if start != self.done:
                self.restart()
            if total is not None:
                self._check_total(total)
                self.total = total
            self._report()
            for chunk in r.iter_content(CHUNK):
                if self.stop.is_set():
                    raise Cancelled
                self._check_growth(len(chunk))
                try:
                    self.f.write(chunk)
                except OSError as e:
                    raise OutputError(f"cannot write {self.item.name} to the cache: {e}") from e
                self.hasher.update(chunk)
                self.done += len(chunk)
                self._report()
        return total is None or self.done >= total

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(self.item.name, self.done, self.total)

    def _check_status(self, r: requests.Response) -> None:
        url = self.item.url
        limited = rate_limit_error(r, url)
        if limited is not None and (
            r.status_code != 429 or short_retry_after(r, self.settings) is None
        ):
            raise limited
        if r.status_code in RETRY_STATUS:
            raise _RetryStatus(f"HTTP {r.status_code}", short_retry_after(r, self.settings))
        if r.status_code == 416 and self.done:
            # Our offset is past the server's end: the file shrank. Start over.
            self.restart()
            raise _RetryStatus("HTTP 416 on resume", 0.0)
        if r.status_code >= 400:
            hint = (
                "check the version and the MK8S_RELEASE_URL / MK8S_RAW_URL settings"
                if r.status_code == 404
                else "check the URL and the server"
            )
            raise UpstreamError(
                f"{url} answered HTTP {r.status_code} {r.reason} for {self.item.name}", hint
            )

    def _placement(self, r: requests.Response) -> tuple[int, int | None]:
        """Where this body starts and the file's full size, from the headers."""
        length = r.headers.get("Content-Length", "")
        if r.status_code == 206:
            m = _CONTENT_RANGE.match(r.headers.get("Content-Range", ""))
            if m is None or int(m["start"]) != self.done:
                # Not the part we asked for: drop what we have and ask for everything.
                self.restart()
                raise _RetryStatus("bad Content-Range on resume", 0.0)
            return self.done, None if m["total"] == "*" else int(m["total"])
        # 200: the whole file from byte 0, even if we asked for a range.
        return 0, int(length) if length.isdigit() else None

    def _check_total(self, total: int) -> None:
        # More bytes than pinned can never be the pinned file: refuse before reading
        # any of it (a hostile or broken server must not fill the disk).
        pinned = self.item.size
        if pinned is not None and total > pinned:
            raise self._too_big(f"the server offers {total} bytes")

    def _check_growth(self, n: int) -> None:
        pinned = self.item.size
        if pinned is not None and self.done + n > pinned:
            raise self._too_big(f"the server sent more than {pinned} bytes; cut off")

    def _too_big(self, what: str) -> ChecksumMismatch:
        pin = f" with sha256 {self.item.sha256}" if self.item.sha256 else ""
        return ChecksumMismatch(
            f"{self.item.name} from {redact_url(self.item.url)}: expected {self.item.size}"
            f" bytes{pin}, {what}",
            "do not use it: upstream changed the file or it was tampered with in transit; "
            "run `mk8s bundle lock` again and review the change",
        )


class _RetryStatus(Exception):
    """A retryable answer; ``wait`` overrides the backoff when the server asked."""

    def __init__(self, reason: str, wait: float | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.wait = wait
