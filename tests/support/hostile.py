"""Hostile local inputs made cheaply: gzip bombs, deep nesting, FIFOs.

A gzip bomb is written without ever holding or compressing its expanded size: a
deflate block that encodes 1 MiB of one byte, ended by a full flush (which resets the
compressor's history), is the same bytes every time, so a 64 GiB member is that block
written 65,536 times (about 64 MiB on disk, in well under a second). The gzip trailer's
CRC-32 is combined arithmetically (zlib's ``crc32_combine``), so every bomb here is a
valid gzip file that ``gzip -t`` accepts.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import io
import json
import os
import struct
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

MIB = 1 << 20
GIB = 1 << 30
_CHUNK = MIB


def _gf2_times(mat: list[int], vec: int) -> int:
    out, i = 0, 0
    while vec:
        if vec & 1:
            out ^= mat[i]
        vec >>= 1
        i += 1
    return out


def _gf2_square(mat: list[int]) -> list[int]:
    return [_gf2_times(mat, mat[n]) for n in range(32)]


@functools.cache
def _zeros(nbytes: int) -> tuple[int, ...]:
    """The GF(2) matrix that runs a CRC-32 over ``nbytes`` zero bytes."""
    bit = [0xEDB88320] + [1 << n for n in range(31)]  # one zero bit
    base = _gf2_square(_gf2_square(_gf2_square(bit)))  # one zero byte
    out = [1 << n for n in range(32)]  # identity
    while nbytes:
        if nbytes & 1:
            out = [_gf2_times(base, col) for col in out]
        base = _gf2_square(base)
        nbytes >>= 1
    return tuple(out)


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """The CRC-32 of A+B from crc32(A), crc32(B) and len(B) (zlib's crc32_combine)."""
    return _gf2_times(list(_zeros(len2)), crc1) ^ crc2 if len2 > 0 else crc1


class GzipBomb:
    """A gzip file written piece by piece; :meth:`repeat` adds N bytes of one value at
    the cost of N / 1 MiB small writes."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.crc = 0
        self.size = 0
        self._z = zlib.compressobj(9, zlib.DEFLATED, -15)
        self._blocks: dict[bytes, tuple[bytes, int]] = {}
        out.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff")  # no name, mtime 0

    def data(self, data: bytes) -> None:
        self.out.write(self._z.compress(data) + self._z.flush(zlib.Z_FULL_FLUSH))
        self.crc = zlib.crc32(data, self.crc)
        self.size += len(data)

    def repeat(self, byte: bytes, count: int) -> None:
        chunk = byte * _CHUNK
        full, rest = divmod(count, _CHUNK)
        if full:
            if byte not in self._blocks:  # after a full flush, the same bytes each time
                block = self._z.compress(chunk) + self._z.flush(zlib.Z_FULL_FLUSH)
                self._blocks[byte] = (block, zlib.crc32(chunk))
            block, chunk_crc = self._blocks[byte]
            for _ in range(full):
                self.out.write(block)
            # crc of `full` chunks: combine by doubling rather than `full` combines
            acc_crc, acc_len, n = 0, 0, full
            part_crc, part_len = chunk_crc, _CHUNK
            while n:
                if n & 1:
                    acc_crc = crc32_combine(acc_crc, part_crc, part_len) if acc_len else part_crc
                    acc_len += part_len
                n >>= 1
                if n:
                    part_crc = crc32_combine(part_crc, part_crc, part_len)
                    part_len *= 2
            self.crc = crc32_combine(self.crc, acc_crc, acc_len) if self.size else acc_crc
            self.size += acc_len
        if rest:
            self.data(byte * rest)

    def close(self) -> None:
        self.out.write(self._z.flush(zlib.Z_FINISH))
        self.out.write(struct.pack("<II", self.crc & 0xFFFFFFFF, self.size & 0xFFFFFFFF))


def tar_header(name: str, size: int) -> bytes:
    """A GNU tar header for a regular file (sizes over 8 GiB in base-256, as GNU tar)."""
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, 0
    return info.tobuf(format=tarfile.GNU_FORMAT)


def _pad(size: int) -> bytes:
    return b"\0" * (-size % 512)


def chart_yaml(name: str = "bomb", extra: bytes = b"") -> bytes:
    return b"apiVersion: v2\nname: " + name.encode() + b"\nversion: 0.1.0\n" + extra


def zero_member_chart(path: Path, zero_size: int, *, top: str = "bomb") -> Path:
    """A chart archive whose first member is ``zero_size`` zero bytes, then a valid
    ``TOP/Chart.yaml``: what ``helm`` would read, after a member nothing needs."""
    with open(path, "wb") as f:
        gz = GzipBomb(f)
        gz.data(tar_header(f"{top}/zeros.bin", zero_size))
        gz.repeat(b"\0", zero_size + len(_pad(zero_size)))
        meta = chart_yaml(top)
        gz.data(tar_header(f"{top}/Chart.yaml", len(meta)) + meta + _pad(len(meta)))
        gz.data(b"\0" * 1024)
        gz.close()
    return path


def many_members_chart(path: Path, members: int, member_size: int, *, top: str = "bomb") -> Path:
    """A gzip bomb made of many members, none large: only a budget on the total of
    decompressed bytes stops it. ``Chart.yaml`` comes last."""
    with open(path, "wb") as f:
        gz = GzipBomb(f)
        for i in range(members):
            gz.data(tar_header(f"{top}/templates/m{i:05d}.yaml", member_size))
            gz.repeat(b" ", member_size)
            gz.data(_pad(member_size))
        meta = chart_yaml(top)
        gz.data(tar_header(f"{top}/Chart.yaml", len(meta)) + meta + _pad(len(meta)) + bytes(1024))
        gz.close()
    return path


def huge_chart_yaml(path: Path, size: int, *, top: str = "bomb") -> Path:
    """A chart whose ``Chart.yaml`` is ``size`` bytes (valid YAML: a comment of spaces)."""
    head = chart_yaml(top) + b"#"
    with open(path, "wb") as f:
        gz = GzipBomb(f)
        gz.data(tar_header(f"{top}/Chart.yaml", size) + head)
        gz.repeat(b" ", size - len(head))
        gz.data(_pad(size) + bytes(1024))
        gz.close()
    return path


def chart(path: Path, meta: bytes, *, top: str = "c") -> Path:
    """A small chart archive with ``TOP/Chart.yaml`` = ``meta``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.GNU_FORMAT) as tf:
        info = tarfile.TarInfo(f"{top}/Chart.yaml")
        info.size = len(meta)
        tf.addfile(info, io.BytesIO(meta))
    path.write_bytes(buf.getvalue())
    return path


