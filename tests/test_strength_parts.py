"""The split-bundle checks, pinned: the parts index (canonical bytes, schema errors, every
consistency rule at its boundary), finding and sizing the parts, the index signature and
the whole bundle's hash. Exact messages throughout; real files, real keys.

The CLI-level behaviour (every fault is exit 3 naming the part) is tests/unit/bundle/test_parts.py;
reading the parts as one stream is tests/unit/bundle/test_partstream.py.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from mk8s.bundle import keys, parts
from mk8s.bundle.parts import Part, PartRejected, PartsIndex
from mk8s.bundle.split import SplitResult
from mk8s.errors import InputError
from tests.support.bundles import split_data

NAME = "b.tar.zst"
AGAIN = "copy that part again from the original medium"
DATA = bytes(range(256)) * 2  # 512 bytes: parts of 200, 200, 112


def _flip(path: Path, at: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- sizes ------------------------------------------------------------------------------------


def test_parse_size_boundaries_and_messages() -> None:
    assert parts.parse_size("1") == 1
    with pytest.raises(InputError) as e:
        parts.parse_size("0")
    assert str(e.value) == "--split size must be at least 1 byte"
    with pytest.raises(InputError) as e:
        parts.parse_size("12 apples")
    assert str(e.value) == (
        "--split '12 apples' is not a size; give bytes or a number with K, M, G or T "
        "(1024-based; KB, MB, GB for 1000)"
    )


def test_media_note_from_one_byte_over_fat32() -> None:
    assert parts.media_note(parts.FAT32_MAX) is None
    assert parts.media_note(parts.FAT32_MAX + 1) == (
        "parts of 4294967296 bytes do not fit on FAT32 media (at most 4 GiB - 1 byte per "
        "file); use 4095M there"
    )


# -- the index --------------------------------------------------------------------------------


def _index(
    sizes: tuple[int, ...] = (10, 5),
    *,
    name: str = NAME,
    part_size: int = 10,
    total: int | None = None,
    names: tuple[str, ...] | None = None,
) -> PartsIndex:
    names = names or tuple(parts.part_name(name, i) for i in range(len(sizes)))
    ps = tuple(Part(n, s, "c" * 64) for n, s in zip(names, sizes, strict=True))
    return PartsIndex(name, sum(sizes) if total is None else total, "a" * 64, part_size, ps)


CANONICAL = """{
  "bundle": {
    "name": "b.tar.zst",
    "sha256": "<a>",
    "size": 15
  },
  "kind": "mk8s.parts",
  "partSize": 10,
  "parts": [
    {
      "name": "b.tar.zst.000",
      "sha256": "<c>",
      "size": 10
    },
    {
      "name": "b.tar.zst.001",
      "sha256": "<c>",
      "size": 5
    }
  ],
  "schemaVersion": 1
}
""".replace("<a>", "a" * 64).replace("<c>", "c" * 64)


def test_index_bytes_are_canonical_json() -> None:
    ix = _index()
    assert ix.to_bytes() == CANONICAL.encode("ascii")  # sorted keys, two-space indent
    assert PartsIndex.from_bytes(ix.to_bytes(), "x.parts") == ix


def test_index_that_is_not_json() -> None:
    with pytest.raises(ValueError) as why:
        json.loads("{")
    with pytest.raises(PartRejected) as e:
        PartsIndex.from_bytes(b"{", "x.parts")
    assert str(e.value) == f"x.parts (the parts index) is not valid JSON ({why.value})"


def test_index_schema_error_names_the_first_field_by_path() -> None:
    doc = _index().to_json()
    doc["kind"] = "other"  # checked before "bundle" by the schema, but sorts after it
    doc["bundle"]["sha256"] = "X" * 64
    with pytest.raises(PartRejected) as e:
        PartsIndex.from_bytes(json.dumps(doc).encode(), "x.parts")
    assert str(e.value) == (
        f"x.parts: bundle.sha256: '{'X' * 64}' does not match '^[0-9a-f]{{64}}$'"
        " (and 1 more); "
        "use the .parts file written with the parts"
    )


INCONSISTENT = {
    "slash": ({"name": "a/b"}, "bundle name 'a/b' is not a plain file name"),
    "empty": ({"name": ""}, "bundle name '' is not a plain file name"),
    "dot": ({"name": "."}, "bundle name '.' is not a plain file name"),
    "dotdot": ({"name": ".."}, "bundle name '..' is not a plain file name"),
    "no parts": ({"sizes": ()}, "0 parts (1 to 1000 allowed)"),
    "1001 parts": ({"sizes": (1,) * 1001, "part_size": 1}, "1001 parts (1 to 1000 allowed)"),
    "misnamed": (
        {"names": (f"{NAME}.000", f"{NAME}.002")},
        f"part 1 is named '{NAME}.002', not '{NAME}.001'",
    ),
    "short non-final part": (
        {"sizes": (5, 10)},
        f"part {NAME}.000 has size 5 with a part size of 10",
    ),
    "long non-final part": (
        {"sizes": (11, 5)},
        f"part {NAME}.000 has size 11 with a part size of 10",
    ),
    "empty last part": ({"sizes": (10, 0)}, f"part {NAME}.001 has size 0 with a part size of 10"),
    "long last part": ({"sizes": (10, 11)}, f"part {NAME}.001 has size 11 with a part size of 10"),
    "sizes do not add up": ({"total": 16}, "the parts' sizes do not add up to the bundle's size"),
}


@pytest.mark.parametrize("case", sorted(INCONSISTENT))
def test_inconsistent_index_is_rejected(case: str) -> None:
    kwargs, why = INCONSISTENT[case]
    with pytest.raises(PartRejected) as e:
        _index(**kwargs)  # type: ignore[arg-type]
    assert str(e.value) == f"the parts index is inconsistent: {why}; split the bundle again"


def test_index_limits_that_are_allowed() -> None:
    assert len(_index((1,) * 1000, part_size=1).parts) == 1000
    assert _index((10, 1)).bundle_size == 11  # a last part of one byte
    assert _index((10,)).bundle_size == 10  # one part of exactly the part size


# -- finding the parts ------------------------------------------------------------------------


def test_locate(tmp_path: Path) -> None:
    result = split_data(tmp_path, DATA, 200)
    index = result.index_path
    for given in (index, result.part_paths[1], index.with_name(NAME)):
        assert parts.locate(given) == index
    assert parts.locate(tmp_path / "src" / NAME) is None  # a plain bundle
    index.unlink()
    with pytest.raises(PartRejected) as e:
        parts.locate(result.part_paths[0])
    assert str(e.value) == (
        f"{result.part_paths[0]} looks like a part of a split bundle, but its parts index "
        f"{NAME}.parts is missing; copy the .parts and .parts.sig files with the parts"
    )


def test_load_index_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / f"{NAME}.parts"
    with pytest.raises(InputError) as e:
        parts.load_index(missing)
    assert str(e.value) == (
        f"parts index {missing} does not exist; copy the .parts file written with the parts again"
    )
    missing.write_bytes(b"[")
    with pytest.raises(PartRejected, match=rf"^{NAME}\.parts \(the parts index\) is not valid"):
        parts.load_index(missing)


def _part_error(result: SplitResult, fault: str) -> str:
    paths = result.part_paths
    if fault == "missing":
        paths[1].unlink()
    elif fault == "directory":
        paths[1].unlink()
        paths[1].mkdir()
    elif fault == "truncated":
        paths[1].write_bytes(paths[1].read_bytes()[:-1])
    elif fault == "longer":
        paths[1].write_bytes(paths[1].read_bytes() + b"x")
    else:
        paths[1].with_name(f"{NAME}.003").write_bytes(b"x")
    with pytest.raises(PartRejected) as e:
        parts.part_paths(result.index_path, result.index)
    return str(e.value)


PART_FAULTS = {
    "missing": f"part {NAME}.001 is missing (3 parts expected); {AGAIN}",
    "directory": f"part {NAME}.001 is not a regular file; {AGAIN}",
    "truncated": f"part {NAME}.001 is 199 bytes, the parts index says 200 (truncated, or parts "
    f"were renamed out of order); {AGAIN}",
    "longer": f"part {NAME}.001 is 201 bytes, the parts index says 200 (longer than it should "
    f"be, or parts were renamed out of order); {AGAIN}",
    "extra": f"part {NAME}.003 is not in the parts index (an extra or stale part); remove it; "
    "the index lists every part of this bundle",
}


@pytest.mark.parametrize("fault", sorted(PART_FAULTS))
def test_part_faults_before_reading(tmp_path: Path, fault: str) -> None:
    result = split_data(tmp_path, DATA, 200)
    assert parts.part_paths(result.index_path, result.index) == list(result.part_paths)
    assert _part_error(result, fault) == PART_FAULTS[fault]


# -- the index signature and the whole bundle -------------------------------------------------


def test_check_index_signature(tmp_path: Path, ed_key: keys.PrivateKey) -> None:
    result = split_data(tmp_path, DATA, 200, ed_key)
    trusted = [keys.TrustedKey(Path("k.pub"), ed_key.public_key())]
    check = parts.check_index(result.index_path, trusted)
    assert check is not None and check.signer is trusted[0] and check.index == result.index
    index, sig = result.index_path, result.signature_path
    saved = index.read_bytes()
    index.write_bytes(saved + b"\n")  # still a valid index, but not the signed bytes
    with pytest.raises(PartRejected) as e:
        parts.check_index(index, trusted)
    kid = trusted[0].key_id
    assert str(e.value) == (
        f"the parts index {NAME}.parts is not trusted: the signature over {NAME}.parts does "
        f"not match key {kid[:16]}: the index or signature was altered; do not use this "
        "bundle; get it again from its source"
    )
    index.write_bytes(saved)
    sig.write_bytes(b"hello\n")
    with pytest.raises(PartRejected) as e:
        parts.check_index(index, trusted)
    assert str(e.value) == (
        f"the parts index {NAME}.parts is not trusted: signature member is not a mk8s "
        "signature (bad header); get the parts again from their source"
    )
    sig.write_bytes(b"x" * 8193)
    with pytest.raises(PartRejected) as e:  # a damaged signature file is exit 3
        parts.check_index(index, trusted)
    assert (
        f"parts index signature {sig} is larger than 8192 bytes; this cannot be a parts "
        "index signature" in str(e.value)
    )
    sig.unlink()
    with pytest.raises(PartRejected) as e:
        parts.check_index(index, trusted)
    assert str(e.value) == (
        f"the parts index signature {NAME}.parts.sig is missing; copy the .parts.sig file "
        "with the parts"
    )


def test_check_index_of_an_unsigned_index_and_a_plain_bundle(tmp_path: Path) -> None:
    result = split_data(tmp_path, DATA, 200)
    check = parts.check_index(result.part_paths[0], [])
    assert check is not None and check.signer is None and check.path == result.index_path
    assert parts.check_index(tmp_path / "src" / NAME, []) is None


def test_check_whole_names_the_part_that_changed(tmp_path: Path) -> None:
    result = split_data(tmp_path, DATA, 200)
    check = parts.check_index(result.index_path, [])
    assert check is not None
    check.check_whole(_sha(DATA))
    with pytest.raises(PartRejected) as e:
        check.check_whole("0" * 64)
    assert (
        str(e.value) == f"the parts hash to {'0' * 64}, the parts index says {_sha(DATA)}; {AGAIN}"
    )
    victim = result.part_paths[1]
    _flip(victim)
    got = _sha(victim.read_bytes())
    with pytest.raises(PartRejected) as e:
        check.check_whole(_sha(b"".join(p.read_bytes() for p in result.part_paths)))
    assert str(e.value) == (
        f"part {NAME}.001 is damaged or out of order: its sha256 is {got}, the parts index "
        f"says {result.index.parts[1].sha256}; {AGAIN}"
    )
