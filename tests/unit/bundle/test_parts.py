"""Split bundles: split and join at several sizes, every part fault rejected with exit 3
naming the part, verify / extract / inspect reading the parts as one stream, the
signed parts index, and the auditor's recipe for parts."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mk8s.bundle.format import keys, parts, reader
from mk8s.bundle.format.parts import Part, PartRejected, PartsIndex
from mk8s.bundle.format.split import SplitResult, join_parts, split_bundle
from mk8s.errors import InputError
from tests.support import bundles, hostile
from tests.support.bundles import split_data
from tests.support.paths import ROOT

FORMAT_DOC = ROOT / "docs" / "format.md"


@pytest.fixture
def signed(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(bundle, public key, private key), the bundle written by the real writer."""
    files = keys.write_key_pair(keys.generate_private_key(), tmp_path / "mk8s", None)
    key = keys.load_private_key(files.private, lambda: None)
    written, _ = bundles.build(tmp_path / "src", key)
    return written.path, files.public, files.private


def _split(run_cli, bundle: Path, size: str, out: Path, *key: str) -> list[Path]:  # type: ignore[no-untyped-def]
    out.mkdir(exist_ok=True)
    r = run_cli("bundle", "split", str(bundle), "--size", size, "-o", str(out), *key)
    assert r.code == 0, r.err
    return sorted(out.glob(bundle.name + ".[0-9][0-9][0-9]"))


