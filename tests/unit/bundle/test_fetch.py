"""Downloads into the content cache against the example upstream on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from mk8s.bundle.upstream.checksums import expected_hashes, parse_sha256sums
from mk8s.bundle.upstream.fetch import (
    FetchItem,
    cache_path,
    default_cache_dir,
    fetch,
    fetch_text,
)
from mk8s.bundle.upstream.releases import asset_url, install_script_url
from mk8s.bundle.upstream.settings import UpstreamSettings
from mk8s.errors import ChecksumMismatch, InputError, UpstreamError
from tests.support.upstream import ExampleUpstream

TAG = "v1.28.15+rke2r1"
BIG = "rke2-images-multus.linux-amd64.tar.zst"
BIG_SIZE = 6 << 20


@pytest.fixture(scope="module")
def server() -> Iterator[ExampleUpstream]:
    with ExampleUpstream(sizes={BIG: BIG_SIZE}) as up:
        yield up


@pytest.fixture
def upstream(server: ExampleUpstream) -> ExampleUpstream:
    server.faults.clear()
    server.clear_requests()
    return server


@pytest.fixture
def settings(upstream: ExampleUpstream) -> UpstreamSettings:
    return UpstreamSettings.from_env(
        upstream.env, backoff=0.01, backoff_max=0.05, retries=3, read_timeout=10.0
    )


def items(up: ExampleUpstream, s: UpstreamSettings, *names: str, tag: str = TAG) -> list[FetchItem]:
    """FetchItems pinned by the release's sha256sum file, as `bundle create` builds them."""
    sums = parse_sha256sums(up.asset_bytes(tag, "sha256sum-amd64.txt"), "sha256sum-amd64.txt")
    pins = expected_hashes(sums, names, "sha256sum-amd64.txt")
    return [
        FetchItem(name=n, url=asset_url(s, tag, n), sha256=h, source="sha256sum-amd64.txt")
        for n, h in pins.items()
    ]


def leftovers(cache: Path) -> list[Path]:
    return list((cache / "tmp").glob("*"))


# -- sha256sum files ---------------------------------------------------------------------
def test_parse_sha256sums() -> None:
    a, b = "a" * 64, "B" * 64
    text = f"{a}  rke2.linux-amd64.tar.gz\n\n{b} *rke2-images.linux-amd64.tar.zst\r\n{a}  x y\n"
    assert parse_sha256sums(text.encode(), "s") == {
        "rke2.linux-amd64.tar.gz": a,
        "rke2-images.linux-amd64.tar.zst": "b" * 64,
        "x y": a,
    }


@pytest.mark.parametrize(
    "line",
    [
        f"{'a' * 63}  f",
        f"{'g' * 64}  f",
        f"{'a' * 64}f",
        f"{'a' * 64}  ",
        "hello",
        f"{'a' * 64}\tf",
    ],
)
def test_parse_sha256sums_rejects_malformed(line: str) -> None:
    with pytest.raises(UpstreamError, match=r"sums.txt line 2"):
        parse_sha256sums(f"{'a' * 64}  ok\n{line}\n", "sums.txt")


def test_parse_sha256sums_rejects_conflicting_duplicates() -> None:
    with pytest.raises(UpstreamError, match="twice"):
        parse_sha256sums(f"{'a' * 64}  f\n{'b' * 64}  f\n", "s")


def test_asset_missing_from_sums(upstream: ExampleUpstream, settings: UpstreamSettings) -> None:
    upstream.faults.omit_checksum("rke2-images-cilium.linux-amd64.tar.zst")
    with pytest.raises(UpstreamError) as e:
        items(
            upstream, settings, "rke2.linux-amd64.tar.gz", "rke2-images-cilium.linux-amd64.tar.zst"
        )
    assert "no checksum for rke2-images-cilium.linux-amd64.tar.zst" in str(e.value)
    assert e.value.exit_code == 1


def test_bad_pin_is_input_error() -> None:
    with pytest.raises(InputError):
        FetchItem(name="x", url="http://127.0.0.1/x", sha256="abc")


