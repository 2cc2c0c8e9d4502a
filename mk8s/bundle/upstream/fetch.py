"""Parallel, resumable downloads into a content cache, hashed while they stream.

Every file lands in ``CACHE/tmp/<random>.part`` while it downloads and its sha256 is
computed on the fly (no second read). Only a file whose hash matches what upstream's
``sha256sum-ARCH.txt`` or the lockfile pins is moved (atomically, ``os.replace``) to
``CACHE/sha256/<hex>``; a file already there is not downloaded again, so a second
``bundle create`` of the same lock fetches nothing. On any failure, and on Ctrl-C, no
``.part`` file is left behind.

The library prints nothing: callers pass a progress callback.
"""

from __future__ import annotations

import os
import queue
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import requests

from mk8s import net
from mk8s.bundle.upstream.settings import UpstreamSettings
from mk8s.bundle.upstream.transfer import CHUNK, FetchItem, Transfer
from mk8s.callbacks import TransferProgress
from mk8s.errors import ChecksumMismatch, OutputError
from mk8s.net import Cancelled

STALE_PART_SECONDS = 24 * 3600


@dataclass(frozen=True)
class Fetched:
    """A file in the cache whose bytes hash to ``sha256``."""

    item: FetchItem
    path: Path
    sha256: str
    size: int
    downloaded: bool


def default_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CACHE_HOME/mk8s``, else ``~/.cache/mk8s`` (``--cache`` overrides it)."""
    env = os.environ if env is None else env
    xdg = env.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "mk8s"


def cache_path(cache_dir: Path, sha256: str) -> Path:
    """Where the file with this sha256 lives in the content cache."""
    return Path(cache_dir) / "sha256" / sha256.lower()


# -- fetching --------------------------------------------------------------------------
def fetch(
    items: Sequence[FetchItem],
    settings: UpstreamSettings,
    cache_dir: Path | str | None = None,
    jobs: int = 4,
    progress: TransferProgress | None = None,
    *,
    session_factory: Callable[[], requests.Session] = net.new_session,
) -> list[Fetched]:
    """Make every item available in the content cache; return them in item order.

    Items whose pinned hash is cached are not requested at all. The rest download
    ``jobs`` at a time, with retries and resume (see :func:`download`). The first
    failure stops the others and is raised once they have cleaned up: ChecksumMismatch
    (exit 3) for bytes that differ from the pin, UpstreamError for network / server
    trouble, OutputError when the cache cannot be written. Ctrl-C also stops every
    download and removes their ``.part`` files before KeyboardInterrupt propagates.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    tmp = cache / "tmp"
    try:
        (cache / "sha256").mkdir(parents=True, exist_ok=True)
        tmp.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create the cache {cache}: {e}", "pass --cache DIR") from e
    _sweep_stale_parts(tmp)

    results: list[Fetched | None] = [None] * len(items)
    pending: dict[tuple[str, str | None], list[int]] = {}
    for i, item in enumerate(items):
        hit = _cached(cache, item)
        if hit is not None:
            results[i] = hit
            if progress is not None:
                progress(item.name, hit.size, hit.size)
        else:
            pending.setdefault((item.url, item.sha256), []).append(i)

    if pending:
        downloads = _Downloads(items, results, settings, cache, progress, session_factory)
        downloads.run(pending.values(), jobs)
    return [r for r in results if r is not None]


class _Downloads:
    """The downloads of one :func:`fetch`, on daemon threads, ``jobs`` at a time;
    each result lands at its items' places in ``results``.

    Daemon threads, not an executor: on Ctrl-C a worker may sit in a blocking read
    until its timeout, and the process must not wait for it. The main thread gives
    workers a moment to clean up, then removes any ``.part`` file still registered.
    """

    def __init__(
        self,
        items: Sequence[FetchItem],
        results: list[Fetched | None],
        settings: UpstreamSettings,
        cache: Path,
        progress: TransferProgress | None,
        session_factory: Callable[[], requests.Session],
    ) -> None:
        self.items = items
        self.results = results
        self.settings = settings
        self.cache = cache
        self.progress = progress
        self.session_factory = session_factory
        self.stop = threading.Event()
        self.work: queue.Queue[list[int]] = queue.Queue()
        self.errors: list[BaseException] = []
        self.live_parts: set[Path] = set()
        self.lock = threading.Lock()

    def run(self, pending: Iterable[list[int]], jobs: int) -> None:
        """Download each group of ``pending`` (the indexes of one URL and hash); the
        first failure stops the rest and is raised once they have cleaned up."""
        for idxs in pending:
            self.work.put(idxs)
        threads = [
            threading.Thread(target=self._worker, daemon=True, name=f"mk8s-fetch-{n}")
            for n in range(max(1, min(jobs, self.work.qsize())))
        ]
        _run_to_the_end(threads, self.stop, self.live_parts)
        if self.errors:
            raise self.errors[0]

    def _worker(self) -> None:
        while not self.stop.is_set():
            try:
                idxs = self.work.get_nowait()
            except queue.Empty:
                return
            try:
                self._fetch(idxs)
            except Cancelled:
                return
            except BaseException as e:
                with self.lock:
                    self.errors.append(e)
                self.stop.set()
                return

    def _fetch(self, idxs: list[int]) -> None:
        with self.session_factory() as session:
            got = download(
                self.items[idxs[0]],
                self.settings,
                self.cache,
                session=session,
                stop=self.stop,
                progress=self.progress,
                live_parts=self.live_parts,
            )
        with self.lock:
            for i in idxs:
                self.results[i] = _for_item(got, self.items[i])


