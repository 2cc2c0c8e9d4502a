"""HTTP under :mod:`mk8s.net`: the one session factory, requests that hold a total
deadline, and bodies read against a byte budget."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from mk8s import __version__
from mk8s.errors import InputError, Mk8sError
from mk8s.net.retry import TRANSIENT, DeadlineExceeded

MIN_RATE_ENV = "MK8S_NET_MIN_RATE"
DEADLINE_ENV = "MK8S_NET_DEADLINE"
#: Bytes per second a request must average once the grace below has passed (64 KiB/s).
DEFAULT_MIN_RATE = 64 * 1024
#: Seconds every request gets before the minimum rate counts (connect, TLS, the first
#: byte): also the longest a server may keep mk8s waiting for nothing.
DEFAULT_DEADLINE = 10.0
#: A manifest, an index or a page of the release list (registries refuse bigger ones).
MAX_DOCUMENT = 4 << 20
#: An error body or a token answer.
MAX_SMALL = 64 << 10
_MAX_TIMER = 30 * 24 * 3600.0
_READ = 1 << 16


# urllib3 logs a warning with a traceback and the raw bytes it could not parse when a
# server sends broken headers: outside text on the terminal, unfiltered. mk8s reports
# the failure itself (one line, through mk8s.untrusted.shown).
logging.getLogger("urllib3").setLevel(logging.ERROR)


@dataclass(frozen=True)
class Limits:
    """The time bounds: ``base`` seconds of grace, then ``min_rate`` bytes a second on
    average; a request expecting ``n`` bytes gets at most ``base + n / min_rate`` s."""

    min_rate: float = DEFAULT_MIN_RATE
    base: float = DEFAULT_DEADLINE

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Limits:
        """``MK8S_NET_MIN_RATE`` (bytes/s) and ``MK8S_NET_DEADLINE`` (s); InputError
        (exit 2) unless each is a positive number."""
        env = os.environ if env is None else env
        values: dict[str, float] = {}
        for key, var in (("min_rate", MIN_RATE_ENV), ("base", DEADLINE_ENV)):
            text = env.get(var, "").strip()
            if not text:
                continue
            try:
                value = float(text)
            except ValueError:
                value = -1.0
            if not 0 < value < float("inf"):
                raise InputError(f"{var}={text[:40]!r} is not a positive number", "fix or unset it")
            values[key] = value
        return cls(**values)

    def deadline(self, size: int | None) -> float:
        """Seconds a request that moves ``size`` bytes may take, headers included."""
        return min(_MAX_TIMER, self.base + max(0, size or 0) / self.min_rate)


# -- the watchdog ---------------------------------------------------------------------------
_local = threading.local()
_owner: weakref.WeakKeyDictionary[socket.socket, Deadline] = weakref.WeakKeyDictionary()
_owner_lock = threading.Lock()


class Deadline:
    """The time one request (headers and body) may take: after a grace of
    ``limits.base`` seconds it must keep up an average of ``limits.min_rate`` bytes a
    second (``received`` counts them), and it ends at ``seconds`` at the latest. When
    it passes, the request's sockets are shut down, which ends any read blocked on
    them (the TLS handshake, the headers or the body)."""

    def __init__(self, seconds: float, limits: Limits | None = None) -> None:
        self.seconds = min(max(seconds, 0.0), _MAX_TIMER)
        self.limits = limits
        self.received = 0
        self.expired = False
        self._start = time.monotonic()
        self._done = False
        self._socks: list[socket.socket] = []
        self._timer: threading.Timer | None = None
        self._arm()

    def allowed(self) -> float:
        """Seconds since the start the request may run, given what it received."""
        if self.limits is None:
            return self.seconds
        return min(self.seconds, self.limits.base + self.received / self.limits.min_rate)

    def watch(self, sock: socket.socket) -> None:
        with _owner_lock:
            _owner[sock] = self
            self._socks.append(sock)
            if self.expired:
                _shut(sock)

    def cancel(self) -> None:
        with _owner_lock:
            self._done = True
            self._socks.clear()
            if self._timer is not None:
                self._timer.cancel()

    def _arm(self) -> None:
        delay = max(0.0, self.allowed() - (time.monotonic() - self._start))
        self._timer = threading.Timer(delay, self._check)
        self._timer.daemon = True
        self._timer.start()

    def _check(self) -> None:
        with _owner_lock:
            if self._done:
                return
            if time.monotonic() - self._start < self.allowed():
                self._arm()  # bytes arrived meanwhile: the request earned more time
                return
            self.expired = True
            for sock in self._socks:
                if _owner.get(sock) is self:  # not since reused by another request
                    _shut(sock)

    def error(self) -> DeadlineExceeded:
        took = time.monotonic() - self._start
        return DeadlineExceeded(f"{self.received} bytes in {took:.0f} s: too slow, cut off")


def _shut(sock: socket.socket) -> None:
    # The plain socket's shutdown: an SSLSocket's own would try to unwrap TLS first.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _watch(sock: socket.socket | None) -> None:
    deadline: Deadline | None = getattr(_local, "deadline", None)
    if deadline is not None and sock is not None:
        deadline.watch(sock)


class _WatchedHTTP(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _watch(sock)
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        _watch(self.sock)
        super().request(*args, **kwargs)


class _WatchedHTTPS(HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _watch(sock)
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        _watch(self.sock)
        super().request(*args, **kwargs)


class _Pool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTP


class _TLSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPS


_POOLS = {"http": _Pool, "https": _TLSPool}


class _Adapter(HTTPAdapter):
    """requests' adapter whose connections report their sockets to the watchdog."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **kwargs)
        manager.pool_classes_by_scheme = _POOLS
        return manager