def test_default_cache_dir() -> None:
    assert default_cache_dir({"XDG_CACHE_HOME": "/var/c"}) == Path("/var/c/mk8s")
    assert default_cache_dir({"XDG_CACHE_HOME": "rel"}) == Path.home() / ".cache" / "mk8s"
    assert default_cache_dir({}) == Path.home() / ".cache" / "mk8s"


# -- fetching --------------------------------------------------------------------------------
def test_fetch_follows_redirect_and_caches(
    upstream: ExampleUpstream, settings: UpstreamSettings, tmp_path: Path
) -> None:
    names = ["rke2.linux-amd64.tar.gz", "rke2-images.linux-amd64.tar.zst", BIG]
    want = items(upstream, settings, *names)
    events: list[tuple[str, int, int | None]] = []
    lock = threading.Lock()

    def progress(name: str, done: int, total: int | None) -> None:
        with lock:
            events.append((name, done, total))

    got = fetch(want, settings, tmp_path, jobs=3, progress=progress)
    assert [g.item.name for g in got] == names
    for g in got:
        assert g.downloaded
        assert g.path == cache_path(tmp_path, g.sha256)
        assert g.path.read_bytes() == upstream.asset_bytes(TAG, g.item.name)
    assert got[2].size == BIG_SIZE
    assert (BIG, BIG_SIZE, BIG_SIZE) in events
    assert leftovers(tmp_path) == []
    # GitHub answers with a redirect to its object store; the bytes came from there.
    assert len([r for r in upstream.requests if r.server == "objects"]) == 3
    assert all("%2B" in r.path for r in upstream.requests if "/releases/download/" in r.path)

    upstream.clear_requests()
    again = fetch(want, settings, tmp_path, jobs=3)
    assert upstream.requests == []  # a cache hit asks nothing
    assert [g.downloaded for g in again] == [False, False, False]
    assert [g.path for g in again] == [g.path for g in got]


def test_token_is_not_sent_to_the_object_host(
    upstream: ExampleUpstream, settings: UpstreamSettings, tmp_path: Path
) -> None:
    s = UpstreamSettings.from_env(upstream.env, token="ghp_secret", backoff=0.01)
    fetch(items(upstream, s, "rke2.linux-amd64.tar.gz"), s, tmp_path)
    main = [r for r in upstream.requests if r.server == "main"]
    objects = [r for r in upstream.requests if r.server == "objects"]
    assert [r.header("Authorization") for r in main] == ["Bearer ghp_secret"]
    assert [r.header("Authorization") for r in objects] == [None]


def test_install_script_pinned_on_first_fetch(
    upstream: ExampleUpstream, settings: UpstreamSettings, tmp_path: Path
) -> None:
    item = FetchItem(name="install.sh", url=install_script_url(settings, TAG))
    got, data = fetch_text(item, settings, tmp_path)
    assert data == upstream.asset_bytes(TAG, "install.sh")
    assert got.sha256 == upstream.asset_sha256(TAG, "install.sh")
    assert upstream.requests[0].path == f"/raw/rancher/rke2/{TAG.replace('+', '%2B')}/install.sh"


def test_checksum_mismatch(
    upstream: ExampleUpstream, settings: UpstreamSettings, tmp_path: Path
) -> None:
    name = "rke2-images-canal.linux-amd64.tar.zst"
    upstream.faults.corrupt_asset(name)
    (item,) = items(upstream, settings, name)
    with pytest.raises(ChecksumMismatch) as e:
        fetch([item], settings, tmp_path)
    msg = str(e.value)
    assert name in msg and item.url in msg and item.sha256 in msg  # type: ignore[operator]
    assert "got " in msg and e.value.exit_code == 3
    assert leftovers(tmp_path) == []
    assert list((tmp_path / "sha256").iterdir()) == []


def test_drift_against_a_lock(
    upstream: ExampleUpstream, settings: UpstreamSettings, tmp_path: Path
) -> None:
    tag, name = "v1.27.16+rke2r1", "rke2.linux-amd64.tar.gz"
    (pinned,) = items(upstream, settings, name, tag=tag)
    size = len(upstream.asset_bytes(tag, name))
    pinned = FetchItem(
        name=name, url=pinned.url, sha256=pinned.sha256, size=size, source="mk8s.lock"
    )
    upstream.drift(tag, name)
    # Upstream re-published consistently: the new sums file vouches for the new bytes...
    assert items(upstream, settings, name, tag=tag)[0].sha256 != pinned.sha256
    # ...but the lock does not.
    with pytest.raises(ChecksumMismatch, match="mk8s.lock|bytes"):
        fetch([pinned], settings, tmp_path)
    assert leftovers(tmp_path) == []


