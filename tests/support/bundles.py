"""Build bundles for tests: good ones through the real writer, bad ones by hand.

``craft`` writes arbitrary tar members (any type, name, content) into a zstd file so a
test can produce every malformed bundle the verifier must reject.
"""

from __future__ import annotations

import hashlib
import io
import random
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import zstandard

from mk8s.bundle.format import keys, tarfmt
from mk8s.bundle.format.manifest import Artifact, Lock, Release, artifact_path
from mk8s.bundle.format.split import SplitResult, split_bundle
from mk8s.bundle.format.writer import WriteSettings, WrittenBundle, write_bundle

TAG = "v1.28.15+rke2r1"
RESOLVED_AT = "2026-01-02T03:04:05Z"


@dataclass
class Member:
    name: str
    data: bytes = b""
    type: bytes = tarfile.REGTYPE
    linkname: str = ""


def make_files(root: Path, sizes: dict[str, int], seed: int = 1) -> dict[str, Path]:
    """Write files of seeded pseudo-random bytes; returns name -> path."""
    root.mkdir(parents=True, exist_ok=True)
    rnd = random.Random(seed)
    out = {}
    for name, size in sorted(sizes.items()):
        p = root / name
        p.write_bytes(rnd.randbytes(size))
        out[name] = p
    return out


def lock_for(files: dict[str, Path], kinds: dict[str, str] | None = None) -> Lock:
    kinds = kinds or {}
    arts = []
    for name, p in files.items():
        kind = kinds.get(name, "images" if "images" in name else "file")
        data = p.read_bytes()
        arts.append(
            Artifact(
                name=name,
                kind=kind,
                path=artifact_path(name, kind),
                size=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
                url=f"https://example.invalid/{name}",
                arch="amd64" if "amd64" in name else None,
            )
        )
    release = Release(requested="v1.28.x", tag=TAG, arch=("amd64",))
    return Lock(release=release, resolved_at=RESOLVED_AT, artifacts=tuple(arts))


def default_files(root: Path) -> dict[str, Path]:
    return make_files(
        root,
        {
            "sha256sum-amd64.txt": 300,
            "rke2.linux-amd64.tar.gz": 70_000,
            "rke2-images.linux-amd64.tar.zst": 200_000,
            "install.sh": 1_000,
            "empty.txt": 0,
        },
    )


KINDS = {
    "sha256sum-amd64.txt": "checksums",
    "rke2.linux-amd64.tar.gz": "rke2",
    "rke2-images.linux-amd64.tar.zst": "images",
    "install.sh": "install-script",
    "empty.txt": "file",
}


def build(
    tmp: Path,
    key: keys.PrivateKey | None,
    *,
    files: dict[str, Path] | None = None,
    out: Path | None = None,
    threads: int = 2,
) -> tuple[WrittenBundle, Lock]:
    files = files or default_files(tmp / "files")
    lock = lock_for(files, KINDS).as_manifest()
    by_path = {a.path: files[a.name] for a in lock.artifacts}
    sig = (lambda b: keys.sign(key, b)) if key else (lambda b: keys.unsigned())
    written = write_bundle(
        lock, by_path, out or tmp / lock.bundle_name(), sig, settings=WriteSettings(threads=threads)
    )
    return written, lock


def read_members(path: Path) -> list[Member]:
    """All members of a bundle as written (for building tampered copies)."""
    data = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(path.read_bytes())).read()
    out = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
        for ti in tf:
            f = tf.extractfile(ti)
            out.append(Member(ti.name, f.read() if f else b"", ti.type, ti.linkname))
    return out


def craft(path: Path, members: Iterable[Member], *, trailer: bytes = b"") -> Path:
    """Write members as a ustar archive, zstd-compressed, plus optional raw trailer."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for m in members:
            ti = tarfile.TarInfo(m.name)
            ti.type = m.type
            ti.mtime = 1
            ti.linkname = m.linkname
            if m.type in (tarfile.REGTYPE, tarfile.AREGTYPE):
                ti.size = len(m.data)
                tf.addfile(ti, io.BytesIO(m.data))
            else:
                tf.addfile(ti)
    path.write_bytes(zstandard.ZstdCompressor(level=3).compress(buf.getvalue()) + trailer)
    return path


def sign_members(members: list[Member], key: keys.PrivateKey) -> list[Member]:
    """Re-sign the (possibly edited) manifest member in place."""
    members[1] = Member(members[1].name, keys.sign(key, members[0].data).to_bytes())
    return members


def split_data(
    folder: Path,
    data: bytes,
    part_size: int,
    key: keys.PrivateKey | None = None,
    name: str = "b.tar.zst",
) -> SplitResult:
    """Split ``data`` (any bytes: the parts layer never looks inside) into
    ``folder/parts``, signed with ``key`` or unsigned; the source is ``folder/src/name``."""
    src = folder / "src" / name
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_bytes(data)
    (folder / "parts").mkdir(exist_ok=True)

    def signature(index: bytes) -> keys.Signature:
        return keys.sign(key, index) if key is not None else keys.unsigned()

    return split_bundle(src, part_size, signature, out=folder / "parts" / name)


@dataclass
class OpenedBundle:
    path: Path
    raw: bytes  # the decompressed tar, exactly as written
    members: list[tarfile.TarInfo]
    manifest: Lock

    def member(self, name: str) -> tarfile.TarInfo:
        return next(m for m in self.members if m.name == name)

    @property
    def end(self) -> int:
        """Offset just past the last artifact's padding (where end-of-archive starts)."""
        last = self.members[-1]
        return last.offset_data + last.size + tarfmt.padding(last.size)


def open_bundle(path: Path, manifest: Lock) -> OpenedBundle:
    """A written bundle with its decompressed tar and members, to damage at exact offsets."""
    raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(path.read_bytes())).read()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        members = tf.getmembers()
    return OpenedBundle(path, raw, members, manifest)
