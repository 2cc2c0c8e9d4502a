"""A registry and a release server on loopback that misbehave on purpose, one way per case.

:class:`HostileRegistry` speaks the OCI distribution API over TLS (a throwaway CA from
:class:`tests.support.registry.TestCA`). The repository name is the case: ``HOST/CASE:v1``
is a small, valid single-platform image (an OCI manifest, a config, one layer) served
wrongly the way :data:`REGISTRY_CASES` describes: endless, slow, giant, nested, reflecting
the credentials it was sent, lying about sizes, or answering nonsense.

Its release-server sibling is :mod:`tests.support.hostile_upstream`. Both count requests
by path (``server.hits``) and stop writing when the client goes away.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import random
import socket
import ssl
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.support.registry import TestCA

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
TERA = 10**12
DRIP_SECONDS = 2.0  # one byte every this many seconds
CUT_AFTER = 64 * 1024  # a "giant" body closes after this many bytes, every try
FANOUT = 25_000  # how often the nested index lists the same manifest (under 4 MiB)
CHAIN = 1500  # indexes in the deep chain

#: registry case -> what the server does wrong, and the exit class mk8s must end with.
REGISTRY_CASES: dict[str, tuple[str, int]] = {
    "endless-blob": ("the layer never ends (no Content-Length)", 3),
    "slow-blob": ("the layer drips one byte every 2 s", 1),
    "slow-headers": ("the manifest's response headers drip one byte every 2 s", 1),
    "giant-length": ("Content-Length 1 TB for a small layer, closing after 64 KiB", 3),
    "giant-declared": ("the manifest declares a 1 TB layer; each try closes after 64 KiB", 1),
    "nested-manifest": ("the manifest is JSON nested 200,000 deep", 1),
    "nested-error": ("404 with an error body nested 200,000 deep", 1),
    "endless-error": ("404 with an endless error body", 1),
    "nested-token": ("the token service answers JSON nested 200,000 deep", 1),
    "endless-token": ("the token service answers an endless body", 1),
    "fanout": ("a nested index lists one manifest 25,000 times", 0),
    "chain": ("a chain of 1500 indexes", 1),
    "reflect-body": ("403 whose error text reflects the credentials, a newline and ANSI", 1),
    "lying-size": ("the layer's descriptor says one byte less than the blob has", 3),
    "short-blob": ("the layer's descriptor says one byte more than the blob has", 3),
    "unknown-media": ("the manifest has an unknown media type", 1),
    "schema1": ("a schema 1 manifest", 1),
    "traversal": ("a layer digest with ../ in it", 1),
    "negative-size": ("a layer of size -5", 1),
    "not-json": ("the manifest is HTML", 1),
    "bad-digest-header": ("Docker-Content-Digest is not a digest", 1),
}
_BASIC_AUTH = {"reflect-body"}
_TOKEN_AUTH = {"nested-token", "endless-token"}


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def nested_json(depth: int = 200_000) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


class _Image:
    def __init__(self, case: str) -> None:
        self.layer = random.Random(case).randbytes(4096)
        self.config = json.dumps(
            {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"}}
        ).encode()
        layer_size = len(self.layer)
        layer_digest = _digest(self.layer)
        if case == "lying-size":
            layer_size -= 1
        elif case == "short-blob":
            layer_size += 1
        elif case == "giant-declared":
            layer_size = TERA
        elif case == "negative-size":
            layer_size = -5
        elif case == "traversal":
            layer_digest = "sha256:../../../../../etc/passwd"
        self.blobs = {_digest(self.config): self.config, _digest(self.layer): self.layer}
        doc = {
            "schemaVersion": 2,
            "mediaType": "application/x-evil" if case == "unknown-media" else OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": _digest(self.config), "size": 0},
            "layers": [{"mediaType": OCI_LAYER, "digest": layer_digest, "size": layer_size}],
        }
        doc["config"]["size"] = len(self.config)  # type: ignore[index]
        self.manifest = json.dumps(doc).encode()
        self.docs: dict[str, bytes] = {_digest(self.manifest): self.manifest}
        self.root = self.manifest
        if case == "schema1":
            self.root = json.dumps(
                {
                    "schemaVersion": 1,
                    "mediaType": "application/vnd.docker.distribution.manifest.v1+prettyjws",
                    "name": case,
                    "fsLayers": [{"blobSum": _digest(self.layer)}],
                }
            ).encode()
        elif case == "fanout":
            entry = {"mediaType": OCI_MANIFEST, "digest": _digest(self.manifest), "size": 0}
            entry["size"] = len(self.manifest)
            inner = self._index([entry] * FANOUT)
            self.root = self._index([self._platform_entry(inner)])
        elif case == "chain":
            child = self.manifest
            for _ in range(CHAIN):
                child = self._index([self._platform_entry(child)])
            self.root = child
        self.docs[_digest(self.root)] = self.root

    def _index(self, entries: list[dict[str, Any]]) -> bytes:
        data = json.dumps(
            {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries},
            separators=(",", ":"),
        ).encode()
        self.docs[_digest(data)] = data
        return data

    def _platform_entry(self, data: bytes) -> dict[str, Any]:
        media = json.loads(data)["mediaType"]
        return {
            "mediaType": media,
            "digest": _digest(data),
            "size": len(data),
            "platform": {"os": "linux", "architecture": "amd64"},
        }


class CountingServer:
    """A threaded HTTP(S) server on 127.0.0.1 that counts requests by path."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], tls: ssl.SSLContext | None) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = int(self.httpd.server_address[1])
        self.host = f"127.0.0.1:{self.port}"
        self.hits: Counter[str] = Counter()
        self.lock = threading.Lock()
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def hit(self, path: str) -> None:
        with self.lock:
            self.hits[path] += 1


class HostileHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def handle(self) -> None:
        with contextlib.suppress(OSError, ssl.SSLError):
            super().handle()

    def send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def endless(self, status: int, headers: dict[str, str], piece: bytes = b"A" * 65536) -> None:
        """A body without Content-Length that never ends (until the client leaves)."""
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        while True:
            self.wfile.write(piece)

    def drip(self, data: bytes) -> None:
        """Raw bytes (headers included) one at a time, DRIP_SECONDS apart."""
        self.close_connection = True
        for b in data:
            self.wfile.write(bytes([b]))
            self.wfile.flush()
            time.sleep(DRIP_SECONDS)

    def cut(self, status: int, headers: dict[str, str], n: int, seed: str) -> None:
        """Send headers (claiming more), then ``n`` bytes, then close."""
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(random.Random(seed).randbytes(n))
        self.wfile.flush()
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


class HostileRegistry:
    """``with HostileRegistry(tmp) as reg``: ``reg.ref(case)``, ``reg.ca_file``,
    ``reg.auth_file`` (a Docker config with ``reg.username``/``reg.password``)."""

    username = "mk8s-user"
    password = "hunter2-Sekr1t-pw"

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        ca = TestCA.create("hostile CA")
        cert, key = ca.issue_server(["127.0.0.1"])
        (workdir / "cert.pem").write_bytes(cert)
        (workdir / "key.pem").write_bytes(key)
        self.ca_file = workdir / "ca.pem"
        self.ca_file.write_bytes(ca.pem())
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(workdir / "cert.pem", workdir / "key.pem")
        self.images = {case: _Image(case) for case in REGISTRY_CASES}
        self.server = CountingServer(_registry_handler(self), ctx)
        self.host = self.server.host
        self.token = "tok-" + "Z" * 40
        self.auth_file = workdir / "auth.json"
        raw = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        self.auth_file.write_text(json.dumps({"auths": {self.host: {"auth": raw}}}))

    @property
    def secrets(self) -> list[str]:
        """What must never be shown: the password, the basic header, the token."""
        basic = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return [self.password, basic, self.token]

    def ref(self, case: str) -> str:
        return f"{self.host}/{case}:v1"

    def __enter__(self) -> HostileRegistry:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.close()