def nested_json(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def nested_yaml(depth: int) -> bytes:
    """A mapping whose one value is ``depth`` nested flow sequences."""
    return b"a: " + b"[" * depth + b"]" * depth + b"\n"


def alias_bomb_yaml() -> bytes:
    """The billion laughs: nine levels of ten aliases each."""
    lines = [
        b"apiVersion: v1",
        b"kind: ConfigMap",
        b"a0: &a0 [lol,lol,lol,lol,lol,lol,lol,lol,lol]",
    ]
    for i in range(1, 10):
        refs = b",".join([b"*a%d" % (i - 1)] * 10)
        lines.append(b"a%d: &a%d [%s]" % (i, i, refs))
    return b"\n".join(lines) + b"\n"


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def index_chain_layout(path: Path, depth: int, *, width: int = 1, distinct: bool = False) -> Path:
    """An OCI image layout whose one image is a chain of ``depth`` indexes, each the
    only child of the one before (every blob present and hashing to its digest); the
    outermost lists its child ``width`` times, or, with ``distinct``, ``width``
    different empty indexes."""
    index_type = "application/vnd.oci.image.index.v1+json"
    blobs: dict[str, bytes] = {}
    child: list[dict[str, object]] = []
    for level in range(depth):
        kids = child * width if level == depth - 1 else child
        if distinct and level == depth - 1:
            kids = []
            for n in range(width):
                leaf = {"schemaVersion": 2, "mediaType": index_type, "manifests": [], "n": n}
                data = json.dumps(leaf, sort_keys=True).encode()
                digest = "sha256:" + hashlib.sha256(data).hexdigest()
                blobs[f"blobs/sha256/{digest[7:]}"] = data
                kids.append({"mediaType": index_type, "digest": digest, "size": len(data)})
        doc = {"schemaVersion": 2, "mediaType": index_type, "manifests": kids}
        data = json.dumps(doc, sort_keys=True).encode()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[f"blobs/sha256/{digest[7:]}"] = data
        child = [{"mediaType": index_type, "digest": digest, "size": len(data)}]
    files = {
        "oci-layout": b'{"imageLayoutVersion": "1.0.0"}',
        "index.json": json.dumps({"schemaVersion": 2, "manifests": child}).encode(),
        **blobs,
    }
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


# -- hostile field values: every field of a valid document replaced, one at a time --------
HOSTILE_VALUES: list[Any] = [
    "",
    " ",
    "\x00",
    "a\nb",
    "cp1\n",
    "\x1b[2J",
    "$(touch /tmp/x)",
    "`id`",
    "'\"",
    "../../etc/passwd",
    "é" * 10,
    "A" * 5000,
    -1,
    0,
    2**70,
    1.5,
    True,
    None,
    [],
    {},
    ["x"] * 3,
    {"a": {"b": {"c": [1, {"d": None}]}}},
]


def field_paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from field_paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from field_paths(v, (*prefix, i))


def replaced_at(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    out = copy.deepcopy(doc)
    if not path:
        return value
    target = out
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = value
    return out


def field_variants(doc: Any) -> Iterator[tuple[str, Any]]:
    for path in field_paths(doc):
        for i, value in enumerate(HOSTILE_VALUES):
            yield f"{'.'.join(map(str, path)) or 'root'}={i}", replaced_at(doc, path, value)


# A valid cluster.yaml (as data) whose every field the corpus replaces.
VALID_CLUSTER: dict[str, Any] = {
    "apiVersion": "mk8s/v1alpha1",
    "kind": "Cluster",
    "metadata": {"name": "demo"},
    "spec": {
        "rke2": {
            "version": "v1.28.15+rke2r1",
            "tlsSan": ["k8s.example"],
            "serverUrl": "https://k8s.example:9345",
            "config": {"cni": "canal", "node-label": ["a=b"]},
            "serverConfig": {"etcd-expose-metrics": True},
            "agentConfig": {},
            "registries": {"mirrors": {"docker.io": {"endpoint": ["https://r.example"]}}},
        },
        "ssh": {"user": "root", "port": 22, "hostKeyPolicy": "strict"},
        "nodes": [
            {"address": "10.0.0.1", "name": "cp1", "role": "server"},
            {"address": "10.0.0.2", "role": "agent", "ssh": {"user": "ops", "port": 2222}},
        ],
        "options": {"concurrency": 5, "stagingDir": "/var/lib/mk8s"},
    },
}
