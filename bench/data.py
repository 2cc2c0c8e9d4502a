"""The data the benchmarks run on, generated on the fly (nothing large is committed).

A release shaped like RKE2's, served by the loopback GitHub stand-in
(``tests.support.upstream.ExampleUpstream``): ``--cni cilium`` plus the multus,
vsphere and harvester image groups, i.e. five image tarballs that are already
compressed (random bytes: incompressible), the small ``rke2.linux-amd64.tar.gz``,
``sha256sum-amd64.txt`` and ``install.sh``. About 5% of the total is compressible
text, carried with ``--file`` (an operator's manifests; upstream assets are random
bytes, so this is the only way to get text into the bundle); the baseline tars the
same file.

Generated files are kept under the work directory, keyed by size, so a second run
does not generate 2 GiB again.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/run.py` as well as `python -m bench`
    sys.path.insert(0, str(REPO))

from tests.support.upstream import ExampleUpstream  # noqa: E402

VENV_BIN = REPO / ".venv" / "bin"
SPEC = "v1.28.x"
CNI = "cilium"
GROUPS = ("multus", "vsphere", "harvester")
# Share of the total per image tarball (RKE2 v1.28 amd64 is roughly like this).
IMAGE_SHARES = {
    "core": 0.40,
    "cilium": 0.22,
    "multus": 0.08,
    "vsphere": 0.10,
    "harvester": 0.15,
}
TEXT_SHARE = 0.05
TEXT_NAME = "site-manifests.yaml"
# The deploy rows use the default (canal) bundle: one image tarball of this size.
DEFAULT_DEPLOY_IMAGE = 4 << 20


def mk8s_bin() -> str:
    """The mk8s the benchmarks run: ``MK8S_BENCH_MK8S`` (another build, to compare
    with), else the repository's."""
    other = os.environ.get("MK8S_BENCH_MK8S")
    if other:
        return other
    exe = VENV_BIN / "mk8s"
    return str(exe) if exe.exists() else "mk8s"


def python_bin() -> str:
    exe = VENV_BIN / "python"
    return str(exe) if exe.exists() else sys.executable


def image_sizes(total: int) -> dict[str, int]:
    return {
        f"rke2-images-{g}.linux-amd64.tar.zst": max(4096, int(total * share))
        for g, share in IMAGE_SHARES.items()
    }


def create_args() -> list[str]:
    """The selection flags of ``bundle create`` for the benchmark release."""
    args = ["--rke2", SPEC, "--cni", CNI]
    for g in GROUPS:
        args += ["--images-group", g]
    return args


def write_text(path: Path, size: int) -> Path:
    """Deterministic YAML-ish text of ``size`` bytes (compresses about 4-6x with zstd -3)."""
    if path.exists() and path.stat().st_size == size:
        return path
    rnd = random.Random(f"mk8s-bench-text-{size}")
    words = [
        "apiVersion",
        "kind",
        "metadata",
        "name",
        "namespace",
        "labels",
        "app",
        "spec",
        "containers",
        "image",
        "ports",
        "containerPort",
        "resources",
        "limits",
        "cpu",
        "memory",
        "env",
        "value",
        "volumeMounts",
        "mountPath",
        "selector",
        "matchLabels",
        "replicas",
        "template",
    ]
    tmp = path.with_suffix(".tmp")
    written = 0
    with open(tmp, "w", encoding="ascii") as f:
        doc = 0
        while written < size:
            lines = [f"---\n# document {doc}\n"]
            for depth in range(40):
                key = rnd.choice(words)
                val = rnd.choice(words) + "-" + format(rnd.getrandbits(24), "06x")
                lines.append(f"{'  ' * (depth % 6)}{key}: {val}\n")
            block = "".join(lines)
            block = block[: size - written]
            f.write(block)
            written += len(block)
            doc += 1
    os.replace(tmp, path)
    return path


@dataclass
class Dataset:
    """Everything the bundle rows need; valid while ``upstream`` runs."""

    work: Path
    total: int
    upstream: ExampleUpstream
    key: Path
    pub: Path
    text: Path
    lock: dict = field(default_factory=dict)  # the lockfile of the benchmark selection

    @property
    def env(self) -> dict[str, str]:
        return self.upstream.env

    def artifacts(self) -> list[dict]:
        return list(self.lock.get("artifacts", []))

    def remote_artifacts(self) -> list[dict]:
        return [a for a in self.artifacts() if str(a.get("url", "")).startswith("http")]


def keypair(work: Path) -> tuple[Path, Path]:
    from mk8s.bundle.format import keys

    prefix = work / "bench-signing"
    key, pub = prefix.with_suffix(".key"), prefix.with_suffix(".pub")
    if not (key.exists() and pub.exists()):
        keys.write_key_pair(keys.generate_private_key(), prefix, None, force=True)
    return key, pub


def _drop_small_blobs(blobs: Path, keep_from: int = 64 << 20) -> None:
    """Forget cached upstream files below ``keep_from`` bytes (cheap to make again).

    ExampleUpstream keys the on-disk blob of a generated small file (the RKE2
    stand-in tarball, install.sh) without its content, so a kept ``dir=`` would
    serve a stale tarball after the stand-in changes while the API reports the new
    size. Only the big random image files are worth keeping."""
    if not blobs.is_dir():
        return
    for p in blobs.iterdir():
        if p.suffix == "" and p.stat().st_size < keep_from:
            p.unlink(missing_ok=True)
            p.with_suffix(".sha256").unlink(missing_ok=True)


@contextlib.contextmanager
def dataset(work: Path, total: int, deploy_image: int = DEFAULT_DEPLOY_IMAGE) -> Iterator[Dataset]:
    """Start the upstream for a release of about ``total`` bytes, generate its files,
    lock the selection once (URLs and hashes for the baseline)."""
    work.mkdir(parents=True, exist_ok=True)
    key, pub = keypair(work)
    data_dir = work / f"data-{total}"
    data_dir.mkdir(exist_ok=True)
    text = write_text(data_dir / TEXT_NAME, max(1024, int(total * TEXT_SHARE)))
    _drop_small_blobs(data_dir / "upstream" / "blobs")
    up = ExampleUpstream(
        dir=data_dir / "upstream", image_size=deploy_image, sizes=image_sizes(total)
    )
    with up:
        ds = Dataset(work, total, up, key, pub, text)
        lock_path = data_dir / "bench.lock"
        subprocess.run(
            [
                *(mk8s_bin(), "bundle", "lock", *create_args(), "--file", str(text)),
                *("--cache", str(data_dir / "lock-cache"), "-o", str(lock_path)),
            ],
            env={**os.environ, **up.env},
            check=True,
            capture_output=True,
        )
        ds.lock = json.loads(lock_path.read_text())
        tag = ds.lock["rke2"]["tag"]
        # Generate every served file now (the lock made the checksum file, which
        # generated the images it lists), outside any timing.
        for art in ds.remote_artifacts():
            if art["name"] != "install.sh":
                up.blob(tag, art["name"])
        yield ds
