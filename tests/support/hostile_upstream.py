"""A release server on loopback that misbehaves on purpose, one way per case.

:class:`HostileUpstream` stands in for GitHub and its release downloads (plain HTTP) with
one release, ``v1.28.15+rke2r1``; the first path component is the case
(``MK8S_GITHUB_API_URL=http://HOST/CASE/api``; :meth:`HostileUpstream.env`), misbehaving
as :data:`UPSTREAM_CASES` describes. Cases not named there answer correctly.
"""

from __future__ import annotations

import hashlib
import json
import random
from http.server import BaseHTTPRequestHandler

from tests.support.hostile_registry import (
    CUT_AFTER,
    TERA,
    CountingServer,
    HostileHandler,
    nested_json,
    range_start,
)

TAG = "v1.28.15+rke2r1"
QUOTED_TAG = "v1.28.15%2Brke2r1"
ASSETS = ("rke2.linux-amd64.tar.gz", "rke2-images.linux-amd64.tar.zst")

#: release-server case -> what it does wrong, the command that meets it, the exit class.
UPSTREAM_CASES: dict[str, tuple[str, str, int]] = {
    "api-nested": ("the release list is JSON nested 200,000 deep", "lock", 1),
    "api-endless": ("the release list never ends", "lock", 1),
    "api-drip": ("the release list drips one byte every 2 s", "lock", 1),
    "sums-endless": ("the checksum file never ends", "lock", 1),
    "script-drip": ("install.sh drips one byte every 2 s", "lock", 1),
    "tarball-giant": ("the tarball claims 1 TB, each try closes after 64 KiB", "create", 1),
}


class HostileUpstream:
    """A release server whose first path component is the case (see module doc)."""

    def __init__(self) -> None:
        rnd = random.Random("upstream")
        self.files = {name: rnd.randbytes(2048) for name in ASSETS}
        sums = "".join(f"{hashlib.sha256(d).hexdigest()}  {n}\n" for n, d in self.files.items())
        self.files["sha256sum-amd64.txt"] = sums.encode()
        self.script = b"#!/bin/sh\necho install\n"
        self.server = CountingServer(_upstream_handler(self), None)
        self.host = self.server.host

    def env(self, case: str) -> dict[str, str]:
        base = f"http://{self.host}/{case}"
        return {
            "MK8S_GITHUB_API_URL": f"{base}/api",
            "MK8S_RELEASE_URL": f"{base}/releases/download",
            "MK8S_RAW_URL": f"{base}/raw/rancher/rke2",
        }

    def release_list(self, case: str) -> bytes:
        assets = [
            {
                "name": n,
                "size": TERA if case == "tarball-giant" and n == ASSETS[0] else len(d),
                "browser_download_url": f"http://{self.host}/{case}/releases/download/{n}",
            }
            for n, d in self.files.items()
        ]
        rel = {"tag_name": TAG, "draft": False, "prerelease": False, "assets": assets}
        return json.dumps([rel]).encode()

    def __enter__(self) -> HostileUpstream:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.close()


def _upstream_handler(up: HostileUpstream) -> type[BaseHTTPRequestHandler]:
    class Handler(HostileHandler):
        def do_GET(self) -> None:
            up.server.hit(self.path)
            case, _, rest = self.path.lstrip("/").partition("/")
            if rest.startswith("api/"):
                return self._api(case)
            if rest.startswith("raw/"):
                if case == "script-drip":
                    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(up.script)}\r\n\r\n"
                    self.wfile.write(head.encode())
                    return self.drip(up.script)
                return self.send(200, up.script)
            name = rest.rsplit("/", 1)[-1]
            return self._download(case, name)

        def _api(self, case: str) -> None:
            json_type = {"Content-Type": "application/json"}
            if case == "api-nested":
                return self.send(200, b"[" + nested_json() + b"]", json_type)
            if case == "api-endless":
                return self.endless(200, json_type, b"[" * 65536)
            body = up.release_list(case)
            if case == "api-drip":
                head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                self.wfile.write(head)
                return self.drip(body)
            return self.send(200, body, json_type)

        def _download(self, case: str, name: str) -> None:
            data = up.files.get(name)
            if data is None:
                return self.send(404, b"not found")
            if case == "sums-endless" and name.startswith("sha256sum"):
                return self.endless(200, {}, b"0" * 65536)
            if name == ASSETS[0] and case == "tarball-giant":
                start = range_start(self.headers.get("Range"))
                if start:
                    rng = f"bytes {start}-{TERA - 1}/{TERA}"
                    headers = {"Content-Length": str(TERA - start), "Content-Range": rng}
                    return self.cut(206, headers, CUT_AFTER, f"{case}{start}")
                return self.cut(200, {"Content-Length": str(TERA)}, CUT_AFTER, case)
            return self.send(200, data)

    return Handler
