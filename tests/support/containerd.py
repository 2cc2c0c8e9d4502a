"""A private, real containerd that judges the image archives mk8s places on a node.

RKE2's containerd imports every tarball in ``agent/images`` and names each image by its
``io.containerd.image.name`` annotation (OCI layout) or its ``RepoTags`` (docker
archive); k3s then adds ``REPO@<digest of what was imported>`` for every tagged name
(k3s-io/k3s pkg/agent/containerd/containerd.go ``retagImages``). A pod resolves its
image by one of those names in the ``k8s.io`` namespace. :meth:`Containerd.judge` does
the same with Debian's ``containerd`` and ``ctr``: import (``ctr -n k8s.io images
import``, unpacking with the native snapshotter, which checks every layer against the
config's diff_ids), retag like k3s, then list the names (``images ls``) and whether
each is complete for the node's platform (``images check``).

How RKE2 imports, as ctr flags (``ctr`` 1.6 has no ``--skip-missing``):

* RKE2 from v1.27.15 / v1.28.11 / v1.29.6 / v1.30.2: ``WithAllPlatforms(true)`` and
  ``WithSkipMissing()``: content of platforms the archive does not carry is skipped.
  ``--platform linux/ARCH`` is the same for the node: only its platform is read.
* Older RKE2: ``WithAllPlatforms(true)`` alone; ``--all-platforms`` fails the same way
  on an index whose other platforms are absent ("content digest ...: not found").

The daemon is private: its own ``--root``, ``--state`` and socket under a temporary
directory, CRI and the other plugins that need the host disabled; it never touches a
system containerd. One per test session (``tests/conftest.py``), reset between
judgements (every image and blob of ``k8s.io`` removed). Needs root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

NAMESPACE = "k8s.io"
DISABLED = [
    "io.containerd.grpc.v1.cri",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.internal.v1.opt",
    "io.containerd.tracing.processor.v1.otlp",
]


@dataclass
class Imported:
    """What one judgement left in containerd: image name -> target digest, whether it
    is complete for the platform, and the archives whose import failed (and why)."""

    refs: dict[str, str] = field(default_factory=dict)
    complete: dict[str, bool] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def resolves(self, ref: str) -> str | None:
        """The digest a pod's ``ref`` finds (present and complete), or None."""
        digest = self.refs.get(ref)
        return digest if digest is not None and self.complete.get(ref) else None


def repository(name: str) -> str | None:
    """``reg/repo`` of a tagged name ``reg/repo:tag`` (None without a tag)."""
    if "@" in name:
        return None
    head, _, last = name.rpartition("/")
    if ":" not in last:
        return None
    return f"{head}/{last.rsplit(':', 1)[0]}" if head else last.rsplit(":", 1)[0]


class Containerd:
    """One private containerd daemon (see the module docstring)."""

    def __init__(self) -> None:
        # A short path: a unix socket path must fit in 108 bytes.
        self.dir = Path(tempfile.mkdtemp(prefix="mk8s-ctrd-", dir="/tmp"))
        self.socket = self.dir / "c.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        config = self.dir / "config.toml"
        config.write_text(
            "version = 2\n"
            f'root = "{self.dir / "root"}"\nstate = "{self.dir / "state"}"\n'
            f"disabled_plugins = {DISABLED!r}\n".replace("'", '"')
            + f'[grpc]\n  address = "{self.socket}"\n'
            + f'[ttrpc]\n  address = "{self.socket}.ttrpc"\n'
            + '[plugins."io.containerd.metadata.v1.bolt"]\n'
            + '  content_sharing_policy = "isolated"\n'
        )
        log = open(self.dir / "containerd.log", "wb")  # noqa: SIM115 (the daemon keeps it)
        try:
            self.proc = subprocess.Popen(
                ["containerd", "--config", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()
        deadline = time.monotonic() + 20
        while self.ctr("version", check=False).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = (self.dir / "containerd.log").read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"containerd did not start:\n{tail}")
            time.sleep(0.1)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)

    def ctr(
        self, *args: str, check: bool = True, stdin: int | None = None
    ) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(
            ["ctr", "--address", str(self.socket), "--namespace", NAMESPACE, *args],
            stdin=stdin if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and r.returncode != 0:
            raise AssertionError(f"ctr {' '.join(args)} failed: {r.stderr.strip()}")
        return r

    def reset(self) -> None:
        """Remove every image and blob of the namespace: each judgement starts empty."""
        names = self.ctr("images", "ls", "-q").stdout.split()
        if names:
            self.ctr("images", "rm", "--sync", *names)
        blobs = self.ctr("content", "ls", "-q").stdout.split()
        if blobs:
            self.ctr("content", "rm", *blobs)

    def judge(
        self, archives: Sequence[Path], *, all_platforms: bool = False, arch: str = "amd64"
    ) -> Imported:
        """Import ``archives`` as RKE2 would (``all_platforms``: as RKE2 before
        WithSkipMissing), retag like k3s, and list what a pod could use."""
        self.reset()
        out = Imported()
        for path in archives:
            err = self._import(Path(path), all_platforms, arch)
            if err:
                out.errors[Path(path).name] = err
        for name, digest in self._images().items():
            repo = repository(name)
            if repo is not None:  # k3s retagImages: REPO@<digest of what was imported>
                self.ctr("images", "tag", "--force", name, f"{repo}@{digest}")
        out.refs = self._images()
        check = self.ctr("images", "check", check=False).stdout.splitlines()[1:]
        for line in check:
            cols = line.split()
            if len(cols) >= 4:
                out.complete[cols[0]] = cols[3] == "complete"
        return out

    def _import(self, path: Path, all_platforms: bool, arch: str) -> str | None:
        flags = ["--all-platforms"] if all_platforms else ["--platform", f"linux/{arch}"]
        decompress = None
        if path.name.endswith((".zst", ".tzst")):
            decompress = ["zstd", "-dcq", "--", str(path)]
        elif path.name.endswith((".gz", ".tgz")):
            decompress = ["gzip", "-dc", "--", str(path)]
        if decompress is None:
            r = self.ctr(
                "images", "import", "--snapshotter", "native", *flags, str(path), check=False
            )
            return None if r.returncode == 0 else r.stderr.strip()
        with subprocess.Popen(decompress, stdout=subprocess.PIPE) as unpack:
            assert unpack.stdout is not None
            r = self.ctr(
                "images", "import", "--snapshotter", "native", *flags, "-",
                check=False, stdin=unpack.stdout.fileno(),
            )  # fmt: skip
            unpack.stdout.close()
        return None if r.returncode == 0 else r.stderr.strip()

    def _images(self) -> dict[str, str]:
        lines = self.ctr("images", "ls").stdout.splitlines()[1:]
        return {c[0]: c[2] for c in (ln.split() for ln in lines) if len(c) >= 3}


def available() -> str | None:
    """Why a real containerd cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "a private containerd needs root"
    missing = [b for b in ("containerd", "ctr") if shutil.which(b) is None]
    if missing:
        return f"{' and '.join(missing)} not installed (Debian's containerd package)"
    return None


@contextmanager
def containerd_for_tests() -> Iterator[Containerd]:
    """A started private containerd; skips where none can run (not root, not
    installed), but fails instead as root with MK8S_REQUIRE_HOSTS=1 (what
    scripts/test.sh sets), where setup.sh installed it."""
    why = available()
    if why is not None:
        if os.geteuid() == 0 and os.environ.get("MK8S_REQUIRE_HOSTS") == "1":
            pytest.fail(why)
        pytest.skip(why)
    c = Containerd()
    try:
        c.start()
        yield c
    finally:
        c.stop()
