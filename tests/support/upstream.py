"""A GitHub stand-in on loopback: RKE2's release list, release downloads and raw files.

It answers like GitHub does where mk8s can tell the difference:

* ``GET /api/repos/rancher/rke2/releases?per_page=N&page=K``: release JSON, newest
  *published* first (not version order), pages linked with ``Link: rel="next"`` /
  ``rel="last"`` pointing at ``/api/repositories/<id>/releases`` as GitHub does; drafts,
  prereleases, ``-rc`` tags, respins (``r2``, ``r3``) and a few unparseable tags.
* ``GET /releases/download/<tag>/<asset>`` (``+`` as ``%2B`` or literal): a 302 to a
  second listener (GitHub's objects host) that serves the bytes with Content-Length,
  ETag and ``Range: bytes=N-`` (206).
* ``GET /raw/rancher/rke2/<tag>/install.sh``.

``rke2.linux-ARCH.tar.gz`` carries the RKE2 stand-in (``tests/support/standin``), built
with the sha256 of the release's own ``rke2-images*.linux-ARCH.tar.zst`` assets: a node
runs only with its release's genuine images.

Assets are generated lazily and deterministically per (tag, name), cached on disk, and
small by default; ``image_size`` / ``sizes`` make them big for benchmarks. ``faults``
injects what real upstreams do wrong; ``requests`` records what the client sent.

Standalone, for the README demo and benchmarks::

    python -m tests.support.upstream --port 8080 --dir /tmp/upstream
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gzip
import hashlib
import importlib
import io
import json
import os
import random
import re
import shutil
import socket
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import parse_qs, quote, unquote, urlsplit

REPO = "rancher/rke2"
REPO_ID = 120257553
ARCHES = ("amd64", "arm64")
BASE_DATE = datetime(2022, 5, 2, 18, 0, tzinfo=UTC)
# patches per minor: v1.24.0 .. v1.24.17, ..., v1.31.0 .. v1.31.2
MINORS = {24: 17, 25: 16, 26: 15, 27: 16, 28: 15, 29: 10, 30: 6, 31: 2}
_RKE2_TAG = re.compile(r"^v\d+\.\d+\.\d+(-rc\d+)?\+rke2r\d+$")
UNPARSEABLE_TAGS = ("v1.26.0-alpha1+rke2r1", "latest-stable")


# -- release data ------------------------------------------------------------------------
@dataclass
class FakeRelease:
    tag: str
    id: int
    created_at: datetime
    draft: bool = False
    prerelease: bool = False
    assets: list[str] = field(default_factory=list)

    @property
    def published_at(self) -> datetime | None:
        return None if self.draft else self.created_at

    @property
    def arches(self) -> list[str]:
        return [a for a in ARCHES if f"sha256sum-{a}.txt" in self.assets]


def _image_groups(minor: int, arch: str) -> list[str]:
    groups = ["core", "canal", "cilium", "calico", "multus"]
    if minor >= 26:
        groups.append("flannel")
    if arch == "amd64":
        groups += ["vsphere", "harvester"]
    return groups


def _asset_names(minor: int) -> list[str]:
    names = []
    for arch in ARCHES:
        if arch == "arm64" and minor < 27:
            continue
        names += [f"sha256sum-{arch}.txt", f"rke2.linux-{arch}.tar.gz", f"rke2.linux-{arch}"]
        for g in [None, *_image_groups(minor, arch)]:
            stem = f"rke2-images{'-' + g if g else ''}.linux-{arch}"
            names += [f"{stem}.tar.zst", f"{stem}.tar.gz", f"{stem}.txt"]
        names.append(f"rke2-images-all.linux-{arch}.txt")
    names += ["rke2.windows-amd64.tar.gz", "rke2-windows-ltsc2022-amd64-images.tar.zst"]
    return sorted(names)


def make_releases() -> list[FakeRelease]:
    """About 270 releases, sorted like GitHub: drafts first, then newest created first."""
    out: list[FakeRelease] = []
    next_id = 90000000

    def add(tag: str, day: float, minor: int, **kw: Any) -> None:
        nonlocal next_id
        next_id += 1
        created = BASE_DATE + timedelta(days=day, hours=minor - 24)
        out.append(FakeRelease(tag, next_id, created, assets=_asset_names(minor), **kw))

    for minor, last_patch in MINORS.items():
        i = minor - 24
        for p in range(last_patch + 1):
            day = 30 * (3 * i + p)
            v = f"v1.{minor}.{p}"
            add(f"{v}-rc1+rke2r1", day - 6, minor, prerelease=True)
            if p % 4 == 1:
                add(f"{v}-rc2+rke2r1", day - 3, minor, prerelease=True)
            # The newest v1.30 patch is not promoted yet: a final tag marked prerelease.
            add(f"{v}+rke2r1", day, minor, prerelease=(minor, p) == (30, 6))
            # Respins come out after the next patch: published order != version order.
            if p % 5 == 3:
                add(f"{v}+rke2r2", day + 35, minor)
            if p % 10 == 3:
                add(f"{v}+rke2r3", day + 42, minor)
    end = 30 * 24
    add("v1.31.3-rc1+rke2r1", end - 6, 31, prerelease=True)
    add("v1.31.3+rke2r1", end, 31, draft=True)
    add("v1.30.7+rke2r1", end, 30, draft=True)
    add("v1.32.0-rc1+rke2r1", end - 2, 32, prerelease=True)
    for k, tag in enumerate(UNPARSEABLE_TAGS):
        add(tag, 100 + k, 26)
    out.sort(key=lambda r: (r.draft, r.created_at), reverse=True)
    return out


# -- faults ------------------------------------------------------------------------------
@dataclass
class RateLimit:
    status: int
    reset: int
    retry_after: int | None


class Faults:
    """What the upstream does wrong. Asset faults are keyed by asset name (any tag);
    ``"install.sh"`` targets the raw file and ``"api"`` the release list."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.clear()

    def clear(self) -> None:
        with self._lock:
            self.corrupt: set[str] = set()
            self.omit_from_sums: set[str] = set()
            self.missing: set[str] = set()
            self.cut: dict[str, int] = {}
            self.statuses: dict[str, list[tuple[int, dict[str, str]]]] = {}
            self.rate_limit: RateLimit | None = None
            self.not_json_pages: set[int] = set()
            self.ignore_range: set[str] = set()
            self.stall: dict[str, float] = {}

    # -- setters used by tests ---------------------------------------------------------
    def corrupt_asset(self, name: str) -> None:
        """Serve ``name`` with its first byte flipped (the sha256sum file stays right)."""
        self.corrupt.add(name)

    def omit_checksum(self, name: str) -> None:
        """Leave ``name`` out of every sha256sum file."""
        self.omit_from_sums.add(name)

    def not_found(self, name: str) -> None:
        """Answer 404 for ``name`` (or ``"install.sh"``)."""
        self.missing.add(name)

    def cut_once(self, name: str, at: int) -> None:
        """Drop the connection after byte ``at`` of ``name``, once."""
        with self._lock:
            self.cut[name] = at

    def fail_times(
        self, target: str, n: int, status: int = 500, headers: dict[str, str] | None = None
    ) -> None:
        """Answer ``status`` for the next ``n`` requests of ``target``, then succeed."""
        with self._lock:
            self.statuses.setdefault(target, []).extend([(status, headers or {})] * n)

    def rate_limited(
        self, status: int = 403, reset_in: int = 1800, retry_after: int | None = None
    ) -> None:
        """Answer every API request with a GitHub rate-limit error until cleared."""
        self.rate_limit = RateLimit(status, int(time.time()) + reset_in, retry_after)

    def not_json(self, page: int) -> None:
        """Answer API page ``page`` with an HTML error page (a proxy's login page)."""
        self.not_json_pages.add(page)

    def no_range(self, name: str) -> None:
        """Ignore ``Range`` for ``name``: always answer 200 with the whole file."""
        self.ignore_range.add(name)

    def stall_after_first_chunk(self, name: str, seconds: float) -> None:
        """Send 64 KiB of ``name`` then wait ``seconds`` before the rest."""
        self.stall[name] = seconds

    # -- used by the handler -----------------------------------------------------------
    def take_status(self, target: str) -> tuple[int, dict[str, str]] | None:
        with self._lock:
            queue = self.statuses.get(target)
            return queue.pop(0) if queue else None

    def take_cut(self, name: str) -> int | None:
        with self._lock:
            return self.cut.pop(name, None)


