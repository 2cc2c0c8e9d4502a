"""The network layer's own bounds (mk8s/net/): deadlines against a real loopback server
that drips, a steady transfer that earns its time, and the retry budget."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from mk8s import net
from mk8s.errors import InputError, UpstreamError

FAST = net.Limits(min_rate=64 * 1024, base=1.0)


class RawServer:
    """A loopback TCP server that answers every connection with ``script(conn)``."""

    def __init__(self, script) -> None:  # type: ignore[no-untyped-def]
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/x"
        self.script = script
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            with contextlib.suppress(OSError):
                self.script(conn)


def drip(data: bytes, every: float):  # type: ignore[no-untyped-def]
    def script(conn: socket.socket) -> None:
        for b in data:
            conn.sendall(bytes([b]))
            time.sleep(every)

    return script


@pytest.fixture
def session() -> Iterator[requests.Session]:
    s = net.new_session()
    s.trust_env = False
    yield s
    s.close()


def test_dripped_headers_are_cut_off_after_the_grace(session: requests.Session) -> None:
    server = RawServer(drip(b"HTTP/1.1 200 OK\r\n" + b"X-Slow: yes\r\n" * 100, 0.3))
    t0 = time.monotonic()
    with pytest.raises(net.DeadlineExceeded):
        net.send(session, "GET", server.url, limits=FAST, deadline=60, timeout=(5, 30))
    assert time.monotonic() - t0 < 3


def test_a_dripped_body_is_cut_off_and_never_looks_complete(session: requests.Session) -> None:
    def script(conn: socket.socket) -> None:  # no Content-Length: the end is the close
        conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
        drip(b"x" * 100, 0.3)(conn)

    server = RawServer(script)
    t0 = time.monotonic()
    r = net.send(session, "GET", server.url, limits=FAST, deadline=60, timeout=(5, 30), stream=True)
    with r, pytest.raises(net.DeadlineExceeded):
        net.read_body(r, 1000, what="the body", error=UpstreamError)
    assert time.monotonic() - t0 < 3


def test_a_steady_transfer_earns_its_time(session: requests.Session) -> None:
    chunk = b"y" * 16384

    def script(conn: socket.socket) -> None:  # 640 KiB at ~160 KiB/s: 4 s, past the grace
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (40 * len(chunk)))
        for _ in range(40):
            conn.sendall(chunk)
            time.sleep(0.1)

    server = RawServer(script)
    r = net.send(session, "GET", server.url, limits=FAST, deadline=60, timeout=(5, 30), stream=True)
    with r:
        body = net.read_body(r, 1 << 20, what="the body", error=UpstreamError)
    assert len(body) == 40 * len(chunk)


def test_the_expected_size_caps_the_time_whatever_arrives(session: requests.Session) -> None:
    def script(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
        while True:  # fast, and endless
            conn.sendall(b"z" * 65536)

    server = RawServer(script)
    t0 = time.monotonic()
    r = net.send(
        session, "GET", server.url, limits=FAST, deadline=1.5, timeout=(5, 30), stream=True
    )
    with r, pytest.raises(net.DeadlineExceeded):
        for _ in net.iter_body(r):
            pass
    assert time.monotonic() - t0 < 4


@pytest.mark.parametrize("value", ["0", "-5", "fast", "inf", "nan"])
def test_limits_from_the_environment_must_be_positive_numbers(value: str) -> None:
    with pytest.raises(InputError, match=net.MIN_RATE_ENV):
        net.Limits.from_env({net.MIN_RATE_ENV: value})
    assert net.Limits.from_env({net.DEADLINE_ENV: "2.5"}).base == 2.5
