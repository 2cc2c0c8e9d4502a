"""The one network layer: sessions, deadlines, retries, bounded bodies, resumable downloads.

Every byte mk8s takes over HTTP (the release server, a registry, its token service) comes
through here, bounded three ways (docs/security.md, "Network bounds", lists the numbers):

* **Time.** Each request, headers and body together, has a total deadline of
  ``MK8S_NET_DEADLINE`` seconds plus the bytes expected divided by ``MK8S_NET_MIN_RATE``;
  a watchdog shuts the socket when it passes, so a server that drips one byte every two
  seconds (into the headers or the body) cannot hold mk8s. Each socket read also has its
  own timeout.
* **Bytes.** A body is read against a budget derived from what is expected: a download
  stops at its declared size, a document at :data:`MAX_DOCUMENT`, an error or token
  body at :data:`MAX_SMALL`.
* **Retries.** One policy: connection errors, timeouts and the statuses of
  :data:`RETRY_STATUS` (honouring a short ``Retry-After``) are retried, nothing else.
  One :class:`RetryBudget` per operation: at most ``retries + 1`` tries that moved
  nothing, at most :data:`TRIES_PER_ATTEMPT` times that many in all (a try that moved
  bytes does not reset the count forever), all within a total time; :func:`retrying`
  and :class:`RangeDownload` are the two loops that spend one.
"""

from mk8s.net.download import DownloadErrors, RangeDownload
from mk8s.net.http import (
    DEADLINE_ENV,
    DEFAULT_DEADLINE,
    DEFAULT_MIN_RATE,
    MAX_DOCUMENT,
    MAX_SMALL,
    MIN_RATE_ENV,
    Deadline,
    Limits,
    iter_body,
    new_session,
    peek_body,
    read_body,
    send,
)
from mk8s.net.retry import (
    MAX_TIMEOUTS,
    RETRY_STATUS,
    TRANSIENT,
    TRIES_PER_ATTEMPT,
    Cancelled,
    DeadlineExceeded,
    RetryBudget,
    RetryPolicy,
    RetryStatus,
    reason,
    retry_after,
    retryable,
    retrying,
)

__all__ = [
    "DEADLINE_ENV",
    "DEFAULT_DEADLINE",
    "DEFAULT_MIN_RATE",
    "MAX_DOCUMENT",
    "MAX_SMALL",
    "MAX_TIMEOUTS",
    "MIN_RATE_ENV",
    "RETRY_STATUS",
    "TRANSIENT",
    "TRIES_PER_ATTEMPT",
    "Cancelled",
    "Deadline",
    "DeadlineExceeded",
    "DownloadErrors",
    "Limits",
    "RangeDownload",
    "RetryBudget",
    "RetryPolicy",
    "RetryStatus",
    "iter_body",
    "new_session",
    "peek_body",
    "read_body",
    "reason",
    "retry_after",
    "retryable",
    "retrying",
    "send",
]