def test_cut_download_resumes_with_range(
    upstream: ExampleUpstream, settings: UpstreamSettings, tmp_path: Path
) -> None:
    upstream.faults.cut_once(BIG, at=3_000_000)
    (got,) = fetch(items(upstream, settings, BIG), settings, tmp_path)
    assert got.path.read_bytes() == upstream.asset_bytes(TAG, BIG)
    ranges = [r.header("Range") for r in upstream.requests if r.server == "objects"]
    assert len(ranges) == 2 and ranges[0] is None
    # It resumes from what it kept: the last whole chunk before the cut.
    offset = int((ranges[1] or "").removeprefix("bytes=").removesuffix("-"))
    assert 0 < offset <= 3_000_000
    assert leftovers(tmp_path) == []


def test_resume_refused_restarts_from_zero(
    upstream: ExampleUpstream, settings: UpstreamSettings, tmp_path: Path
) -> None:
    upstream.faults.cut_once(BIG, at=1_000_000)
    upstream.faults.no_range(BIG)
    (got,) = fetch(items(upstream, settings, BIG), settings, tmp_path)
    assert got.path.read_bytes() == upstream.asset_bytes(TAG, BIG)
    assert len([r for r in upstream.requests if r.server == "objects"]) == 2


def test_404(upstream: ExampleUpstream, settings: UpstreamSettings, tmp_path: Path) -> None:
    name = "rke2-images-calico.linux-amd64.tar.zst"
    upstream.faults.not_found(name)
    with pytest.raises(UpstreamError, match=r"HTTP 404 .*" + name.replace(".", r"\.")):
        fetch(items(upstream, settings, name), settings, tmp_path)
    assert len(upstream.requests_for(name)) == 1  # a 404 is not retried
    assert leftovers(tmp_path) == []


def test_500_then_success(
    upstream: ExampleUpstream, settings: UpstreamSettings, tmp_path: Path
) -> None:
    name = "rke2-images-flannel.linux-amd64.tar.zst"
    upstream.faults.fail_times(name, 2, 502)
    upstream.faults.fail_times("install.sh", 1, 429, {"Retry-After": "0"})
    want = [
        *items(upstream, settings, name),
        FetchItem("install.sh", install_script_url(settings, TAG)),
    ]
    got = fetch(want, settings, tmp_path, jobs=2)
    assert got[0].path.read_bytes() == upstream.asset_bytes(TAG, name)
    assert len(upstream.requests_for(f"download/{TAG.replace('+', '%2B')}/{name}")) == 3
    assert len(upstream.requests_for("install.sh")) == 2


def test_retries_run_out(
    upstream: ExampleUpstream, settings: UpstreamSettings, tmp_path: Path
) -> None:
    name = "rke2-images-core.linux-amd64.tar.zst"
    upstream.faults.fail_times(name, 10, 500)
    with pytest.raises(UpstreamError, match="after 4 attempts"):
        fetch(items(upstream, settings, name), settings, tmp_path)
    assert leftovers(tmp_path) == []


def test_unreachable_server(tmp_path: Path) -> None:
    s = UpstreamSettings(release_url="http://127.0.0.1:9/x", retries=1, backoff=0.01)
    with pytest.raises(UpstreamError, match="ConnectionError"):
        fetch([FetchItem("f", "http://127.0.0.1:9/x/f", "a" * 64)], s, tmp_path)
    assert leftovers(tmp_path) == []


def test_one_failure_stops_the_others(
    upstream: ExampleUpstream, settings: UpstreamSettings, tmp_path: Path
) -> None:
    bad = "rke2-images-cilium.linux-amd64.tar.zst"
    upstream.faults.corrupt_asset(bad)
    upstream.faults.stall_after_first_chunk(BIG, 1.0)
    t = time.monotonic()
    with pytest.raises(ChecksumMismatch, match=bad):
        fetch(items(upstream, settings, BIG, bad), settings, tmp_path, jobs=2)
    assert time.monotonic() - t < 5
    assert leftovers(tmp_path) == []
    assert list((tmp_path / "sha256").iterdir()) == []