@dataclass(frozen=True)
class Recorded:
    """One request as the server saw it."""

    server: str  # "main" or "objects"
    method: str
    path: str  # with the query string
    headers: dict[str, str]

    def header(self, name: str) -> str | None:
        for k, v in self.headers.items():
            if k.lower() == name.lower():
                return v
        return None


@dataclass(frozen=True)
class Blob:
    path: Path
    sha256: str
    size: int


# -- the stand-in RKE2 files -------------------------------------------------------------
def _standin(name: str) -> Callable[..., bytes] | None:
    """The RKE2 stand-in's generator ``name``, or None while it does not exist."""
    try:
        module = importlib.import_module("tests.support.standin")
    except ImportError:
        return None
    fn = getattr(module, name, None)
    return fn if callable(fn) else None


@functools.lru_cache(maxsize=1024)  # about 30 KB each; a listing sizes about 540
def _tarball(arch: str, tag: str, images: tuple[tuple[str, str], ...]) -> bytes:
    """The stand-in's tarball; ``images`` (name, sha256) are the release's genuine
    image tarballs, which the stand-in insists on finding in agent/images."""
    make = _standin("rke2_tarball")
    if make is None or not _RKE2_TAG.match(tag):
        return _placeholder_tarball(arch, tag)
    return bytes(make(arch, tag, dict(images)))


