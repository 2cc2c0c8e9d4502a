"""RKE2 stand-in artifacts for the test world (SPEC 9).

Everything that runs on a node is Python 3 stdlib or POSIX sh, kept here as data
files (``rke2.py``, ``systemctl.py``, ``journalctl.py``, ``install.sh``, ...).

Public API (used by the example upstream and the test hosts):
    rke2_tarball(arch, tag) -> bytes      deterministic rke2.linux-ARCH.tar.gz
    install_script(tag) -> bytes          install.sh as served at the tag
    systemctl_script() -> bytes           the systemctl stand-in the hosts install
    journalctl_script() -> bytes          the journalctl stand-in the hosts install
    image_tarball(name) -> bytes          a small fake airgap image tarball (.tar.zst bytes)
    images.image_archive(arch, tag, name) a real docker-save archive of the release's images
    sha256sum_line(name, data) -> str     one ``<sha256>  <name>`` line
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ARCHES = ("amd64", "arm64")
MTIME = 1_700_000_000  # fixed member mtime: same inputs -> same bytes


def _data(name: str) -> bytes:
    return (HERE / name).read_bytes()


def _check(arch: str, tag: str) -> None:
    if arch not in ARCHES:
        raise ValueError(f"arch must be one of {ARCHES}, not {arch!r}")
    if not tag.startswith("v") or any(c in tag for c in "\"'\\\n"):
        raise ValueError(f"bad tag {tag!r}")


def rke2_program(arch: str, tag: str) -> bytes:
    """The stand-in ``bin/rke2`` for one arch and tag."""
    _check(arch, tag)
    return (
        _data("rke2.py")
        .replace(b"@@RKE2_TAG@@", tag.encode())
        .replace(b"@@RKE2_ARCH@@", arch.encode())
        .replace(b"@@RKE2_IMAGES@@", release_images_b64(tag))
    )


def release_images_b64(tag: str) -> bytes:
    """The release's image references by group (``images.release_images``), as the
    base64 JSON the stand-in program carries (``RELEASE_IMAGES``)."""
    from tests.support.standin.images import release_images

    return base64.b64encode(json.dumps(release_images(tag), sort_keys=True).encode())


def rke2_tarball(arch: str, tag: str) -> bytes:
    """Deterministic ``rke2.linux-ARCH.tar.gz`` laid out like the real one."""
    _check(arch, tag)
    files: dict[str, tuple[bytes, int]] = {
        "bin/rke2": (rke2_program(arch, tag), 0o755),
        "bin/rke2-killall.sh": (_data("rke2-killall.sh"), 0o755),
        "bin/rke2-uninstall.sh": (_data("rke2-uninstall.sh"), 0o755),
        "lib/systemd/system/rke2-server.service": (_data("rke2-server.service"), 0o644),
        "lib/systemd/system/rke2-agent.service": (_data("rke2-agent.service"), 0o644),
        "lib/systemd/system/rke2-server.env": (b"HOME=/root\n", 0o644),
        "lib/systemd/system/rke2-agent.env": (b"HOME=/root\n", 0o644),
        "share/rke2/rke2-cis-sysctl.conf": (
            b"vm.panic_on_oom=0\nvm.overcommit_memory=1\nkernel.panic=10\nkernel.panic_on_oops=1\n",
            0o644,
        ),
        "share/rke2/LICENSE.txt": (b"mk8s test stand-in for RKE2 (not RKE2).\n", 0o644),
    }
    dirs = sorted({str(Path(p).parents[i]) for p in files for i in range(len(Path(p).parts) - 1)})
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for name in sorted([d + "/" for d in dirs] + list(files)):
            ti = tarfile.TarInfo(name.rstrip("/"))
            ti.mtime = MTIME
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = "root"
            if name.endswith("/"):
                ti.type = tarfile.DIRTYPE
                ti.mode = 0o755
                tf.addfile(ti)
            else:
                data, ti.mode = files[name]
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=6) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def install_script(tag: str) -> bytes:
    """The stand-in install.sh served at ``tag`` (bytes differ per tag, like upstream)."""
    _check("amd64", tag)
    return _data("install.sh").replace(
        b"@@INSTALL_TAG@@", f"served at {tag} by the mk8s test upstream".encode()
    )


def systemctl_script() -> bytes:
    return _data("systemctl.py")


def journalctl_script() -> bytes:
    return _data("journalctl.py")


def image_tarball(name: str = "rke2-images.linux-amd64.tar.zst", size: int = 4096) -> bytes:
    """A small, deterministic, valid zstd frame holding a tar with one fake layer.

    Written without the zstd library: one raw (uncompressed) block, which every
    zstd decoder accepts (``zstd -t`` passes)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tf:
        payload = (hashlib.sha256(name.encode()).digest() * (size // 32 + 1))[:size]
        ti = tarfile.TarInfo("manifest.json")
        body = b'[{"Config":"config.json","RepoTags":["mk8s.test/fake:' + name.encode() + b'"]}]'
        ti.size, ti.mtime = len(body), MTIME
        tf.addfile(ti, io.BytesIO(body))
        ti = tarfile.TarInfo("layer.tar")
        ti.size, ti.mtime = len(payload), MTIME
        tf.addfile(ti, io.BytesIO(payload))
    data = raw.getvalue()
    if not name.endswith(".zst"):
        return data if name.endswith(".tar") else gzip.compress(data, mtime=0)
    return _zstd_raw_frame(data)


def _zstd_raw_frame(data: bytes) -> bytes:
    # Frame header: magic, FHD (single segment, 4-byte content size), size; then raw blocks.
    out = bytearray(b"\x28\xb5\x2f\xfd")
    out += bytes([0b1010_0000]) + len(data).to_bytes(4, "little")
    chunks = [data[i : i + 128 * 1024] for i in range(0, len(data), 128 * 1024)] or [b""]
    for i, chunk in enumerate(chunks):
        last = 1 if i == len(chunks) - 1 else 0
        header = (len(chunk) << 3) | (0 << 1) | last  # block type 0 = raw
        out += header.to_bytes(3, "little") + chunk
    return bytes(out)


def sha256sum_line(name: str, data: bytes) -> str:
    return f"{hashlib.sha256(data).hexdigest()}  {name}\n"


__all__ = [
    "image_tarball",
    "install_script",
    "journalctl_script",
    "rke2_program",
    "rke2_tarball",
    "sha256sum_line",
    "systemctl_script",
]