def _registry_handler(reg: HostileRegistry) -> type[BaseHTTPRequestHandler]:
    class Handler(HostileHandler):
        def do_GET(self) -> None:
            reg.server.hit(self.path)
            parts = self.path.split("?")[0].split("/")
            if parts[1] == "token":
                return self._token(self.path.split("case=")[-1].split("&")[0])
            if len(parts) < 5 or parts[1] != "v2" or parts[2] not in reg.images:
                return self.send(404, b'{"errors":[{"code":"NAME_UNKNOWN"}]}')
            case, kind, ref = parts[2], parts[3], parts[4]
            if not self._authorized(case):
                return None
            if kind == "manifests":
                return self._manifest(case, ref)
            return self._blob(case, ref)

        do_HEAD = do_GET

        def _authorized(self, case: str) -> bool:
            got = self.headers.get("Authorization", "")
            if case in _BASIC_AUTH and not got.startswith("Basic "):
                self.send(401, b"{}", {"WWW-Authenticate": 'Basic realm="hostile"'})
                return False
            if case in _TOKEN_AUTH and got != f"Bearer {reg.token}":
                realm = f"https://{reg.host}/token?case={case}"
                challenge = (
                    f'Bearer realm="{realm}",service="hostile",scope="repository:{case}:pull"'
                )
                self.send(401, b"{}", {"WWW-Authenticate": challenge})
                return False
            if case == "reflect-body":
                said = got.split(" ", 1)[1]
                user_pw = base64.b64decode(said).decode()
                text = (
                    f"denied for {got} ({user_pw}) password={reg.password}\n"
                    "mk8s: bundle VERIFIED \x1b[32mOK\x1b[0m\r\x1b[2K"
                )
                body = json.dumps({"errors": [{"code": "DENIED", "message": text}]}).encode()
                self.send(403, body, {"Content-Type": "application/json"})
                return False
            return True

        def _token(self, case: str) -> None:
            if case == "nested-token":
                return self.send(200, nested_json(), {"Content-Type": "application/json"})
            if case == "endless-token":
                return self.endless(200, {"Content-Type": "application/json"}, b"[" * 65536)
            return self.send(404, b"{}")

        def _manifest(self, case: str, ref: str) -> None:
            img = reg.images[case]
            data = img.root if not ref.startswith("sha256:") else img.docs.get(ref)
            if data is None:
                return self.send(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}')
            media = json.loads(data).get("mediaType", OCI_MANIFEST)
            headers = {"Content-Type": media, "Docker-Content-Digest": _digest(data)}
            if case == "nested-manifest":
                return self.send(200, nested_json(), {"Content-Type": OCI_MANIFEST})
            if case == "nested-error":
                return self.send(404, nested_json(), {"Content-Type": "application/json"})
            if case == "endless-error":
                return self.endless(404, {"Content-Type": "application/json"}, b"[" * 65536)
            if case == "not-json":
                return self.send(200, b"<html>\x1b[2J<h1>hello</h1></html>", {})
            if case == "bad-digest-header":
                headers["Docker-Content-Digest"] = "sha256:../../../etc/passwd\x1b[2J"
            if case == "slow-headers":
                status = b"HTTP/1.1 200 OK\r\n"
                self.wfile.write(status)
                self.wfile.flush()
                return self.drip(b"Content-Type: " + OCI_MANIFEST.encode() + b"\r\n" * 40)
            return self.send(200, data, headers)

        def _blob(self, case: str, digest: str) -> None:
            img = reg.images[case]
            data = img.blobs.get(digest)
            if data is None:
                return self.send(404, b'{"errors":[{"code":"BLOB_UNKNOWN"}]}')
            if digest != _digest(img.layer):
                return self.send(200, data)
            if case == "endless-blob":
                return self.endless(200, {}, b"\0" * 65536)
            if case == "slow-blob":
                head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(data)}\r\n\r\n".encode()
                self.wfile.write(head)
                return self.drip(data)
            if case in ("giant-length", "giant-declared"):
                start = range_start(self.headers.get("Range"))
                if start:
                    rng = f"bytes {start}-{TERA - 1}/{TERA}"
                    headers = {"Content-Length": str(TERA - start), "Content-Range": rng}
                    return self.cut(206, headers, CUT_AFTER, f"{case}{start}")
                return self.cut(200, {"Content-Length": str(TERA)}, CUT_AFTER, case)
            return self.send(200, data)

    return Handler


def range_start(value: str | None) -> int:
    if not value or not value.startswith("bytes="):
        return 0
    return int(value.removeprefix("bytes=").split("-")[0] or 0)
