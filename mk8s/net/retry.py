"""Retries under :mod:`mk8s.net`: what is worth retrying (statuses, transient errors,
``Retry-After``), one budget per operation in tries and in time, and the one loop that
spends it (:func:`retrying`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import requests

#: A try that moved bytes is not a stalled one, but all tries together stay under this
#: multiple of the stalled-try budget.
TRIES_PER_ATTEMPT = 4
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
TRANSIENT: tuple[type[BaseException], ...] = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)


#: Tries that ran into their deadline: a server too slow once is retried once.
MAX_TIMEOUTS = 2
T = TypeVar("T")


class DeadlineExceeded(requests.Timeout):
    """A request (headers and body) was slower than its :class:`mk8s.net.Deadline`."""


class Cancelled(Exception):
    """The transfer was stopped (Ctrl-C, or another download failed)."""


class RetryStatus(Exception):
    """A try answered with something worth retrying; ``wait`` is what the server asked."""

    def __init__(self, reason: str, wait: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.wait = wait


@dataclass(frozen=True)
class RetryPolicy:
    """``retries`` stalled tries after the first; delays double from ``backoff`` up to
    ``backoff_max`` seconds."""

    retries: int = 4
    backoff: float = 0.5
    backoff_max: float = 8.0

    def delay(self, n: int) -> float:
        return float(min(self.backoff_max, self.backoff * (2 ** min(n, 32))))


def reason(e: BaseException) -> str:
    """A transient failure in a few words (never a server's text)."""
    return "no complete answer in time" if isinstance(e, requests.Timeout) else type(e).__name__


def retry_after(r: requests.Response, longest: float) -> float | None:
    """The wait a 429/503 asks for with ``Retry-After`` (seconds) if at most ``longest``."""
    value = r.headers.get("Retry-After", "").strip()
    if value.isdigit() and float(value) <= longest:
        return float(value)
    return None


def retryable(r: requests.Response, longest: float, label: str = "HTTP") -> RetryStatus | None:
    """The :class:`RetryStatus` of an answer worth retrying (a status in
    :data:`RETRY_STATUS`, with the wait its ``Retry-After`` asks if at most ``longest``
    seconds), or None. ``label`` names the answer in the reason (``HTTP 503``)."""
    if r.status_code not in RETRY_STATUS:
        return None
    return RetryStatus(f"{label} {r.status_code}", retry_after(r, longest))


class RetryBudget:
    """The tries of one operation: see the module doc. ``seconds`` bounds them all."""

    def __init__(
        self,
        policy: RetryPolicy,
        seconds: float,
        *,
        stop: threading.Event | None = None,
        sleep: Callable[[float], Any] = time.sleep,
    ) -> None:
        self.policy = policy
        self.until = time.monotonic() + seconds
        self.stop = stop
        self.sleep = sleep
        self.tries = 0
        self.stalled = 0
        self.timeouts = 0

    @property
    def remaining(self) -> float:
        return self.until - time.monotonic()

    @property
    def max_tries(self) -> int:
        return TRIES_PER_ATTEMPT * (self.policy.retries + 1)

    def retry(
        self,
        *,
        progressed: bool = False,
        wait: float | None = None,
        error: BaseException | None = None,
    ) -> bool:
        """Count a failed try (``error``, if it raised). True after waiting for the
        next one; False when the budget is spent (the caller raises its error). Raises
        Cancelled on ``stop``."""
        self.tries += 1
        if not progressed:
            self.stalled += 1
        if isinstance(error, DeadlineExceeded):
            self.timeouts += 1
        if (
            self.stalled > self.policy.retries
            or self.tries >= self.max_tries
            or self.timeouts >= MAX_TIMEOUTS
        ):
            return False
        delay = 0.0 if progressed else self.policy.delay(self.stalled - 1)
        delay = max(delay, wait or 0.0)
        if delay >= self.remaining:
            return False
        if self.stop is not None:
            if self.stop.wait(delay):
                raise Cancelled
        elif delay:
            self.sleep(delay)
        return True


def retrying(
    once: Callable[[], T],
    budget: RetryBudget,
    *,
    unusable: Callable[[requests.RequestException], Exception],
    spent: Callable[[str, int], Exception],
    retried: Callable[[str], None] | None = None,
) -> T:
    """``once()`` until it returns, retrying :data:`TRANSIENT` errors and
    :class:`RetryStatus` within ``budget``. Any other ``requests`` error (a redirect or
    URL mk8s cannot follow) raises ``unusable(error)``; a spent budget raises
    ``spent(reason of the last failure, tries)``; ``retried(reason)`` hears of each
    retry."""
    while True:
        wait, error = None, None
        try:
            return once()
        except RetryStatus as e:
            last, wait = e.reason, e.wait
        except TRANSIENT as e:
            last, error = reason(e), e
        except requests.RequestException as e:
            raise unusable(e) from None
        if not budget.retry(wait=wait, error=error):
            raise spent(last, budget.tries)
        if retried is not None:
            retried(last)