@functools.lru_cache(maxsize=4096)
def _install_script(tag: str) -> bytes:
    make = _standin("install_script")
    if make and _RKE2_TAG.match(tag):
        return bytes(make(tag))
    return f"#!/bin/sh\n# placeholder install.sh for RKE2 {tag}\nexit 0\n".encode()


# -- real docker archives for rke2-images*.linux-ARCH.tar.zst (tests/support/standin/images.py)
def _real_images(tag: str) -> Any:
    """The stand-in's image module when ``tag``'s image tarballs are real docker archives
    (every RKE2-shaped tag), else None (random bytes, as for the other assets)."""
    if not _RKE2_TAG.match(tag):
        return None
    try:
        return importlib.import_module("tests.support.standin.images")
    except ImportError:
        return None


def _real_image_size(arch: str, tag: str, name: str, configured: int) -> int:
    """The configured size, or the archive's own size when that is bigger."""
    return max(configured, int(_real_images(tag).natural_size(arch, tag, name)))


def _real_image_writer(
    arch: str, tag: str, name: str, size: int, key: str
) -> Callable[[BinaryIO], None]:
    """A docker-save archive of the release's images of that group, zstd, padded to
    ``size`` with a skippable frame of key-derived bytes (new bytes on drift)."""
    writer: Callable[[BinaryIO], None] = _real_images(tag).image_archive_writer(
        arch, tag, name, size, key
    )
    return writer


def _placeholder_tarball(arch: str, tag: str) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        data = f"#!/bin/sh\necho rke2 version {tag} ({arch})\n".encode()
        info = tarfile.TarInfo("bin/rke2")
        info.size, info.mode, info.mtime = len(data), 0o755, 0
        tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


