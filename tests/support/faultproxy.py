"""A TLS reverse proxy in front of a real registry that injects what networks do wrong.

Bytes come from the real registry; the proxy only gets in the way, on request: answer
a status (503, 429 with ``Retry-After``...) instead of forwarding, or cut a response
body after N bytes (the client sees a connection that dies mid-blob). It records every
request it saw (method, path, ``Range``), so tests can check what the client asked.

    with FaultProxy(reg) as proxy:         # reg: a started TestRegistry
        proxy.fail("GET", r"/manifests/", 503, times=2)
        proxy.cut(r"/blobs/sha256:", after=10_000)
        ... point the client at proxy.host (same CA, same credentials) ...
"""

from __future__ import annotations

import contextlib
import re
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

from tests.support.registry import TestRegistry

_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host"}


@dataclass
class _Fail:
    method: str
    path: re.Pattern[str]
    status: int
    times: int
    headers: dict[str, str]


@dataclass
class Seen:
    method: str
    path: str
    range: str | None


@dataclass
class _State:
    fails: list[_Fail] = field(default_factory=list)
    cuts: list[tuple[re.Pattern[str], int]] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class FaultProxy:
    """Listens on 127.0.0.1 (a free port) with a certificate from the registry's CA."""

    def __init__(self, registry: TestRegistry, workdir: Path | None = None) -> None:
        self.registry = registry
        self.state = _State()
        cert, key = registry.ca.issue_server(["127.0.0.1"])
        d = workdir or registry.workdir / "proxy"
        d.mkdir(parents=True, exist_ok=True)
        (d / "cert.pem").write_bytes(cert)
        (d / "key.pem").write_bytes(key)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(d / "cert.pem", d / "key.pem")
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.upstream = requests.Session()
        self.upstream.verify = str(registry.ca_file)
        self.upstream.trust_env = False
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.upstream.close()

    def fail(
        self,
        method: str,
        path: str,
        status: int,
        times: int = 1,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer ``status`` to the next ``times`` requests whose path matches."""
        with self.state.lock:
            self.state.fails.append(_Fail(method, re.compile(path), status, times, headers or {}))

    def cut(self, path: str, after: int) -> None:
        """Cut the body of the next response whose path matches after ``after`` bytes."""
        with self.state.lock:
            self.state.cuts.append((re.compile(path), after))

    @property
    def seen(self) -> list[Seen]:
        with self.state.lock:
            return list(self.state.seen)

    def take_fail(self, method: str, path: str) -> _Fail | None:
        with self.state.lock:
            for f in self.state.fails:
                if f.method == method and f.times > 0 and f.path.search(path):
                    f.times -= 1
                    return f
        return None

    def take_cut(self, path: str) -> int | None:
        with self.state.lock:
            for i, (pattern, after) in enumerate(self.state.cuts):
                if pattern.search(path):
                    del self.state.cuts[i]
                    return after
        return None


def _handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def handle(self) -> None:
            with contextlib.suppress(ConnectionError, ssl.SSLError, TimeoutError):
                super().handle()

        def _any(self) -> None:
            method = self.command
            with proxy.state.lock:
                proxy.state.seen.append(Seen(method, self.path, self.headers.get("Range")))
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            fail = proxy.take_fail(method, self.path)
            if fail is not None:
                payload = b'{"errors":[{"code":"UNAVAILABLE","message":"injected"}]}'
                self.send_response(fail.status)
                for k, v in fail.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
            r = proxy.upstream.request(
                method,
                proxy.registry.url + self.path,
                headers=headers,
                data=body,
                stream=True,
                allow_redirects=False,
                timeout=30,
            )
            with r:
                self.send_response(r.status_code)
                for k, v in r.raw.headers.items():
                    if k.lower() in _HOP:
                        continue
                    if k.lower() == "location":
                        v = v.replace(proxy.registry.url, f"https://{proxy.host}")
                    self.send_header(k, v)
                self.end_headers()
                if method == "HEAD":
                    return
                cut = proxy.take_cut(self.path)
                sent = 0
                for chunk in r.raw.stream(65536, decode_content=False):
                    if cut is not None and sent + len(chunk) >= cut:
                        self.wfile.write(chunk[: cut - sent])
                        self.wfile.flush()
                        self.close_connection = True
                        self.connection.close()
                        return
                    self.wfile.write(chunk)
                    sent += len(chunk)

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _any

    return Handler
