"""Split bundles: the parts index, finding a split bundle's files, and part sizes.

A bundle split for size-limited media is ``NAME.tar.zst.000``, ``.001``, ... whose
concatenation in order is byte-for-byte the unsplit bundle, plus two small files:

* ``NAME.tar.zst.parts``: the parts index, canonical JSON (sorted keys, two-space
  indent, ``schemas/parts.schema.json``) naming the whole bundle's name, size and
  sha256 and each part's name, size and sha256, so ``grep`` and ``sha256sum -c`` can
  read it;
* ``NAME.tar.zst.parts.sig``: a detached signature over the index's exact bytes in
  the format of ``mk8s-bundle.json.sig``, so the auditor checks it with the same
  ``openssl`` line. ``bundle split`` without ``--key`` writes an *unsigned* marker:
  the parts are then checked by their hashes and the contents, as always, by the
  bundle's own signed manifest.

Everything here raises :class:`PartRejected` (exit 3) naming the part for a missing,
extra, resized or malformed piece; a file the user names that does not exist is an
InputError (exit 2).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mk8s.bundle.format.keys import Signature, TrustedKey, verify_signature
from mk8s.errors import BundleRejected, InputError
from mk8s.files import open_regular, read_regular
from mk8s.schemas import first_problem
from mk8s.untrusted import load_json

SCHEMA = "parts.schema.json"
PARTS_KIND = "mk8s.parts"
INDEX_SUFFIX = ".parts"
SIG_SUFFIX = ".parts.sig"
MAX_PARTS = 1000  # three-digit suffixes: .000 .. .999
MAX_INDEX = 1 << 20
_PART_SUFFIX = re.compile(r"\.(\d{3})$")
_SIZE = re.compile(r"^(\d+)(?:([KMGT])(i?B)?|(B))?$", re.IGNORECASE)
_UNITS = {"K": 1, "M": 2, "G": 3, "T": 4}
FAT32_MAX = (4 << 30) - 1
AGAIN = "copy that part again from the original medium"
CHUNK = 1 << 20


class PartRejected(BundleRejected):
    """A part of a split bundle is missing, extra, resized or damaged (exit 3)."""


def parse_size(text: str) -> int:
    """``700M``, ``4G``, ``4GiB`` (powers of 1024), ``4GB`` (powers of 1000) or bytes.

    Raises InputError (exit 2) for anything else or for zero.
    """
    m = _SIZE.match(text.strip())
    if not m:
        raise InputError(
            f"--split {text!r} is not a size",
            "give bytes or a number with K, M, G or T (1024-based; KB, MB, GB for 1000)",
        )
    number, unit, tail, _ = m.groups()
    base = 1000 if tail and tail.upper() == "B" else 1024
    size = int(number) * base ** _UNITS[unit.upper()] if unit else int(number)
    if size <= 0:
        raise InputError("--split size must be at least 1 byte")
    return size


def media_note(size: int) -> str | None:
    """A note for a part size that common media cannot take, or None."""
    if size > FAT32_MAX:
        return (
            f"parts of {size} bytes do not fit on FAT32 media (at most 4 GiB - 1 byte per "
            "file); use 4095M there"
        )
    return None


def part_name(bundle_name: str, index: int) -> str:
    return f"{bundle_name}.{index:03d}"


@dataclass(frozen=True)
class Part:
    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class PartsIndex:
    """The parts index. An instance is consistent: names, sizes and count add up."""

    bundle_name: str
    bundle_size: int
    bundle_sha256: str
    part_size: int
    parts: tuple[Part, ...]

    def __post_init__(self) -> None:
        why = _inconsistency(self)
        if why:
            raise PartRejected(f"the parts index is inconsistent: {why}", "split the bundle again")

    def to_json(self) -> dict[str, Any]:
        return {
            "schemaVersion": 1,
            "kind": PARTS_KIND,
            "bundle": {
                "name": self.bundle_name,
                "size": self.bundle_size,
                "sha256": self.bundle_sha256,
            },
            "partSize": self.part_size,
            "parts": [{"name": p.name, "size": p.size, "sha256": p.sha256} for p in self.parts],
        }

    def to_bytes(self) -> bytes:
        return (json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n").encode("ascii")

    @classmethod
    def from_bytes(cls, data: bytes, source: str) -> PartsIndex:
        """Parse and validate; PartRejected (exit 3) naming the field otherwise."""
        obj = load_json(
            data, what=f"{source} (the parts index)", error=PartRejected, max_bytes=MAX_INDEX
        )
        wrong = first_problem(SCHEMA, obj)
        if wrong:
            raise PartRejected(f"{source}: {wrong}", "use the .parts file written with the parts")
        b = obj["bundle"]
        parts = tuple(Part(p["name"], p["size"], p["sha256"]) for p in obj["parts"])
        return cls(b["name"], b["size"], b["sha256"], obj["partSize"], parts)


def _inconsistency(ix: PartsIndex) -> str | None:
    if "/" in ix.bundle_name or ix.bundle_name in ("", ".", ".."):
        return f"bundle name {ix.bundle_name!r} is not a plain file name"
    if not 1 <= len(ix.parts) <= MAX_PARTS:
        return f"{len(ix.parts)} parts (1 to {MAX_PARTS} allowed)"
    for i, p in enumerate(ix.parts):
        if p.name != part_name(ix.bundle_name, i):
            return f"part {i} is named {p.name!r}, not {part_name(ix.bundle_name, i)!r}"
        last = i == len(ix.parts) - 1
        if (p.size != ix.part_size and not last) or not 0 < p.size <= ix.part_size:
            return f"part {p.name} has size {p.size} with a part size of {ix.part_size}"
    if sum(p.size for p in ix.parts) != ix.bundle_size:
        return "the parts' sizes do not add up to the bundle's size"
    return None


def locate(path: Path) -> Path | None:
    """The parts index of the split bundle ``path`` names, or None for a plain bundle.

    ``path`` may be the index itself, any part (``NAME.000``), or the unsplit name
    when only the parts exist. A part whose index is absent is PartRejected.
    """
    if path.name.endswith(INDEX_SUFFIX):
        return path
    m = _PART_SUFFIX.search(path.name)
    if m:
        index = path.with_name(path.name[: m.start()] + INDEX_SUFFIX)
        if not index.exists():
            raise PartRejected(
                f"{path} looks like a part of a split bundle, but its parts index "
                f"{index.name} is missing",
                "copy the .parts and .parts.sig files with the parts",
            )
        return index
    if not path.exists():
        index = path.with_name(path.name + INDEX_SUFFIX)
        if index.is_file():
            return index
    return None


def load_index(index_path: Path) -> tuple[PartsIndex, bytes]:
    """The index and its exact bytes; InputError if unreadable, PartRejected if bad."""
    data = read_regular(
        index_path,
        what="parts index",
        max_size=MAX_INDEX,
        fix="copy the .parts file written with the parts again",
        too_large=PartRejected,  # it came with the parts: a damaged one rejects them
    )
    return PartsIndex.from_bytes(data, index_path.name), data


def part_paths(index_path: Path, index: PartsIndex) -> list[Path]:
    """Each part's path, after checking that every part is there with its size and that
    no extra part lies beside them; PartRejected naming the first problem."""
    folder = index_path.parent
    paths = []
    for p in index.parts:
        path = folder / p.name
        if not path.exists():
            raise PartRejected(
                f"part {p.name} is missing ({len(index.parts)} parts expected)", AGAIN
            )
        if not path.is_file():
            raise PartRejected(f"part {p.name} is not a regular file", AGAIN)
        size = path.stat().st_size
        if size != p.size:
            how = "truncated" if size < p.size else "longer than it should be"
            raise PartRejected(
                f"part {p.name} is {size} bytes, the parts index says {p.size} "
                f"({how}, or parts were renamed out of order)",
                AGAIN,
            )
        paths.append(path)
    pattern = re.compile(re.escape(index.bundle_name) + r"\.\d{3,}$")
    known = {p.name for p in index.parts}
    extra = sorted(
        f.name for f in folder.iterdir() if pattern.match(f.name) and f.name not in known
    )
    if extra:
        raise PartRejected(
            f"part {extra[0]} is not in the parts index (an extra or stale part)",
            "remove it; the index lists every part of this bundle",
        )
    return paths


def damaged(part: Part, got: str) -> PartRejected:
    return PartRejected(
        f"part {part.name} is damaged or out of order: its sha256 is {got}, "
        f"the parts index says {part.sha256}",
        AGAIN,
    )


def find_bad_part(paths: Sequence[Path], index_parts: Sequence[Part]) -> PartRejected | None:
    """Hash each part in order; the error naming the first that differs from the
    index (size or sha256), or None when all match."""
    for path, part in zip(paths, index_parts, strict=True):
        h = hashlib.sha256()
        size = 0
        with open_regular(path, what="part", error=PartRejected, fix=AGAIN) as f:
            while data := f.read(CHUNK):
                h.update(data)
                size += len(data)
        if size != part.size:
            return PartRejected(
                f"part {part.name} is {size} bytes, the parts index says {part.size}", AGAIN
            )
        if h.hexdigest() != part.sha256:
            return damaged(part, h.hexdigest())
    return None


@dataclass(frozen=True)
class IndexCheck:
    """A parts index whose signature was checked (signer None: an unsigned index)."""

    path: Path
    index: PartsIndex
    signer: TrustedKey | None

    def check_whole(self, sha256: str) -> None:
        """After the reader accepted the parts: their concatenation (``sha256``, as the
        reader computed it) must be the bundle the index describes; otherwise
        PartRejected naming the first part that differs."""
        if sha256 == self.index.bundle_sha256:
            return
        bad = find_bad_part(part_paths(self.path, self.index), self.index.parts)
        raise bad or PartRejected(
            f"the parts hash to {sha256}, the parts index says {self.index.bundle_sha256}",
            AGAIN,
        )


def check_index(
    path: Path, trusted: Sequence[TrustedKey], *, allow_unsigned: bool = False
) -> IndexCheck | None:
    """For a split bundle: check the index's signature and that every part is present
    with its size, before any part is read. None for a plain bundle.

    An unsigned index is accepted (the bundle's own signature, checked by the reader,
    still protects every byte of the contents); a signature that no trusted key
    verifies is PartRejected.
    """
    index_path = locate(path)
    if index_path is None:
        return None
    index, data = load_index(index_path)
    sig_path = index_path.with_name(index_path.name[: -len(INDEX_SUFFIX)] + SIG_SUFFIX)
    if not sig_path.is_file():
        raise PartRejected(
            f"the parts index signature {sig_path.name} is missing",
            "copy the .parts.sig file with the parts",
        )
    raw = read_regular(
        sig_path, what="parts index signature", max_size=8192, too_large=PartRejected
    )
    try:
        sig = Signature.from_bytes(raw)
        signer = None
        if sig.signed:
            signer = verify_signature(data, sig, trusted, allow_unsigned=allow_unsigned)
    except BundleRejected as e:
        why = e.problem.replace("mk8s-bundle.json", index_path.name).replace(
            "the manifest", "the index"
        )
        raise PartRejected(
            f"the parts index {index_path.name} is not trusted: {why}",
            e.fix or "get the parts again from their source",
        ) from e
    part_paths(index_path, index)
    return IndexCheck(index_path, index, signer)