# -- the server ----------------------------------------------------------------------------
class ExampleUpstream:
    """GitHub on 127.0.0.1: use as a context manager; read ``api_url``, ``release_url``
    and ``raw_url`` for the three MK8S_* settings."""

    def __init__(
        self,
        *,
        dir: Path | str | None = None,
        image_size: int = 3000,
        sizes: dict[str, int] | None = None,
        port: int = 0,
        object_port: int = 0,
        max_per_page: int = 100,
        seed: str = "mk8s-example",
        extra_tags: tuple[str, ...] = (),
    ) -> None:
        self.image_size = image_size
        self.sizes = dict(sizes or {})
        self.max_per_page = max_per_page
        self.seed = seed
        self.faults = Faults()
        self.requests: list[Recorded] = []
        self.releases = make_releases()
        for i, tag in enumerate(extra_tags):  # later patches (``v1.29.13+rke2r1``), published
            minor = int(tag.split(".")[1])
            when = BASE_DATE + timedelta(days=30 * 24 + 10 + i)
            self.releases.insert(
                0, FakeRelease(tag, 99000000 + i, when, assets=_asset_names(minor))
            )
        self._by_tag = {r.tag: r for r in self.releases}
        self._generation: dict[tuple[str, str], int] = {}
        self._blobs: dict[str, Blob] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self._own_dir = dir is None
        self.dir = Path(tempfile.mkdtemp(prefix="mk8s-upstream-")) if dir is None else Path(dir)
        (self.dir / "blobs").mkdir(parents=True, exist_ok=True)
        self._main = ThreadingHTTPServer(("127.0.0.1", port), _handler(self, "main"))
        self._objects = ThreadingHTTPServer(("127.0.0.1", object_port), _handler(self, "objects"))
        self._threads: list[threading.Thread] = []
        base = f"http://127.0.0.1:{self._main.server_address[1]}"
        self.base_url = base
        self.objects_url = f"http://127.0.0.1:{self._objects.server_address[1]}"
        self.api_url = f"{base}/api"
        self.release_url = f"{base}/releases/download"
        self.raw_url = f"{base}/raw/{REPO}"

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> ExampleUpstream:
        for srv in (self._main, self._objects):
            srv.daemon_threads = True
            t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
            t.daemon = True
            t.start()
            self._threads.append(t)
        return self

    def close(self) -> None:
        for srv in (self._main, self._objects):
            srv.shutdown()
            srv.server_close()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> ExampleUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def env(self) -> dict[str, str]:
        """The environment that points mk8s here."""
        return {
            "MK8S_GITHUB_API_URL": self.api_url,
            "MK8S_RELEASE_URL": self.release_url,
            "MK8S_RAW_URL": self.raw_url,
        }

    # -- data for tests ------------------------------------------------------------------
    def release(self, tag: str) -> FakeRelease:
        return self._by_tag[tag]

    def asset_bytes(self, tag: str, name: str) -> bytes:
        """The correct current bytes of an asset (``install.sh`` for the raw file)."""
        return self.blob(tag, name).path.read_bytes()

    def asset_sha256(self, tag: str, name: str) -> str:
        return self.blob(tag, name).sha256

    def drift(self, tag: str, name: str) -> None:
        """Upstream re-publishes ``name`` at ``tag`` with new bytes (and a matching
        sha256sum file): only a lockfile notices."""
        with self._lock:
            key = (tag, name)
            self._generation[key] = self._generation.get(key, 0) + 1

    def requests_for(self, fragment: str) -> list[Recorded]:
        return [r for r in list(self.requests) if fragment in r.path]

    def clear_requests(self) -> None:
        self.requests.clear()

    # -- generated content -------------------------------------------------------------
    def size_of(self, tag: str, name: str) -> int:
        """The size the API reports, without generating big files."""
        kind, arch = _kind(name)
        if kind == "image" and _real_images(tag):
            return _real_image_size(arch, tag, name, self.sizes.get(name, self.image_size))
        if name in self.sizes:
            return self.sizes[name]
        if kind == "image":
            return self.image_size
        if kind == "image-gz":
            return self.image_size // 2 + 17
        if kind == "sums":
            omit = self.faults.omit_from_sums
            return sum(len(line) for line in self._sums_lines(tag, arch, omit))
        small = self._small_content(tag, name, sizing=True)
        if small is not None:
            return len(small)
        return 2048 if kind == "binary" else 1024

    def blob(self, tag: str, name: str) -> Blob:
        """Generate (once) and return the current content of an asset."""
        gen = self._generation.get((tag, name), 0)
        kind, arch = _kind(name)
        random_kind = kind not in ("sums", "tarball", "install", "list")
        size = self.size_of(tag, name) if random_kind else -1
        key = f"{self.seed}|{tag}|{name}|{gen}|{size}"
        if kind == "sums":
            key += "|" + "".join(self._sums_lines(tag, arch, None, hashes=True))
            key += "|omit=" + ",".join(sorted(self.faults.omit_from_sums))
        small = self._small_content(tag, name)
        if small is not None:
            key += "|" + hashlib.sha256(small).hexdigest()  # e.g. the image hashes it embeds
            make: Callable[[BinaryIO], None] = _writer(small)
        elif kind == "sums":
            lines = self._sums_lines(tag, arch, self.faults.omit_from_sums, hashes=True)
            make = _writer("".join(lines).encode())
        elif kind == "image" and _real_images(tag):  # real docker archives, padded
            make = _real_image_writer(arch, tag, name, size, key)
        else:
            make = _random_writer(key, size)
        return self._blob(key, make)

    def _small_content(self, tag: str, name: str, sizing: bool = False) -> bytes | None:
        """The bytes of a small generated file (cheap, cached), or None for the others.
        ``sizing``: only its size matters (the tarball then embeds placeholder image
        hashes, of the same size, instead of generating the images)."""
        kind, arch = _kind(name)
        if kind == "tarball":
            data = _tarball(arch, tag, self._image_hashes(tag, arch, sizing))
        elif kind == "install":
            data = _install_script(tag)
        elif kind == "list":
            data = _image_list(tag, name)
        else:
            return None
        gen = self._generation.get((tag, name), 0)
        return data + f"\n# drift {gen}\n".encode() if gen else data

    def _image_hashes(self, tag: str, arch: str, sizing: bool) -> tuple[tuple[str, str], ...]:
        """(name, sha256) of the release's ``rke2-images*.linux-ARCH.tar.zst``."""
        names = sorted(
            n
            for n in self._by_tag[tag].assets
            if n.startswith("rke2-images") and n.endswith(f".linux-{arch}.tar.zst")
        )
        return tuple((n, "0" * 64 if sizing else self.blob(tag, n).sha256) for n in names)

    def _sums_lines(
        self, tag: str, arch: str, omit: set[str] | None, hashes: bool = False
    ) -> list[str]:
        covered = [
            n
            for n in self._by_tag[tag].assets
            if not n.startswith("sha256sum-") and _kind(n)[1] == arch and n not in (omit or ())
        ]
        if not hashes:
            return [f"{'0' * 64}  {n}\n" for n in covered]
        return [f"{self.blob(tag, n).sha256}  {n}\n" for n in covered]

    def _blob(self, key: str, make: Callable[[BinaryIO], None]) -> Blob:
        digest = hashlib.sha256(key.encode()).hexdigest()
        with self._lock:
            if digest in self._blobs:
                return self._blobs[digest]
            lock = self._locks.setdefault(digest, threading.Lock())
        with lock:
            if digest in self._blobs:
                return self._blobs[digest]
            path = self.dir / "blobs" / digest
            side = path.with_suffix(".sha256")
            if path.exists() and side.exists():
                sha = side.read_text().strip()
            else:
                tmp = path.with_suffix(".tmp")
                with open(tmp, "wb") as f:
                    make(f)
                sha = _sha256_file(tmp)
                os.replace(tmp, path)
                side.write_text(sha + "\n")
            blob = Blob(path, sha, path.stat().st_size)
            with self._lock:
                self._blobs[digest] = blob
            return blob

    # -- JSON --------------------------------------------------------------------------
    def release_json(self, rel: FakeRelease) -> dict[str, Any]:
        api = f"{self.api_url}/repos/{REPO}"
        user = {"login": "rancher-max", "id": 123, "type": "User", "site_admin": False}
        assets = []
        for k, name in enumerate(rel.assets):
            when = _iso(rel.created_at)
            assets.append(
                {
                    "url": f"{api}/releases/assets/{rel.id * 100 + k}",
                    "id": rel.id * 100 + k,
                    "node_id": f"RA_{rel.id * 100 + k}",
                    "name": name,
                    "label": "",
                    "uploader": user,
                    "content_type": "application/octet-stream",
                    "state": "uploaded",
                    "size": self.size_of(rel.tag, name),
                    "download_count": 1000 + k,
                    "created_at": when,
                    "updated_at": when,
                    "browser_download_url": f"{self.release_url}/{quote(rel.tag, safe='')}/{name}",
                }
            )
        return {
            "url": f"{api}/releases/{rel.id}",
            "assets_url": f"{api}/releases/{rel.id}/assets",
            "upload_url": f"https://uploads.github.com/repos/{REPO}/releases/{rel.id}/assets{{?name,label}}",
            "html_url": f"https://github.com/{REPO}/releases/tag/{rel.tag}",
            "id": rel.id,
            "author": user,
            "node_id": f"RE_{rel.id}",
            "tag_name": rel.tag,
            "target_commitish": "master",
            "name": rel.tag,
            "draft": rel.draft,
            "prerelease": rel.prerelease,
            "created_at": _iso(rel.created_at),
            "published_at": _iso(rel.published_at) if rel.published_at else None,
            "assets": assets,
            "tarball_url": f"{api}/tarball/{rel.tag}",
            "zipball_url": f"{api}/zipball/{rel.tag}",
            "body": f"<!-- {rel.tag} -->\nThis release updates Kubernetes.",
        }


