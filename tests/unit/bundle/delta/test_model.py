"""The delta section of a manifest and its recipes: what parses, what is refused and why.

A delta's manifest is untrusted input until its signature is checked, and its recipes
steer what extract reads: every inconsistency must be refused with the field named.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest

from mk8s.bundle.delta import recipe
from mk8s.bundle.delta.model import BaseRef, Delta, Pin, Source, Zstd
from mk8s.bundle.format.manifest import Lock
from mk8s.errors import LockError
from tests.support import bundles

SHA = hashlib.sha256(b"x").hexdigest()
IMAGES = "artifacts/rke2-images.linux-amd64.tar.zst"


def full(tmp_path: Path) -> Lock:
    return bundles.lock_for(bundles.default_files(tmp_path), bundles.KINDS).as_manifest()


def delta_of(m: Lock) -> Delta:
    arts = {a.path: a for a in m.artifacts}
    images = arts[IMAGES]
    carried = [Pin(a.path, a.size, a.sha256) for a in m.artifacts if a.path != IMAGES]
    pieces = [
        Pin(f"blobs/sha256/{SHA}", 1, SHA),
        Pin("delta/rke2-images.linux-amd64.tar.zst.recipe", 10, SHA),
    ]
    z = Zstd(16, 25, True, True, True, True, "1.5.7")
    base = BaseRef(SHA[:16], SHA, "old.tar.zst", "v1.28.14+rke2r1", (Pin(IMAGES, 5, SHA),))
    source = Source(IMAGES, recipe=pieces[1].path, content=(images.size, SHA), zstd=z)
    return Delta(base, tuple(sorted(carried + pieces, key=lambda p: p.path)), (source,))


def test_a_delta_manifest_round_trips_and_validates(tmp_path: Path) -> None:
    m = full(tmp_path)
    d = dataclasses.replace(m, delta=delta_of(m))
    again = Lock.from_bytes(d.to_bytes())
    assert again == d and again.whole() == m
    assert [a.path for a in again.members()] == [p.path for p in d.delta.members]  # type: ignore[union-attr]
    assert again.as_lock().delta is None
    assert json.loads(d.to_bytes())["delta"]["sources"][0]["zstd"]["level"] == 16


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda d: dataclasses.replace(d, members=d.members[::-1]), "sorted by path"),
        (
            lambda d: dataclasses.replace(
                d, members=(*d.members[:-2], Pin(f"blobs/sha256/{'0' * 64}", 1, SHA), d.members[-1])
            ),
            "does not hash to its name",
        ),
        (lambda d: dataclasses.replace(d, sources=()), "neither carried nor sourced"),
        (
            lambda d: dataclasses.replace(
                d, sources=(dataclasses.replace(d.sources[0], base=IMAGES),)
            ),
            "not pinned alike",
        ),
        (
            lambda d: dataclasses.replace(d, base=dataclasses.replace(d.base, bundle_id="0" * 16)),
            "start of manifestSha256",
        ),
        (
            lambda d: dataclasses.replace(
                d, sources=(dataclasses.replace(d.sources[0], recipe="delta/nope.recipe"),)
            ),
            "is not a delta/ member",
        ),
    ],
)
def test_inconsistent_delta_sections_are_refused(tmp_path: Path, change, why: str) -> None:  # type: ignore[no-untyped-def]
    m = full(tmp_path)
    with pytest.raises(ValueError, match=why):
        dataclasses.replace(m, delta=change(delta_of(m)))


def test_the_schema_refuses_unknown_delta_fields(tmp_path: Path) -> None:
    m = full(tmp_path)
    data = json.loads(dataclasses.replace(m, delta=delta_of(m)).to_bytes())
    data["delta"]["sources"][0]["extra"] = 1
    with pytest.raises(LockError, match="delta"):
        Lock.from_bytes(json.dumps(data).encode())
    data = json.loads(dataclasses.replace(m, delta=delta_of(m)).to_bytes())
    data["kind"] = "mk8s.lock"
    with pytest.raises(LockError, match="only a bundle manifest may be a delta"):
        Lock.from_bytes(json.dumps(data).encode())


def test_recipes_parse_and_refuse(tmp_path: Path) -> None:
    good = recipe.Recipe(
        6, SHA, (recipe.Segment("delta/x.skel", 0, 2), recipe.Segment("base:a/b", 9, 4, SHA))
    )
    assert recipe.parse(good.render(), "r") == good
    assert good.base_paths() == {"a/b"} and good.base_extent("a/b") == 13
    bad = {
        b"nope\n": "not an mk8s delta recipe",
        good.render().replace(b" 6\n", b" 7\n", 1): "add up to 6 bytes, not 7",
        good.render().replace(b"9 4", b"-9 4"): "is not a byte count",
        good.render().replace(SHA.encode() + b"\n", b"xyz\n"): "bad sha256",
        good.render() + b"junk": "not an mk8s delta recipe",
    }
    for data, why in bad.items():
        with pytest.raises(ValueError, match=why):
            recipe.parse(data, "r")


def test_scan_splits_a_tar_into_skeleton_and_blobs_exactly(tmp_path: Path) -> None:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in [("small", b"a" * 100), ("big/" + "n" * 120, b"b" * 5000)]:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    raw = buf.getvalue()
    parts: list[tuple[str, bytes]] = []

    class Sink:
        def skeleton(self, data: bytes) -> None:
            parts.append(("s", bytes(data)))

        def blob_begin(self, offset: int, size: int) -> None:
            parts.append(("begin", f"{offset} {size}".encode()))

        def blob_data(self, data: bytes) -> None:
            parts.append(("b", bytes(data)))

        def blob_end(self, sha256: str) -> None:
            parts.append(("end", sha256.encode()))

    assert recipe.scan(io.BytesIO(raw), Sink()) == len(raw)  # type: ignore[arg-type]
    assert b"".join(d for k, d in parts if k in ("s", "b")) == raw
    begins = [d for k, d in parts if k == "begin"]
    assert len(begins) == 1  # the 100-byte file stays skeleton; the long name's pax header too
    offset, size = map(int, begins[0].split())
    assert raw[offset : offset + size] == b"b" * 5000
    assert (("end", hashlib.sha256(b"b" * 5000).hexdigest().encode())) in parts
