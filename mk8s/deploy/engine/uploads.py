"""The upload protocol of a stage step: send parts, check them on the node, place them.

Each file goes to ``PATH.part`` (a partial part from an earlier run resumes where it
stopped), then the step's :class:`~mk8s.deploy.steps.PlaceUploads` command checks every
part's sha256 on the node and renames the good ones, in one round trip. A bad part is
discarded and sent whole once more; a second mismatch fails the node. Every file goes to
the audit log with its size, resume offset, hash and result.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from mk8s.callbacks import Log, TransferProgress
from mk8s.deploy.cluster import Node
from mk8s.deploy.command import Command
from mk8s.deploy.engine.remote import Remote
from mk8s.deploy.fileupload import FileUpload
from mk8s.deploy.steps import PlaceUploads
from mk8s.errors import DeployError
from mk8s.ui import human_bytes

Sent = dict[str, tuple[int, int, float]]  # remote path -> (bytes sent, offset, seconds)


class Uploader:
    """Sends a step's uploads over a :class:`Remote`, counting bytes and progress."""

    def __init__(self, remote: Remote, log: Log, progress: TransferProgress | None) -> None:
        self.remote = remote
        self.log = log
        self.progress = progress
        self.uploaded = 0
        self._lock = threading.Lock()
        self._done: dict[str, int] = {}
        self._total: dict[str, int] = {}

    def send(self, node: Node, step: str, place: PlaceUploads, partial: Mapping[str, int]) -> None:
        """Send every upload ``place`` covers (resuming the ``partial`` parts the node
        has: path -> bytes), then check and place them; DeployError if one stays bad
        after a second try."""
        ups = place.uploads
        self.log(
            f"{node.name}: uploading {len(ups)} files ({human_bytes(sum(u.size for u in ups))})"
        )
        self._done[node.name] = 0
        self._total[node.name] = sum(u.size for u in ups)
        sent: Sent = {}
        for up in ups:
            have = partial.get(up.remote_path + ".part", 0)
            offset = have if 0 < have <= up.size else 0
            sent[up.remote_path] = self._put(node, up, offset)
        for up in self._check(node, step, place.command, ups, sent):
            i = place.uploads.index(up)
            self.remote.run(node, step, place.discard[i])
            again = {up.remote_path: self._put(node, up, 0)}
            if self._check(node, step, place.recheck[i], [up], again):
                raise DeployError(
                    f"{node.name}: {up.remote_path} does not match its sha256 after upload",
                    "check the node's disk and the network; then deploy again",
                )

    def _put(self, node: Node, up: FileUpload, offset: int) -> tuple[int, int, float]:
        src = up.source if isinstance(up.source, bytes) else Path(up.source)
        self._advance(node, offset)  # a resumed file counts what is already there
        start = time.monotonic()
        n = self.remote.transport(node).put(
            src,
            up.remote_path + ".part",
            mode=up.mode,
            offset=offset,
            progress=lambda k: self._advance(node, k),
        )
        with self._lock:
            self.uploaded += n
        return n, offset, time.monotonic() - start

    def _advance(self, node: Node, n: int) -> None:
        if self.progress is None:
            return
        with self._lock:
            done = self._done[node.name] = self._done.get(node.name, 0) + n
        total = self._total.get(node.name)
        self.progress(node.name, min(done, total if total is not None else done), total)

    def _check(
        self, node: Node, step: str, cmd: Command, ups: Sequence[FileUpload], sent: Sent
    ) -> list[FileUpload]:
        """Run the check-and-place command for ``ups``; return those that hash wrong."""
        out = self.remote.run(node, step, cmd).stdout.split()
        good = {out[i + 1] for i in range(0, len(out) - 1, 2) if out[i] == "ok"}
        bad = []
        for up in ups:
            n, offset, seconds = sent[up.remote_path]
            ok = up.remote_path in good
            self.remote.audit(
                node,
                step,
                file=up.remote_path,
                bytes=n,
                offset=offset,
                sha256=up.sha256,
                ok=ok,
                seconds=round(seconds, 3),
            )
            if not ok:
                bad.append(up)
        return bad


__all__ = ["Uploader"]