def _iso(d: datetime) -> str:
    return d.strftime("%Y-%m-%dT%H:%M:%SZ")


def _kind(name: str) -> tuple[str, str]:
    """(kind, arch) of an asset name."""
    if name == "install.sh":
        return "install", ""
    arch = next((a for a in ARCHES if f"-{a}" in name), "amd64")
    if name.startswith("sha256sum-"):
        return "sums", arch
    if name.startswith("rke2.linux-"):
        return ("tarball" if name.endswith(".tar.gz") else "binary"), arch
    if name.startswith("rke2-images") and ".linux-" in name:
        if name.endswith(".tar.zst"):
            return "image", arch
        if name.endswith(".tar.gz"):
            return "image-gz", arch
        return "list", arch
    return "other", arch


@functools.lru_cache(maxsize=65536)
def _image_list(tag: str, name: str) -> bytes:
    version = tag.split("+")[0]
    group = name.split(".linux-")[0].removeprefix("rke2-images").lstrip("-") or "all"
    lines = [f"docker.io/rancher/{group}-image-{k}:{version}-build2024\n" for k in range(3)]
    return "".join(lines).encode()


def _writer(data: bytes) -> Callable[[BinaryIO], None]:
    def write(f: BinaryIO) -> None:
        f.write(data)

    return write