def _run_to_the_end(
    threads: list[threading.Thread], stop: threading.Event, parts: set[Path]
) -> None:
    """Start ``threads`` and wait for them all. On Ctrl-C (anything raised while
    waiting) stop them, give them a moment to clean up, then remove every ``.part``
    file still registered in ``parts``."""
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.2)
    except BaseException:
        stop.set()
        deadline = time.monotonic() + 2.0
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        for part in list(parts):
            part.unlink(missing_ok=True)
        raise


def _for_item(got: Fetched, item: FetchItem) -> Fetched:
    if got.item is item:
        return got
    return Fetched(item=item, path=got.path, sha256=got.sha256, size=got.size, downloaded=True)


def _cached(cache: Path, item: FetchItem) -> Fetched | None:
    if item.sha256 is None:
        return None
    path = cache_path(cache, item.sha256)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    if item.size is not None and size != item.size:
        # A cache entry of the wrong size is damage (a crash before the data hit the
        # disk); a fresh download replaces it.
        path.unlink(missing_ok=True)
        return None
    return Fetched(item=item, path=path, sha256=item.sha256, size=size, downloaded=False)


def _sweep_stale_parts(tmp: Path) -> None:
    # A SIGKILLed mk8s cannot clean up; remove its leftovers, but not the .part files
    # of another mk8s running right now on the same cache.
    cutoff = time.time() - STALE_PART_SECONDS
    for p in tmp.glob("*.part"):
        try:
            if p.stat().st_mtime < cutoff:
                p.unlink()
        except OSError:
            pass


def download(
    item: FetchItem,
    settings: UpstreamSettings,
    cache_dir: Path,
    *,
    session: requests.Session,
    stop: threading.Event | None = None,
    progress: TransferProgress | None = None,
    live_parts: set[Path] | None = None,
) -> Fetched:
    """Download one item into the cache (no cache lookup; :func:`fetch` does that).

    Follows redirects, retries connection errors, timeouts, 5xx and 429 with backoff,
    and resumes a cut transfer with ``Range: bytes=N-`` (restarting from zero with a
    fresh hash if the server answers 200 or a wrong ``Content-Range``). Raises
    ChecksumMismatch naming the artifact, URL, expected and got hash or size;
    UpstreamError for a rate limit, a 4xx or exhausted retries; OutputError when the
    cache cannot be written. The ``.part`` file is deleted on every failure.
    """
    stop = stop or threading.Event()
    tmp_dir = Path(cache_dir) / "tmp"
    part = tmp_dir / f"{secrets.token_hex(8)}.part"
    ok = False
    if live_parts is not None:
        live_parts.add(part)
    try:
        with _open_part(part) as f:
            state = Transfer(item, settings, f, progress, stop)
            state.run(session)
        got = state.hasher.hexdigest()
        _check(item, got, state.done)
        final = cache_path(cache_dir, got)
        try:
            os.replace(part, final)
        except OSError as e:
            raise OutputError(f"cannot move {item.name} into the cache: {e}") from e
        ok = True
        return Fetched(item=item, path=final, sha256=got, size=state.done, downloaded=True)
    finally:
        if not ok:
            part.unlink(missing_ok=True)
        if live_parts is not None:
            live_parts.discard(part)


def _open_part(part: Path) -> BinaryIO:
    try:
        return open(part, "xb")  # the caller's with-block closes it
    except OSError as e:
        raise OutputError(
            f"cannot write to the cache {part.parent}: {e}", "pass --cache DIR"
        ) from e


def _check(item: FetchItem, got: str, size: int) -> None:
    if item.sha256 is not None and got != item.sha256:
        raise ChecksumMismatch(
            f"{item.name} from {item.url} does not match {item.source}: "
            f"expected sha256 {item.sha256}, got {got}",
            "do not use it: upstream changed the file or it was tampered with in transit; "
            "if upstream re-published on purpose, run `mk8s bundle lock` again and review",
        )
    if item.size is not None and size != item.size:
        raise ChecksumMismatch(
            f"{item.name} from {item.url}: expected {item.size} bytes, got {size}",
            "do not use it; run `mk8s bundle lock` again and review the change",
        )


def fetch_text(
    item: FetchItem, settings: UpstreamSettings, cache_dir: Path | str | None = None, **kwargs: Any
) -> tuple[Fetched, bytes]:
    """Fetch one small item (a checksum file, install.sh) and return it with its bytes."""
    (got,) = fetch([item], settings, cache_dir, jobs=1, **kwargs)
    return got, got.path.read_bytes()


__all__ = [
    "CHUNK",
    "FetchItem",
    "Fetched",
    "cache_path",
    "default_cache_dir",
    "download",
    "fetch",
    "fetch_text",
]