def test_ctrl_c_leaves_no_part_files(
    upstream: ExampleUpstream, settings: UpstreamSettings, tmp_path: Path
) -> None:
    main = threading.main_thread().ident
    assert main is not None and threading.get_ident() == main
    sent = threading.Event()

    def progress(name: str, done: int, total: int | None) -> None:
        if done > 0 and not sent.is_set():
            sent.set()
            signal.pthread_kill(main, signal.SIGINT)  # Ctrl-C lands on the main thread
            time.sleep(0.3)  # let the main thread react while this download is mid-way

    upstream.faults.stall_after_first_chunk(BIG, 0.5)
    with pytest.raises(KeyboardInterrupt):
        fetch(items(upstream, settings, BIG), settings, tmp_path, progress=progress)
    assert sent.is_set()
    assert leftovers(tmp_path) == []
    assert list((tmp_path / "sha256").iterdir()) == []


def test_stale_part_files_are_swept(
    upstream: ExampleUpstream, settings: UpstreamSettings, tmp_path: Path
) -> None:
    (tmp_path / "tmp").mkdir(parents=True)
    old = tmp_path / "tmp" / "dead.part"
    fresh = tmp_path / "tmp" / "busy.part"
    old.write_bytes(b"x")
    fresh.write_bytes(b"y")

    os.utime(old, (time.time() - 3 * 86400,) * 2)
    fetch(items(upstream, settings, "rke2.linux-amd64.tar.gz"), settings, tmp_path)
    assert not old.exists() and fresh.exists()


def test_damaged_cache_entry_is_replaced(
    upstream: ExampleUpstream, settings: UpstreamSettings, tmp_path: Path
) -> None:
    name = "rke2.linux-amd64.tar.gz"
    (item,) = items(upstream, settings, name)
    data = upstream.asset_bytes(TAG, name)
    item = FetchItem(name=name, url=item.url, sha256=item.sha256, size=len(data))
    dest = cache_path(tmp_path, item.sha256 or "")
    dest.parent.mkdir(parents=True)
    dest.write_bytes(data[:10])  # truncated by a crash
    (got,) = fetch([item], settings, tmp_path)
    assert got.downloaded and dest.read_bytes() == data


# -- a server that sends more than the pinned size ---------------------------------------
# -------------------------------------------------------------- oversized downloads
class _Liar(BaseHTTPRequestHandler):
    """Serves more bytes than pinned, with or without a Content-Length."""

    sent: ClassVar[list[int]] = []

    def log_message(self, *a: object) -> None:
        pass

    def do_GET(self) -> None:
        chunked = self.path.endswith("chunked")
        self.send_response(200)
        total = 0
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                for _ in range(4096):  # up to 256 MiB if nobody stops reading
                    block = b"z" * 65536
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
                    total += len(block)
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                pass
        else:
            self.send_header("Content-Length", str(1 << 30))
            self.end_headers()
            try:
                for _ in range(4096):
                    self.wfile.write(b"z" * 65536)
                    total += 65536
            except OSError:
                pass
        type(self).sent.append(total)


@pytest.fixture
def liar() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Liar)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize("path", ["/with-length", "/chunked"])
def test_download_is_cut_off_past_its_pinned_size(tmp_path: Path, liar: str, path: str) -> None:
    settings = UpstreamSettings(api_url=liar, release_url=liar, raw_url=liar, retries=0)
    item = FetchItem("x.tar.gz", liar + path, sha256="a" * 64, size=100_000)
    start = time.monotonic()
    with pytest.raises(ChecksumMismatch, match="expected 100000 bytes"):
        fetch([item], settings, tmp_path / "cache", jobs=1)
    assert time.monotonic() - start < 20
    assert not list((tmp_path / "cache").rglob("*.part"))
    cached = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert all(p.stat().st_size <= 100_000 for p in cached)
