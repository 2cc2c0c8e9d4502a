"""One resumable download under :mod:`mk8s.net`: resumed with ``Range``, hashed while
it streams, never past its byte budget, each try under a deadline."""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

import requests

from mk8s.errors import Mk8sError
from mk8s.net.http import Limits, iter_body
from mk8s.net.retry import TRANSIENT, Cancelled, RetryBudget, RetryPolicy, RetryStatus, reason

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


@dataclass(frozen=True)
class DownloadErrors:
    """What a :class:`RangeDownload` raises, in its caller's terms."""

    too_big: Callable[[str], Mk8sError]  # more bytes than the budget: not the file
    failed: Callable[[str], Mk8sError]  # the retry budget is spent
    write: Callable[[OSError], Mk8sError]  # the output cannot be written


class RangeDownload:
    """One file across tries: resumed with ``Range``, hashed while it streams, never
    past ``budget`` bytes, each try under a deadline for what is still missing."""

    def __init__(
        self,
        out: BinaryIO,
        *,
        size: int | None,
        budget: int,
        limits: Limits,
        policy: RetryPolicy,
        errors: DownloadErrors,
        progress: Callable[[int, int | None], None] | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.out = out
        self.budget = budget
        self.limits = limits
        self.errors = errors
        self.progress = progress
        self.stop = stop
        self.done = 0
        self.total = size
        self.hasher = hashlib.sha256()
        self.retries = RetryBudget(policy, 2 * limits.deadline(budget), stop=stop)

    def restart(self) -> None:
        self.out.seek(0)
        self.out.truncate()
        self.done = 0
        self.hasher = hashlib.sha256()

    def run(self, attempt: Callable[[dict[str, str], float], requests.Response]) -> None:
        """Try until the whole file arrived. ``attempt(headers, deadline)`` sends the
        request (:func:`send`) and judges its status: it raises :class:`RetryStatus`
        for what to retry and its own error for what not to."""
        last = ""
        while True:
            if self.stop is not None and self.stop.is_set():
                raise Cancelled
            before, wait, error = self.done, None, None
            try:
                if self._try(attempt):
                    return
                last = "the connection closed early"
            except TRANSIENT as e:
                last, error = reason(e), e
            except RetryStatus as e:
                last, wait = e.reason, e.wait
            progressed = self.done > before
            if not self.retries.retry(progressed=progressed, wait=wait, error=error):
                raise self.errors.failed(f"after {self.retries.tries} attempts ({last})")

    def _try(self, attempt: Callable[[dict[str, str], float], requests.Response]) -> bool:
        headers = {"Accept-Encoding": "identity"}
        if self.done:
            headers["Range"] = f"bytes={self.done}-"
        left = self.budget - self.done
        deadline = min(self.limits.deadline(left), max(0.0, self.retries.remaining))
        with attempt(headers, deadline) as r:
            if r.status_code == 416 and self.done:
                self.restart()  # our offset is past the server's end: start over
                raise RetryStatus("HTTP 416 on resume", 0.0)
            self._place(r)
            self._report()
            for chunk in iter_body(r):
                if self.stop is not None and self.stop.is_set():
                    raise Cancelled
                if self.done + len(chunk) > self.budget:
                    raise self.errors.too_big(f"the server sent more than {self.budget} bytes")
                try:
                    self.out.write(chunk)
                except OSError as e:
                    raise self.errors.write(e) from e
                self.hasher.update(chunk)
                self.done += len(chunk)
                self._report()
        return self.total is None or self.done >= self.total

    def _place(self, r: requests.Response) -> None:
        """Where this body starts and the file's full size, from the headers."""
        total: int | None
        if r.status_code not in (200, 206):  # the caller lets only these through
            raise RetryStatus(f"HTTP {r.status_code}")
        if r.status_code == 206:
            m = _CONTENT_RANGE.match(r.headers.get("Content-Range", ""))
            if m is None or int(m[1]) != self.done:
                self.restart()  # not the part asked for: ask for everything again
                raise RetryStatus("a wrong Content-Range on resume", 0.0)
            total = None if m[3] == "*" else int(m[3])
        else:
            if self.done:
                self.restart()  # 200: the server ignored Range and sends it all again
            length = r.headers.get("Content-Length", "")
            total = int(length) if length.isdigit() else None
        if total is not None and total > self.budget:
            # More bytes than expected can never be the expected file: refuse before
            # reading any of it (a hostile or broken server must not fill the disk).
            raise self.errors.too_big(f"the server offers {total} bytes")
        self.total = total if total is not None else self.total

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(self.done, self.total)