@pytest.mark.parametrize("size", ["1000", "4K", "64K", "100K", "1M"])
def test_split_and_join_at_several_sizes(run_cli, signed, tmp_path: Path, size: str) -> None:  # type: ignore[no-untyped-def]
    bundle, pub, priv = signed
    original = bundle.read_bytes()
    manifest_len = len(bundles.read_members(bundle)[0].data)
    out = tmp_path / "parts"
    pieces = _split(run_cli, bundle, size, out, "--key", str(priv))
    limit = parts.parse_size(size)
    assert len(pieces) == -(-len(original) // limit)
    assert all(p.stat().st_size == limit for p in pieces[:-1])
    if size == "1000":  # parts smaller than the manifest: its head spans several parts
        assert limit < manifest_len
    # cat of the parts in order is byte for byte the bundle
    assert b"".join(p.read_bytes() for p in pieces) == original
    for given in (pieces[0], out / (bundle.name + ".parts"), out / bundle.name):
        r = run_cli("bundle", "verify", str(given), "--key", str(pub), "--json")
        assert r.code == 0, r.err
        data = json.loads(r.out)
        assert (
            data["size"] == len(original) and data["sha256"] == hashlib.sha256(original).hexdigest()
        )
    r = run_cli("bundle", "inspect", str(pieces[0]))
    assert r.code == 0 and "rke2:        v1.28.15+rke2r1" in r.out
    joined = tmp_path / "joined"
    joined.mkdir()
    r = run_cli("bundle", "join", str(pieces[0]), "-o", str(joined))
    assert r.code == 0, r.err
    assert (joined / bundle.name).read_bytes() == original


def test_split_is_deterministic_and_does_not_resign(signed, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bundle, _, priv = signed
    key = keys.load_private_key(priv, lambda: None)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = split_bundle(bundle, 5000, lambda b: keys.sign(key, b), out=tmp_path / "a" / bundle.name)
    b = split_bundle(bundle, 5000, lambda b: keys.sign(key, b), out=tmp_path / "b" / bundle.name)
    assert a.index_path.read_bytes() == b.index_path.read_bytes()
    assert a.signature_path.read_bytes() == b.signature_path.read_bytes()
    index = json.loads(a.index_path.read_text())
    assert index["bundle"]["sha256"] == hashlib.sha256(bundle.read_bytes()).hexdigest()
    assert [p["name"] for p in index["parts"]] == [p.name for p in a.part_paths]


def test_split_refuses_too_many_parts_and_existing_outputs(run_cli, signed, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bundle, _, _ = signed
    out = tmp_path / "o"
    _split(run_cli, bundle, "64K", out)
    r = run_cli("bundle", "split", str(bundle), "--size", "100")
    assert r.code == 2 and "at most 1000" in r.err
    r = run_cli("bundle", "split", str(out / (bundle.name + ".parts")), "--size", "1M")
    assert r.code == 2 and "join it first" in r.err
    r = run_cli("bundle", "split", str(bundle), "--size", "12 apples")
    assert r.code == 2 and "is not a size" in r.err
    r = run_cli("bundle", "split", str(bundle), "--size", "64K", "-o", str(out))
    assert r.code == 1 and "already exists" in r.err
    # --force with larger parts leaves no stale part behind
    r = run_cli("bundle", "split", str(bundle), "--size", "1M", "-o", str(out), "--force")
    assert r.code == 0, r.err
    assert len(list(out.glob(bundle.name + ".[0-9]*"))) == 1


def test_parse_size() -> None:
    assert parts.parse_size("700M") == 700 << 20
    assert parts.parse_size("4G") == 4 << 30
    assert parts.parse_size("4GiB") == 4 << 30
    assert parts.parse_size("4GB") == 4_000_000_000
    assert parts.parse_size("4095m") == 4095 << 20
    assert parts.parse_size("123") == 123
    for bad in ("", "0", "-1", "4X", "G", "1.5G"):
        with pytest.raises(InputError):
            parts.parse_size(bad)


# -- faults: every one is exit 3 naming the part ----------------------------------------------
def _fault_missing(pieces: list[Path]) -> str:
    pieces[3].unlink()
    return pieces[3].name


def _fault_swapped(pieces: list[Path]) -> str:
    a, b = pieces[2].read_bytes(), pieces[3].read_bytes()
    pieces[2].write_bytes(b)
    pieces[3].write_bytes(a)
    return pieces[2].name


def _fault_truncated(pieces: list[Path]) -> str:
    pieces[4].write_bytes(pieces[4].read_bytes()[:-1])
    return pieces[4].name


def _fault_flipped(pieces: list[Path]) -> str:
    data = bytearray(pieces[5].read_bytes())
    data[len(data) // 2] ^= 0x01
    pieces[5].write_bytes(bytes(data))
    return pieces[5].name


def _fault_flipped_first(pieces: list[Path]) -> str:
    data = bytearray(pieces[0].read_bytes())
    data[300] ^= 0x40  # inside the manifest: the part is named, not the signature
    pieces[0].write_bytes(bytes(data))
    return pieces[0].name


def _fault_extra(pieces: list[Path]) -> str:
    extra = pieces[-1].with_name(parts.part_name(pieces[0].name[:-4], len(pieces)))
    extra.write_bytes(b"\0" * 512)
    return extra.name


def _fault_flipped_last(pieces: list[Path]) -> str:
    data = bytearray(pieces[-1].read_bytes())
    data[-3] ^= 0x80
    pieces[-1].write_bytes(bytes(data))
    return pieces[-1].name


FAULTS = {
    "missing": _fault_missing,
    "swapped": _fault_swapped,
    "truncated": _fault_truncated,
    "flipped": _fault_flipped,
    "flipped-first": _fault_flipped_first,
    "flipped-last": _fault_flipped_last,
    "extra": _fault_extra,
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_every_part_fault_is_exit_3_naming_the_part(
    run_cli, signed, tmp_path: Path, fault: str
) -> None:  # type: ignore[no-untyped-def]
    bundle, pub, priv = signed
    out = tmp_path / "parts"
    pieces = _split(run_cli, bundle, "16K", out, "--key", str(priv))
    assert len(pieces) > 6
    named = FAULTS[fault](pieces)
    dest = tmp_path / "dest"
    for argv in (
        ("bundle", "verify", str(out / (bundle.name + ".000")), "--key", str(pub)),
        (
            "bundle",
            "extract",
            str(out / (bundle.name + ".parts")),
            "--key",
            str(pub),
            "-d",
            str(dest),
        ),
        ("bundle", "join", str(out / (bundle.name + ".parts")), "-o", str(tmp_path)),
    ):
        r = run_cli(*argv)
        assert r.code == 3, (argv, r.err)
        assert f"part {named}" in r.err, (fault, argv, r.err)
        assert r.err.count("\n") == 1
    assert not dest.exists()  # extract left nothing
    assert not (tmp_path / bundle.name).exists()  # join left nothing


def test_fault_in_the_middle_names_the_part_even_in_the_library(signed, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Through reader.verify_bundle directly (as deploy calls it), not only the CLI."""
    bundle, pub, priv = signed
    key = keys.load_private_key(priv, lambda: None)
    result = split_bundle(bundle, 8192, lambda b: keys.sign(key, b), out=tmp_path / bundle.name)
    victim = result.part_paths[len(result.part_paths) // 2]
    data = bytearray(victim.read_bytes())
    data[10] ^= 0xFF
    victim.write_bytes(bytes(data))
    trusted = keys.load_trusted_keys([pub])
    with pytest.raises(parts.PartRejected, match=re.escape(f"part {victim.name} is damaged")):
        reader.verify_bundle(result.index_path, trusted)


def test_missing_index_and_tampered_index(run_cli, signed, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bundle, pub, priv = signed
    out = tmp_path / "parts"
    pieces = _split(run_cli, bundle, "64K", out, "--key", str(priv))
    index = out / (bundle.name + ".parts")
    saved = index.read_bytes()
    # an index edited to vouch for other bytes: its signature no longer matches
    doc = json.loads(saved)
    doc["parts"][0]["sha256"] = "0" * 64
    index.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    r = run_cli("bundle", "verify", str(pieces[0]), "--key", str(pub))
    assert r.code == 3 and "parts index" in r.err and "not trusted" in r.err, r.err
    # a signature by another key
    other = keys.write_key_pair(keys.generate_private_key(), tmp_path / "other", None)
    r = run_cli("bundle", "verify", str(pieces[0]), "--key", str(other.public))
    assert r.code == 3
    index.unlink()
    r = run_cli("bundle", "verify", str(pieces[0]), "--key", str(pub))
    assert r.code == 3 and ".parts is missing" in r.err, r.err
    index.write_bytes(saved)
    (out / (bundle.name + ".parts.sig")).unlink()
    r = run_cli("bundle", "verify", str(pieces[0]), "--key", str(pub))
    assert r.code == 3 and "signature" in r.err and "missing" in r.err


def test_unsigned_index_relies_on_the_bundle_signature(run_cli, signed, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bundle, pub, _ = signed
    out = tmp_path / "parts"
    pieces = _split(run_cli, bundle, "64K", out)  # no --key: an unsigned index
    assert b"algorithm: none" in (out / (bundle.name + ".parts.sig")).read_bytes()
    r = run_cli("bundle", "verify", str(pieces[0]), "--key", str(pub))
    assert r.code == 0, r.err
    # an unsigned index cannot smuggle a different bundle in: the manifest signature
    other_key = keys.generate_private_key()
    forged, _ = bundles.build(tmp_path / "forged", other_key)
    shutil.rmtree(out)
    _split(run_cli, forged.path, "64K", out)
    r = run_cli("bundle", "verify", str(out / (forged.path.name + ".000")), "--key", str(pub))
    assert r.code == 3 and "not a trusted key" in r.err


def test_join_without_index_is_a_usage_error(signed) -> None:  # type: ignore[no-untyped-def]
    bundle, _, _ = signed
    with pytest.raises(InputError):
        join_parts(bundle)


def _audit_script(section: str) -> str:
    text = FORMAT_DOC.read_text()
    m = re.search(rf"<!-- {section}:begin -->\n```sh\n(.*?)```\n<!-- {section}:end -->", text, re.S)
    assert m, f"docs/format.md lost its {section} recipe"
    # keep the lines for an ed25519 key (the test's), drop the ECDSA alternative
    return "\n".join(ln for ln in m.group(1).splitlines() if "# ecdsa" not in ln)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_readme_parts_recipe_runs_with_stock_tools(run_cli, signed, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bundle, pub, priv = signed
    out = tmp_path / "parts"
    _split(run_cli, bundle, "32K", out, "--key", str(priv))
    script = _audit_script("parts-audit")
    env = {"BUNDLE": bundle.name, "PUB": str(pub), "PATH": "/usr/bin:/bin"}
    p = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=out, env=env, capture_output=True, text=True
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Signature Verified Successfully" in p.stdout
    assert p.stdout.count(": OK") == len(list(out.glob("*.[0-9][0-9][0-9]"))) + 1
    assert (out / bundle.name).read_bytes() == bundle.read_bytes()
    # a damaged part fails the recipe
    (out / bundle.name).unlink()
    victim = out / (bundle.name + ".001")
    data = bytearray(victim.read_bytes())
    data[5] ^= 1
    victim.write_bytes(bytes(data))
    p = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=out, env=env, capture_output=True, text=True
    )
    assert p.returncode != 0 and "FAILED" in p.stdout


CLUSTER = """apiVersion: mk8s/v1alpha1
kind: Cluster
metadata: {name: prod}
spec:
  nodes:
    - {address: 10.0.0.1, name: cp1, role: server}
    - {address: 10.0.0.2, name: w1, role: agent}
"""


def test_deploy_dry_run_takes_a_split_bundle(run_cli, signed, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    bundle, pub, priv = signed
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cluster.yaml").write_text(CLUSTER)
    pieces = _split(run_cli, bundle, "32K", tmp_path / "parts", "--key", str(priv))
    r = run_cli(
        "deploy", "-f", "cluster.yaml", "--bundle", str(pieces[0]), "--key", str(pub), "--dry-run"
    )
    assert r.code == 0, r.err
    assert "verified; no node is contacted" in r.out
    named = _fault_flipped(pieces)
    r = run_cli(
        "deploy", "-f", "cluster.yaml", "--bundle", str(pieces[0]), "--key", str(pub), "--dry-run"
    )
    assert r.code == 3 and f"part {named}" in r.err, r.err


def test_whole_bundle_hash_is_checked_against_the_index(signed, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bundle, pub, priv = signed
    key = keys.load_private_key(priv, lambda: None)
    result = split_bundle(bundle, 50_000, lambda b: keys.sign(key, b), out=tmp_path / bundle.name)
    check = parts.check_index(result.index_path, keys.load_trusted_keys([pub]))
    assert check is not None and check.signer is not None
    check.check_whole(hashlib.sha256(bundle.read_bytes()).hexdigest())
    with pytest.raises(parts.PartRejected, match="the parts index says"):
        check.check_whole("0" * 64)


# -- pinned: the parts index, finding and sizing the parts, the index signature ----------
NAME = "b.tar.zst"


AGAIN = "copy that part again from the original medium"


DATA = bytes(range(256)) * 2  # 512 bytes: parts of 200, 200, 112


def _flip(path: Path, at: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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


# -- an oversized parts index ------------------------------------------------------------
def test_an_oversized_parts_index_is_a_rejected_bundle(tmp_path: Path) -> None:
    index = tmp_path / "b.tar.zst.parts"
    index.write_bytes(b" " * (parts.MAX_INDEX + 1))
    with pytest.raises(parts.PartRejected, match="larger than 1048576 bytes"):
        parts.load_index(index)
    index.write_bytes(hostile.nested_json(100_000))
    with pytest.raises(parts.PartRejected, match="nested deeper than 64 levels"):
        parts.load_index(index)
