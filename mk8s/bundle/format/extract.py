"""``mk8s bundle extract``: verify while extracting; nothing is left on failure.

Files go to a private temporary directory inside the destination while the bundle is
verified, and are moved into place only after every check passed; on any failure the
destination is as it was (directories this call created are removed again).
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from mk8s.bundle.format.keys import TrustedKey
from mk8s.bundle.format.manifest import (
    EXECUTABLE_KINDS,
    MANIFEST_NAME,
    SIGNATURE_NAME,
    Artifact,
    Lock,
)
from mk8s.bundle.format.reader import VerifiedBundle, verify_bundle
from mk8s.callbacks import StreamProgress
from mk8s.errors import OutputError


class _DirectorySink:
    """Writes artifacts into a private temporary directory during verification."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._file: BinaryIO | None = None
        self.discard = False
        self.shortfall: str | None = None

    def check_space(self, manifest: Lock) -> None:
        """Before the first artifact: is there room for them all where ``root`` is?"""
        # Too little room: keep verifying without writing. A bundle whose manifest lies
        # about sizes is then rejected as such (exit 3); an honest big one gets the
        # disk-space error once verification is complete.
        dest = self.root.parent
        st = os.statvfs(dest)
        free = st.f_bavail * st.f_frsize
        if free < manifest.total_size:
            self.discard = True
            self.shortfall = f"{dest} has {free} bytes free; the bundle needs {manifest.total_size}"

    def begin(self, artifact: Artifact) -> None:
        if self.discard:
            return
        target = self.root / artifact.path
        target.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(target, "xb")  # noqa: SIM115  (closed in end() or close())

    def write(self, data: memoryview) -> None:
        if self._file is not None:
            self._file.write(data)

    def end(self, artifact: Artifact) -> None:
        self.close()
        if artifact.kind in EXECUTABLE_KINDS and not self.discard:
            os.chmod(self.root / artifact.path, 0o755)  # noqa: S103  (executables, as shipped)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def make_dirs(dest: Path) -> list[Path]:
    """Create ``dest`` and missing parents; return the ones created, outermost first."""
    missing: list[Path] = []
    d = dest
    while not d.exists() and d != d.parent:
        missing.append(d)
        d = d.parent
    missing.reverse()
    done: list[Path] = []
    try:
        for d in missing:
            d.mkdir()
            done.append(d)
    except OSError as e:
        for d in reversed(done):
            d.rmdir()
        raise OutputError(f"cannot create {dest}: {e.strerror or e}") from e
    return done


def extract_bundle(
    path: Path,
    trusted: Sequence[TrustedKey],
    dest: Path,
    *,
    allow_unsigned: bool = False,
    progress: StreamProgress | None = None,
) -> VerifiedBundle:
    """Verify while extracting into ``dest``; on any failure ``dest`` is as it was.

    Files go to a temporary directory inside ``dest`` and are moved into place only
    after every check passed. Refuses (OutputError) if ``dest`` already holds
    ``mk8s-bundle.json`` or ``artifacts``, or has too little free space. A delta is
    refused, naming its base: :func:`mk8s.bundle.check.extract` takes it with its base.
    """
    targets = [dest / MANIFEST_NAME, dest / SIGNATURE_NAME, dest / "artifacts"]
    for t in targets:
        if t.exists() or t.is_symlink():
            raise OutputError(f"{t} already exists", "extract into an empty directory")
    created = make_dirs(dest)
    work = dest / f".mk8s-extract-{secrets.token_hex(4)}"
    sink = _DirectorySink(work)
    moved: list[Path] = []
    try:
        work.mkdir()
        verified = verify_bundle(
            path,
            trusted,
            allow_unsigned=allow_unsigned,
            sink=sink,
            before_artifacts=sink.check_space,
            progress=progress,
        )
        sink.close()
        if sink.shortfall:
            raise OutputError(sink.shortfall, "free some space or extract elsewhere")
        _move_into_place(work, verified, targets, moved)
    except BaseException as e:
        sink.close()
        _take_back(work, moved, created)
        if isinstance(e, OSError):
            raise OutputError(f"cannot extract into {dest}: {e.strerror or e}") from e
        raise
    shutil.rmtree(work, ignore_errors=True)
    return verified


def _move_into_place(
    work: Path, verified: VerifiedBundle, targets: list[Path], moved: list[Path]
) -> None:
    """The verified bundle's files, from ``work`` to their ``targets`` (each appended
    to ``moved`` once there)."""
    (work / MANIFEST_NAME).write_bytes(verified.manifest_bytes)
    (work / SIGNATURE_NAME).write_bytes(verified.signature_bytes)
    if not (work / "artifacts").exists():
        (work / "artifacts").mkdir()
    for t in targets:
        os.replace(work / t.name, t)
        moved.append(t)


def _take_back(work: Path, moved: list[Path], created: list[Path]) -> None:
    """After a failure: remove the work directory, what was moved into place and the
    directories this extraction created, so the destination is as it was."""
    shutil.rmtree(work, ignore_errors=True)
    for t in moved:  # none of them existed before: take them away again
        shutil.rmtree(t, ignore_errors=True) if t.is_dir() else t.unlink(missing_ok=True)
    for d in reversed(created):  # only what this call created, deepest first
        shutil.rmtree(d, ignore_errors=True)