def _random_writer(key: str, size: int) -> Callable[[BinaryIO], None]:
    def write(f: BinaryIO) -> None:
        rnd = random.Random(hashlib.sha256(key.encode()).digest())
        left = size
        while left > 0:
            n = min(left, 1 << 22)
            f.write(rnd.randbytes(n))
            left -= n

    return write


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


# -- HTTP ------------------------------------------------------------------------------------
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


def _handler(up: ExampleUpstream, server: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def version_string(self) -> str:
            return "GitHub.com"

        timeout = 30

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def handle(self) -> None:
            # The client went away (or a test cut it off): nothing left to answer.
            with contextlib.suppress(ConnectionResetError, BrokenPipeError, TimeoutError):
                super().handle()

        def do_GET(self) -> None:
            up.requests.append(Recorded(server, "GET", self.path, dict(self.headers.items())))
            try:
                self._route()
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        # -- routing -----------------------------------------------------------------
        def _route(self) -> None:
            path = urlsplit(self.path).path
            if server == "objects":
                m = re.fullmatch(r"/objects/([^/]+)/([^/]+)", path)
                if m:
                    return self._object(unquote(m[1]), unquote(m[2]))
            elif path in (f"/api/repos/{REPO}/releases", f"/api/repositories/{REPO_ID}/releases"):
                return self._api_page()
            elif m := re.fullmatch(rf"/api/repos/{REPO}/releases/tags/([^/]+)", path):
                rel = up._by_tag.get(unquote(m[1]))
                if rel and not rel.draft:
                    return self._json(200, up.release_json(rel))
            elif m := re.fullmatch(r"/releases/download/([^/]+)/([^/]+)", path):
                return self._download(unquote(m[1]), unquote(m[2]))
            elif m := re.fullmatch(rf"/raw/{REPO}/([^/]+)/install\.sh", path):
                return self._raw(unquote(m[1]))
            self._json(404, {"message": "Not Found"})

        # -- API -----------------------------------------------------------------------
        def _api_page(self) -> None:
            q = parse_qs(urlsplit(self.path).query)
            rl = up.faults.rate_limit
            authed = "Authorization" in self.headers
            limit = 5000 if authed else 60
            reset = int(time.time()) + 3600
            if rl is not None:
                extra = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(rl.reset)}
                if rl.retry_after is not None:
                    extra["Retry-After"] = str(rl.retry_after)
                msg = "API rate limit exceeded for 127.0.0.1. (But here's the good news: ...)"
                return self._json(rl.status, {"message": msg}, extra, limit=limit)
            if self._injected("api"):
                return
            try:
                per_page = max(1, min(int(q.get("per_page", ["30"])[0]), up.max_per_page))
                page = max(1, int(q.get("page", ["1"])[0]))
            except ValueError:
                return self._json(422, {"message": "Validation Failed"})
            if page in up.faults.not_json_pages:
                body = b"<html><body><h1>Proxy login required</h1></body></html>"
                return self._send(200, body, {"Content-Type": "text/html; charset=utf-8"})
            rels = up.releases[(page - 1) * per_page : page * per_page]
            last = max(1, -(-len(up.releases) // per_page))
            link_base = f"{up.api_url}/repositories/{REPO_ID}/releases?per_page={per_page}&page="
            links = []
            if page > 1:
                links.append(f'<{link_base}{page - 1}>; rel="prev"')
            if page < last:
                links += [
                    f'<{link_base}{page + 1}>; rel="next"',
                    f'<{link_base}{last}>; rel="last"',
                ]
            if page > 1:
                links.append(f'<{link_base}1>; rel="first"')
            headers = {"Link": ", ".join(links)} if links else {}
            headers["X-RateLimit-Reset"] = str(reset)
            self._json(200, [up.release_json(r) for r in rels], headers, limit=limit)

        def _json(
            self,
            status: int,
            data: Any,
            headers: dict[str, str] | None = None,
            limit: int = 60,
        ) -> None:
            body = json.dumps(data, indent=1).encode()
            h = {
                "Content-Type": "application/json; charset=utf-8",
                "X-GitHub-Media-Type": "github.v3; format=json",
                "X-RateLimit-Limit": str(limit),
                "X-RateLimit-Remaining": str(limit - 1),
                "X-RateLimit-Reset": str(int(time.time()) + 3600),
                "X-RateLimit-Resource": "core",
            }
            h.update(headers or {})
            self._send(status, body, h)

        def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _injected(self, target: str) -> bool:
            if target in up.faults.missing:
                self._send(404, b"Not Found", {"Content-Type": "text/plain"})
                return True
            got = up.faults.take_status(target)
            if got is None:
                return False
            status, headers = got
            self._send(
                status, f"error {status}\n".encode(), {"Content-Type": "text/plain", **headers}
            )
            return True

        # -- downloads -------------------------------------------------------------------
        def _download(self, tag: str, name: str) -> None:
            rel = up._by_tag.get(tag)
            if rel is None or rel.draft or name not in rel.assets:
                return self._send(404, b"Not Found", {"Content-Type": "text/plain"})
            if self._injected(name):
                return
            sig = hashlib.sha256(f"{tag}/{name}".encode()).hexdigest()[:20]
            loc = f"{up.objects_url}/objects/{quote(tag, safe='')}/{name}?X-Amz-Signature={sig}"
            self.send_response(302)
            self.send_header("Location", loc)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _object(self, tag: str, name: str) -> None:
            if tag not in up._by_tag or name not in up._by_tag[tag].assets:
                return self._send(404, b"Not Found", {"Content-Type": "text/plain"})
            self._blob(up.blob(tag, name), name)

        def _raw(self, tag: str) -> None:
            if tag not in up._by_tag or up._by_tag[tag].draft:
                return self._send(404, b"404: Not Found", {"Content-Type": "text/plain"})
            if self._injected("install.sh"):
                return
            self._blob(up.blob(tag, "install.sh"), "install.sh")

        def _blob(self, blob: Blob, name: str) -> None:
            size, start, end, status = blob.size, 0, blob.size - 1, 200
            rng = self.headers.get("Range")
            if rng and name not in up.faults.ignore_range:
                m = _RANGE.match(rng.strip())
                if m:
                    start = int(m[1])
                    end = min(int(m[2]), size - 1) if m[2] else size - 1
                    if start >= size:
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{size}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    status = 206
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(end - start + 1))
            self.send_header("ETag", f'"0x{blob.sha256[:16]}"')
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Last-Modified", "Mon, 02 May 2022 18:00:00 GMT")
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            cut = up.faults.take_cut(name)
            stop = end + 1 if cut is None or cut <= start else min(cut, end + 1)
            with open(blob.path, "rb") as f:
                self._stream(f, name, start, stop)
            if stop <= end:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)

        def _stream(self, f: BinaryIO, name: str, start: int, stop: int) -> None:
            pos = start
            if name in up.faults.corrupt and pos == 0 and stop > 0:
                f.seek(0)
                self.wfile.write(bytes([f.read(1)[0] ^ 0xFF]))
                pos = 1
            stall = up.faults.stall.get(name)
            if stall is not None and stop - pos > 65536:
                f.seek(pos)
                self.wfile.write(f.read(65536))
                pos += 65536
                time.sleep(stall)
            if stop > pos:
                self.connection.sendfile(f, pos, stop - pos)

    return Handler


