"""Lock / manifest invariants, pinned: for locks and ``bundle inspect`` (no schema) they
are the only guard against absolute paths, ``..``, paths outside ``artifacts/``, long
names, duplicates and bad sizes or hashes."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from mk8s.bundle import keys, reader
from mk8s.bundle.manifest import (
    Artifact,
    Lock,
    Release,
    artifact_path,
    build_lock,
    bundle_id,
    now_utc,
)
from mk8s.errors import BundleRejected, InputError, LockError
from tests.support import bundles

SHA = "0" * 64
RELEASE = Release(requested="v1.28.x", tag="v1.28.15+rke2r1", arch=("amd64",))


_KIND_OF_DIR = {"files": "file", "charts": "chart", "manifests": "manifest"}


def art(
    path: str, *, name: str | None = None, size: int = 1, sha256: str = SHA, **kw: Any
) -> Artifact:
    """An artifact at ``path``; its name and kind follow the path (a path that is not
    where that name and kind belong is what the invariants refuse)."""
    parts = path.split("/")
    kind = (
        _KIND_OF_DIR.get(parts[1], "rke2") if len(parts) > 2 and parts[0] == "artifacts" else "rke2"
    )
    if parts[:2] == ["artifacts", "files"]:
        kind = "file"
    return Artifact(name=name or parts[-1], kind=kind, path=path, size=size, sha256=sha256, **kw)


def lock(*arts: Artifact, **kw: Any) -> Lock:
    return Lock(release=RELEASE, resolved_at=bundles.RESOLVED_AT, artifacts=arts, **kw)


# A path must be exactly where its name and kind belong (artifact_path), which refuses
# absolute paths, "..", anything outside artifacts/ and names longer than 80 bytes.
BAD_PATHS = {
    "absolute": ("/artifacts/x", "artifact x: path '/artifacts/x' must be 'artifacts/x'"),
    "dotdot inside artifacts": (
        "artifacts/../x",
        "artifact x: path 'artifacts/../x' must be 'artifacts/x'",
    ),
    "dotdot deeper": (
        "artifacts/files/../../etc/x",
        "artifact x: path 'artifacts/files/../../etc/x' must be 'artifacts/files/x'",
    ),
    "outside artifacts": ("files/x", "artifact x: path 'files/x' must be 'artifacts/x'"),
    "artifacts prefix only": (
        "artifactsx/y",
        "artifact y: path 'artifactsx/y' must be 'artifacts/y'",
    ),
    "too long": (
        "artifacts/" + "n" * 91,
        f"artifact name {'n' * 91!r} must be 1 to 80 characters",
    ),
}


@pytest.mark.parametrize("case", list(BAD_PATHS))
def test_path_invariants(case: str) -> None:
    path, message = BAD_PATHS[case]
    with pytest.raises(ValueError) as e:
        lock(art(path))
    assert str(e.value) == message


def test_path_of_exactly_100_bytes_is_fine() -> None:
    path = "artifacts/manifests/" + "n" * 80
    assert len(path) == 100 and lock(art(path)).artifacts[0].path == path


@pytest.mark.parametrize(
    "kw",
    [{"size": -1}, {"sha256": "0" * 63}, {"sha256": "0" * 65}],
    ids=["negative-size", "short-sha", "long-sha"],
)
def test_size_and_sha_invariants(kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError) as e:
        lock(art("artifacts/x", **kw))
    assert str(e.value) == "artifact x: bad size or sha256"
    assert lock(art("artifacts/x", size=0)).total_size == 0


def test_duplicate_paths() -> None:
    with pytest.raises(ValueError) as e:
        lock(art("artifacts/x"), art("artifacts/x"))
    assert str(e.value) == "artifact path 'artifacts/x' appears twice"


def test_manifest_needs_created_by() -> None:
    with pytest.raises(ValueError) as e:
        lock(art("artifacts/x"), kind="mk8s.bundle")
    assert str(e.value) == "a bundle manifest needs createdBy"


def test_artifacts_are_sorted_by_path() -> None:
    lk = lock(art("artifacts/b", name="b"), art("artifacts/a", name="a"))
    assert [a.path for a in lk.artifacts] == ["artifacts/a", "artifacts/b"]


def _lock_json(path: str, **art_fields: Any) -> bytes:
    obj = lock(art("artifacts/x")).to_json()
    obj["artifacts"][0].update(path=path, **art_fields)
    return json.dumps(obj).encode()


@pytest.mark.parametrize("case", list(BAD_PATHS))
def test_invariants_guard_an_unvalidated_lock(case: str) -> None:
    """``bundle inspect`` parses without the schema: the invariants are the only guard."""
    path, _ = BAD_PATHS[case]
    message = f"artifact x: path {path!r} must be 'artifacts/x'"
    with pytest.raises(LockError) as e:
        Lock.from_bytes(_lock_json(path), source="mk8s.lock", validate=False)
    assert str(e.value) == (
        f"mk8s.lock is malformed (ValueError: {message}); regenerate it with `mk8s bundle lock`"
    )
    assert e.value.exit_code == 2


def test_inspect_of_a_manifest_with_an_unsafe_path(tmp_path: Path, ed_key: keys.PrivateKey) -> None:
    written, _ = bundles.build(tmp_path, ed_key)
    ms = bundles.read_members(written.path)
    obj = json.loads(ms[0].data)
    obj["artifacts"][0]["path"] = "/etc/passwd"
    ms[0] = bundles.Member(ms[0].name, json.dumps(obj).encode())
    path = bundles.craft(tmp_path / "evil.tar.zst", bundles.sign_members(ms, ed_key))
    head = reader.read_head(path)
    assert head.manifest is None
    assert head.problem is not None
    assert "path '/etc/passwd' must be 'artifacts/files/empty.txt'" in head.problem
    trusted = [keys.TrustedKey(Path("k.pub"), ed_key.public_key())]
    with pytest.raises(BundleRejected) as e:
        reader.verify_bundle(path, trusted)
    assert e.value.exit_code == 3 and "/etc/passwd" in str(e.value)
    assert str(e.value).endswith("; the bundle was not written by mk8s or was altered")


def test_schema_errors_name_the_first_field_and_count_the_rest() -> None:
    obj = lock(art("artifacts/x")).to_json()
    obj["rke2"]["arch"] = ["sparc"]
    with pytest.raises(LockError) as e:
        Lock.from_bytes(json.dumps(obj).encode(), source="mk8s.lock")
    one = str(e.value)
    assert one.startswith("mk8s.lock: rke2.arch[0]: ") and "more)" not in one
    assert one.endswith("; regenerate it with `mk8s bundle lock`")
    obj["artifacts"][0]["size"] = -5
    obj["resolvedAt"] = "yesterday"
    with pytest.raises(LockError) as e:
        Lock.from_bytes(json.dumps(obj).encode(), source="mk8s.lock")
    three = str(e.value)
    assert three.startswith("mk8s.lock: artifacts[0].size: ")
    assert "(and 2 more); regenerate it" in three


def test_not_json_and_malformed() -> None:
    with pytest.raises(LockError) as e:
        Lock.from_bytes(b"\xff", source="mk8s.lock")
    assert str(e.value) == "mk8s.lock is not UTF-8 text; regenerate it with `mk8s bundle lock`"
    with pytest.raises(LockError) as e:
        Lock.from_bytes(b"{", source="mk8s.lock")
    assert str(e.value).startswith("mk8s.lock is not valid JSON (")
    assert str(e.value).endswith("); regenerate it with `mk8s bundle lock`")
    with pytest.raises(LockError) as e:
        Lock.from_bytes(b"{}", validate=False)
    assert str(e.value) == (
        "lockfile is malformed (KeyError: 'rke2'); regenerate it with `mk8s bundle lock`"
    )


def test_canonical_bytes() -> None:
    a = art("artifacts/files/a", url="https://example.invalid/a", arch="arm64")
    b = art("artifacts/b")
    lk = Lock(
        release=Release("v1.29", "v1.29.1+rke2r2", ("amd64", "arm64"), "cilium", ("multus",), True),
        resolved_at="2026-01-02T03:04:05Z",
        artifacts=(a, b),
    )
    text = lk.to_bytes().decode()
    assert text.endswith("}\n") and text.startswith('{\n  "artifacts": [\n    {\n      "kind"')
    assert list(json.loads(text)) == sorted(json.loads(text))
    assert json.loads(text)["artifacts"][1] == {
        "name": "a",
        "kind": "file",
        "path": "artifacts/files/a",
        "size": 1,
        "sha256": SHA,
        "url": "https://example.invalid/a",
        "arch": "arm64",
    }
    assert json.loads(text)["artifacts"][0] == {
        "name": "b",
        "kind": "rke2",
        "path": "artifacts/b",
        "size": 1,
        "sha256": SHA,
    }
    again = Lock.from_bytes(lk.to_bytes())
    assert again == lk and again.to_bytes() == lk.to_bytes()
    assert again.release.cni == "cilium" and again.release.image_groups == ("multus",)
    assert again.release.allow_prerelease is True
    assert lk.bundle_name() == "mk8s-rke2-v1.29.1-rke2r2-linux-amd64-arm64.tar.zst"
    assert lk.release.version == "v1.29.1"
    assert lk.mtime == 1767323045
    assert lk.total_size == 2


def test_lock_and_manifest_forms() -> None:
    lk = lock(art("artifacts/x"))
    m = lk.as_manifest("9.9.9")
    assert (m.kind, m.created_by) == ("mk8s.bundle", "mk8s 9.9.9")
    back = m.as_lock()
    assert (back.kind, back.created_by) == ("mk8s.lock", None)
    assert back == lk and "createdBy" not in json.loads(back.to_bytes())


def test_artifact_paths_and_find() -> None:
    assert artifact_path("x.rpm", "file") == "artifacts/files/x.rpm"
    assert artifact_path("install.sh", "install-script") == "artifacts/install.sh"
    a = Artifact("img-a", "images", "artifacts/img-a", 1, SHA, arch="amd64")
    b = Artifact("img-b", "images", "artifacts/img-b", 1, SHA, arch="arm64")
    c = Artifact("sums", "checksums", "artifacts/sums", 1, SHA, arch="amd64")
    lk = lock(a, b, c)
    assert lk.find(kind="images") == [a, b]
    assert lk.find(kind="images", arch="arm64") == [b]
    assert lk.find(kind="rke2") == []


def test_build_lock() -> None:
    lk = build_lock(RELEASE, [art("artifacts/x")], "2026-01-02T03:04:05Z")
    assert (lk.release, lk.resolved_at, lk.artifacts) == (
        RELEASE,
        "2026-01-02T03:04:05Z",
        (art("artifacts/x"),),
    )
    with pytest.raises(InputError) as e:
        build_lock(
            RELEASE, [art("artifacts/files/x"), art("artifacts/files/x")], bundles.RESOLVED_AT
        )
    assert str(e.value) == (
        "artifact path 'artifacts/files/x' appears twice; rename the conflicting --file"
    )


def test_bundle_id_and_now() -> None:
    assert bundle_id(b"m") == "62c66a7a5dd70c31"
    stamp = now_utc()
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", stamp)
    parsed = time.mktime(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert abs(parsed - time.time()) < 60


def test_schema_error_count_with_two_and_one(tmp_path: Path) -> None:
    obj = lock(art("artifacts/x")).to_json()
    obj["rke2"]["arch"] = ["sparc"]
    with pytest.raises(LockError) as e:
        Lock.from_bytes(json.dumps(obj).encode(), source="mk8s.lock")
    assert str(e.value) == (
        "mk8s.lock: rke2.arch[0]: 'sparc' is not one of ['amd64', 'arm64']; "
        "regenerate it with `mk8s bundle lock`"
    )
    obj["resolvedAt"] = "yesterday"
    with pytest.raises(LockError) as e:
        Lock.from_bytes(json.dumps(obj).encode(), source="mk8s.lock")
    assert " (and 1 more); regenerate it" in str(e.value)


def test_now_is_utc_whatever_the_local_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "XYZ+7")  # a POSIX zone seven hours behind UTC
    time.tzset()
    try:
        stamp = now_utc()
    finally:
        monkeypatch.undo()
        time.tzset()
    import calendar

    utc = calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))
    assert abs(utc - time.time()) < 60


# -- what a refusal may quote ----------------------------------------------------------


def _doc(arts: list[dict[str, Any]]) -> dict[str, Any]:
    doc = lock(art("artifacts/rke2.linux-amd64.tar.gz")).to_json()
    doc["artifacts"] = arts
    return doc


def test_too_many_artifacts_quotes_the_count_not_the_list() -> None:
    one = art("artifacts/files/f.bin").to_json()
    arts = [
        {**one, "name": f"f{i}.bin", "path": f"artifacts/files/f{i}.bin"} for i in range(10_001)
    ]
    with pytest.raises(LockError) as e:
        Lock.from_bytes(json.dumps(_doc(arts)).encode(), source="big.lock")
    assert str(e.value) == (
        "big.lock: artifacts: has 10001 items; at most 10000 are allowed;"
        " regenerate it with `mk8s bundle lock`"
    )


def test_errors_are_counted_up_to_a_thousand() -> None:
    arts = [{"name": f"f{i}.bin"} for i in range(600)]  # four missing fields each
    with pytest.raises(LockError) as e:
        Lock.from_bytes(json.dumps(_doc(arts)).encode(), source="m")
    assert str(e.value).endswith(" (and 999+ more); regenerate it with `mk8s bundle lock`")
    with pytest.raises(LockError) as e:
        Lock.from_bytes(json.dumps(_doc(arts[:2])).encode(), source="m")
    assert str(e.value).startswith("m: artifacts[0]: ")
    assert str(e.value).endswith(" (and 7 more); regenerate it with `mk8s bundle lock`")


def test_a_malformed_value_is_shown_masked_and_cut() -> None:
    doc = lock(art("artifacts/rke2.linux-amd64.tar.gz")).to_json()
    doc["resolvedAt"] = "https://robot:s3cret@reg.lan/" + "a" * 500
    with pytest.raises(LockError) as e:
        Lock.from_bytes(json.dumps(doc).encode(), source="m", validate=False)
    msg = str(e.value)
    assert msg.startswith("m is malformed (ValueError: resolvedAt 'https://***@reg.lan/aaa")
    assert "s3cret" not in msg and " more characters)); regenerate it" in msg
