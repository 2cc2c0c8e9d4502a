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

from mk8s.bundle import keys, parts, reader
from mk8s.bundle.split import join_parts, split_bundle
from mk8s.errors import InputError
from tests.support import bundles

FORMAT_DOC = Path(__file__).resolve().parents[1] / "docs" / "format.md"


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