# Tags of the example release list the upgrade tests name.
OLD = "v1.28.15+rke2r1"  # what v1.28.x resolves to
NEW = "v1.29.10+rke2r1"  # what v1.29.x resolves to
SKIP = "v1.30.5+rke2r1"  # two minors above OLD
R2, R3 = "v1.28.13+rke2r2", "v1.28.13+rke2r3"  # respins of one patch


def iter_pages(per_page: int, total: int) -> Iterator[tuple[int, int]]:
    """(page, count) pairs a full listing takes; for tests that count requests."""
    page = 1
    while (page - 1) * per_page < total:
        yield page, min(per_page, total - (page - 1) * per_page)
        page += 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve a GitHub stand-in for RKE2 on 127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--object-port", type=int, default=0)
    parser.add_argument("--dir", default=None, help="cache generated files here (kept)")
    parser.add_argument("--image-size", type=int, default=3000, help="bytes per image tarball")
    parser.add_argument(
        "--size", action="append", default=[], metavar="NAME=BYTES", help="size of one asset"
    )
    args = parser.parse_args(argv)
    sizes = {k: int(v) for k, v in (s.split("=", 1) for s in args.size)}
    up = ExampleUpstream(
        dir=args.dir,
        image_size=args.image_size,
        sizes=sizes,
        port=args.port,
        object_port=args.object_port,
    )
    with up:
        for k, v in up.env.items():
            print(f"{k}={v}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
