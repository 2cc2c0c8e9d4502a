"""RKE2 stand-in artifacts for the test world (docs/testing.md, "The stand-in RKE2").

Everything that runs on a node is Python 3 stdlib or POSIX sh, kept here as data
files (``rke2.py``, ``systemctl.py``, ``journalctl.py``, ``install.sh``, ...).

Public API (used by the example upstream and the test hosts):
    rke2_tarball(arch, tag, images=None) -> bytes
                                          deterministic rke2.linux-ARCH.tar.gz; ``images``
                                          maps the release's airgap image tarball names
                                          (``rke2-images*.linux-ARCH.tar.zst``) to their
                                          sha256: the stand-in accepts only those as its
                                          release's genuine images (default: the hashes of
                                          ``image_tarball(name, tag=tag)`` for IMAGE_GROUPS)
    install_script(tag) -> bytes          install.sh as served at the tag
    systemctl_script() -> bytes           the systemctl stand-in the hosts install
    unit_file(role, tag) -> bytes         rke2-server/agent.service as release ``tag`` has it
    journalctl_script() -> bytes          the journalctl stand-in the hosts install
    image_tarball(name, tag="") -> bytes  a small fake airgap image tarball (.tar.zst bytes);
                                          different bytes per tag when a tag is given
    standin_images(arch, tag) -> dict     name -> sha256 of image_tarball(name, tag=tag)
    images.image_archive(arch, tag, name) a real docker-save archive of the release's images
    sha256sum_line(name, data) -> str     one ``<sha256>  <name>`` line

The image hashes are substituted into ``bin/rke2`` as a JSON constant of a length
that does not depend on the hash values, and stored uncompressed in a gzip member of
their own: the tarball's size is then known from the image *names* alone
(``rke2_tarball_size``), without generating the images (the example upstream lists
sizes of every release's assets).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Mapping
from pathlib import Path

HERE = Path(__file__).resolve().parent
ARCHES = ("amd64", "arm64")
MTIME = 1_700_000_000  # fixed member mtime: same inputs -> same bytes
# Image groups of the default (upstream-less) genuine image set: "" is the full
# rke2-images.linux-ARCH (core + canal), "core" is core only.
IMAGE_GROUPS = ("", "core", "canal", "cilium", "calico", "flannel", "multus")
_IMAGES_MARK = b"@@RKE2_IMAGES@@"


def _data(name: str) -> bytes:
    return (HERE / name).read_bytes()


def _check(arch: str, tag: str) -> None:
    if arch not in ARCHES:
        raise ValueError(f"arch must be one of {ARCHES}, not {arch!r}")
    if not tag.startswith("v") or any(c in tag for c in "\"'\\\n"):
        raise ValueError(f"bad tag {tag!r}")


def image_name(arch: str, group: str = "") -> str:
    return f"rke2-images{'-' + group if group else ''}.linux-{arch}.tar.zst"


def standin_images(arch: str, tag: str) -> dict[str, str]:
    """The genuine images of the stand-in release ``tag`` when no upstream serves it:
    name -> sha256 of ``image_tarball(name, tag=tag)``."""
    _check(arch, tag)
    names = [image_name(arch, g) for g in IMAGE_GROUPS]
    return {n: hashlib.sha256(image_tarball(n, tag=tag)).hexdigest() for n in names}


def _images_json(arch: str, images: Mapping[str, str]) -> bytes:
    """The JSON constant for ``bin/rke2``: its length depends on the names only."""
    suffix = f".linux-{arch}.tar.zst"
    for name, digest in images.items():
        ok = name.startswith("rke2-images") and name.endswith(suffix)
        if not ok or any(not (c.isascii() and (c.isalnum() or c in "._-")) for c in name):
            raise ValueError(f"not an airgap image tarball of {arch}: {name!r}")
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"not a sha256 hex digest for {name}: {digest!r}")
    return json.dumps(dict(sorted(images.items())), separators=(",", ":")).encode()


def rke2_program(arch: str, tag: str, images: Mapping[str, str] | None = None) -> bytes:
    """The stand-in ``bin/rke2`` for one arch and tag, knowing its genuine images."""
    _check(arch, tag)
    if images is None:
        images = standin_images(arch, tag)
    return (
        _data("rke2.py")
        .replace(b"@@RKE2_TAG@@", tag.encode())
        .replace(b"@@RKE2_ARCH@@", arch.encode())
        .replace(b"@@RKE2_IMAGE_LIST@@", release_images_b64(tag))
        .replace(b"@@STANDIN_MODULES@@", node_modules_b64())
        .replace(_IMAGES_MARK, _images_json(arch, images))
    )


def release_images_b64(tag: str) -> bytes:
    """The release's image references by group (``images.release_images``), as the
    base64 JSON the stand-in program carries (``RELEASE_IMAGES``)."""
    from tests.support.standin.images import release_images

    return base64.b64encode(json.dumps(release_images(tag), sort_keys=True).encode())


# The stand-in's own modules that run on the nodes inside bin/rke2 (stdlib only).
NODE_MODULES = (
    "apiformat",
    "apiobjects",
    "certs",
    "etcd",
    "gates",
    "helmcontroller",
    "members",
    "snapshots",
)


def node_modules_b64() -> bytes:
    """The node-side modules as the base64 JSON ``{name: source}`` the program carries
    (``STANDIN_MODULES``), so ``bin/rke2`` stays one file wherever it is copied."""
    sources = {m: _data(f"{m}.py").decode() for m in NODE_MODULES}
    return base64.b64encode(json.dumps(sources, sort_keys=True).encode())


def rke2_tarball_size(arch: str, tag: str, names: list[str] | None = None) -> int:
    """The size of ``rke2_tarball(arch, tag, images)`` for any images with these names."""
    if names is None:
        names = [image_name(arch, g) for g in IMAGE_GROUPS]
    return len(rke2_tarball(arch, tag, dict.fromkeys(names, "0" * 64)))


# upstream: rancher/rke2 scripts/package-bundle and bundle/ (the tarball's layout) [CONTRACT IN9]
def rke2_tarball(arch: str, tag: str, images: Mapping[str, str] | None = None) -> bytes:
    """Deterministic ``rke2.linux-ARCH.tar.gz`` laid out like the real one.

    ``bin/rke2`` knows the sha256 of its release's image tarballs (``images``: name ->
    sha256; default :func:`standin_images`).  The gzip stream has three members (any
    gunzip and ``tar xz`` read them as one): everything before the image hashes
    (compressed), the hashes (stored), everything after (compressed)."""
    _check(arch, tag)
    if images is None:
        images = standin_images(arch, tag)
    program = rke2_program(arch, tag, images)
    files: dict[str, tuple[bytes, int]] = {
        "bin/rke2": (program, 0o755),
        "bin/rke2-killall.sh": (_data("rke2-killall.sh"), 0o755),
        "bin/rke2-uninstall.sh": (_data("rke2-uninstall.sh"), 0o755),
        "lib/systemd/system/rke2-server.service": (unit_file("server", tag), 0o644),
        "lib/systemd/system/rke2-agent.service": (unit_file("agent", tag), 0o644),
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
    data = raw.getvalue()
    mark = _images_json(arch, images)
    at = data.find(program)
    assert at >= 0 and program.count(mark) == 1
    start = at + program.index(mark)
    end = start + len(mark)
    return _gzip(data[:start], 6) + _gzip(data[start:end], 0) + _gzip(data[end:], 6)


def _gzip(data: bytes, level: int) -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=level) as gz:
        gz.write(data)
    return out.getvalue()


def unit_file(role: str, tag: str) -> bytes:
    """``rke2-ROLE.service`` as release ``tag`` ships it (see units.py)."""
    from tests.support.standin import units

    return units.render(_data(f"rke2-{role}.service"), role, tag)


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


def image_tarball(
    name: str = "rke2-images.linux-amd64.tar.zst", size: int = 4096, *, tag: str = ""
) -> bytes:
    """A small, deterministic, valid zstd frame holding a docker archive (``manifest.json``,
    the config under its sha256, one layer matching the config's ``diff_ids``) of one
    image, ``mk8s.test/fake:<name>[-<tag>]``, which the stand-in imports.

    With ``tag``, the bytes are those release's (each release has its own images);
    without, the same for every release.  Written without the zstd library: one raw
    (uncompressed) block, which every zstd decoder accepts (``zstd -t`` passes)."""
    key = name if not tag else f"{tag}/{name}"
    ref = name if not tag else f"{name}-{tag.replace('+', '-')}"
    payload = (hashlib.sha256(key.encode()).digest() * (size // 32 + 1))[:size]
    layer = _tar_bytes({"payload": payload})
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {
                "type": "layers",
                "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()],
            },
        },
        sort_keys=True,
    ).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    layer_name = hashlib.sha256(config_name.encode()).hexdigest() + "/layer.tar"
    manifest = [
        {"Config": config_name, "RepoTags": [f"mk8s.test/fake:{ref}"], "Layers": [layer_name]}
    ]
    data = _tar_bytes(
        {"manifest.json": json.dumps(manifest).encode(), config_name: config, layer_name: layer}
    )
    if not name.endswith(".zst"):
        return data if name.endswith(".tar") else gzip.compress(data, mtime=0)
    return _zstd_raw_frame(data)


def _tar_bytes(files: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for n in sorted(files):
            ti = tarfile.TarInfo(n)
            ti.size, ti.mtime = len(files[n]), MTIME
            tf.addfile(ti, io.BytesIO(files[n]))
    return raw.getvalue()


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
    "IMAGE_GROUPS",
    "image_name",
    "image_tarball",
    "install_script",
    "journalctl_script",
    "rke2_program",
    "rke2_tarball",
    "rke2_tarball_size",
    "sha256sum_line",
    "standin_images",
    "systemctl_script",
    "unit_file",
]