def new_session() -> requests.Session:
    """A session that honours proxy and CA-bundle variables (``HTTPS_PROXY``,
    ``NO_PROXY``, ``REQUESTS_CA_BUNDLE``, ``SSL_CERT_FILE``) and whose every request
    can be held to a :class:`Deadline` (see :func:`send`)."""
    session = requests.Session()
    session.trust_env = True
    ca = os.environ.get("SSL_CERT_FILE")
    if ca and not os.environ.get("REQUESTS_CA_BUNDLE") and not os.environ.get("CURL_CA_BUNDLE"):
        # requests reads REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE only; honour OpenSSL's name too.
        session.verify = ca
    session.headers["User-Agent"] = f"mk8s/{__version__}"
    for prefix in ("http://", "https://"):
        session.mount(prefix, _Adapter())
    return session


_DEADLINE_ATTR = "_mk8s_deadline"


def send(
    session: requests.Session,
    method: str,
    url: str,
    *,
    limits: Limits,
    deadline: float,
    **kwargs: Any,
) -> requests.Response:
    """``session.request(...)`` under a :class:`Deadline` (``limits``' minimum rate,
    ``deadline`` seconds at most) that holds until the response is closed (or, without
    ``stream``, until it returns). Raises :class:`DeadlineExceeded` (a
    ``requests.Timeout``) when it passes."""
    watchdog = Deadline(deadline, limits)
    body = kwargs.get("data")
    if isinstance(body, bytes):  # what is sent earns time like what is received
        watchdog.received += len(body)
    _local.deadline = watchdog
    try:
        r = session.request(method, url, **kwargs)
    except Exception as e:
        watchdog.cancel()
        if watchdog.expired:
            raise watchdog.error() from e
        raise
    finally:
        _local.deadline = None
    if not kwargs.get("stream"):
        watchdog.cancel()
        return r
    setattr(r, _DEADLINE_ATTR, watchdog)
    close = r.close

    def close_and_cancel() -> None:
        watchdog.cancel()
        close()

    r.close = close_and_cancel  # type: ignore[method-assign]
    return r


def iter_body(r: requests.Response, chunk: int = _READ) -> Iterator[bytes]:
    """The body of a streamed response; :class:`DeadlineExceeded` when the deadline cut
    it (a cut close-delimited body would otherwise look complete)."""
    watchdog: Deadline | None = getattr(r, _DEADLINE_ATTR, None)
    try:
        for piece in r.iter_content(chunk):
            if watchdog is not None:
                watchdog.received += len(piece)
            yield piece
    except Exception as e:
        if watchdog is not None and watchdog.expired:
            raise watchdog.error() from e
        raise
    if watchdog is not None and watchdog.expired:
        raise watchdog.error()


def read_body(
    r: requests.Response, cap: int, *, what: str, error: Callable[[str], Mk8sError]
) -> bytes:
    """The whole body, refused with ``error`` as soon as it passes ``cap`` bytes."""
    length = r.headers.get("Content-Length", "")
    if length.isdigit() and int(length) > cap:
        raise error(f"{what} is larger than {cap} bytes")
    buf = bytearray()
    for piece in iter_body(r, min(cap + 1, _READ)):
        buf += piece
        if len(buf) > cap:
            raise error(f"{what} is larger than {cap} bytes")
    return bytes(buf)


def peek_body(r: requests.Response, cap: int = MAX_SMALL) -> bytes:
    """At most ``cap`` bytes of a body that only adds detail (an error's): never raises
    for the network, returns what arrived."""
    buf = bytearray()
    try:
        for piece in iter_body(r, min(cap, _READ)):
            buf += piece[: cap - len(buf)]
            if len(buf) >= cap:
                break
    except TRANSIENT:
        pass
    return bytes(buf)
