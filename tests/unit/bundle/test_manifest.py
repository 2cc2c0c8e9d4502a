"""mk8s/bundle/format/manifest.py: lock and manifest invariants and field checks, pinned. For
locks and ``bundle inspect`` (no schema) they are the only guard against absolute paths,
``..``, paths outside ``artifacts/``, long names, duplicates, bad sizes or hashes, and
bad artifact URLs (which scheme for which kind, no credentials, pinned oci://
references), names, release blocks, kind, createdBy and resolvedAt, so each message is
pinned exactly."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from mk8s.bundle.format import keys, reader
from mk8s.bundle.format.manifest import (
    EXECUTABLE_KINDS,
    LOCAL_KINDS,
    Artifact,
    ArtifactKind,
    Lock,
    Release,
    artifact_path,
    build_lock,
    bundle_id,
    check_artifact_name,
    now_utc,
)
from mk8s.errors import BundleRejected, InputError, LockError
from tests.support import bundles
from tests.support.hostile import field_variants

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


# -- fields: artifact URLs, names, the release block, kind, createdBy, resolvedAt --------
SHA_A = "a" * 64


def field_art(
    name: str = "x.tgz", kind: str = "rke2", url: str | None = None, **kw: Any
) -> Artifact:
    return Artifact(
        name=name,
        kind=ArtifactKind(kind),
        path=artifact_path(name, kind),
        size=1,
        sha256=SHA_A,
        url=url,
        **kw,
    )


def field_lock(*arts: Artifact, release: Release = RELEASE, **kw: Any) -> Lock:
    kw.setdefault("resolved_at", bundles.RESOLVED_AT)
    return Lock(release=release, artifacts=arts, **kw)


def refused(*arts: Artifact, **kw: Any) -> str:
    with pytest.raises(ValueError) as e:
        field_lock(*arts, **kw)
    return str(e.value)


GOOD_URLS = [
    ("rke2", "https://mirror.lan/rke2.tgz"),
    ("rke2", "https://mirror.lan/!x"),  # "!" (0x21) is the first character allowed
    ("rke2", "http://10.0.0.1:8080/a/b.tgz"),
    ("file", "file:///srv/extra.rpm"),
    ("chart", "file:///srv/app-1.0.0.tgz"),
    ("manifest", "file:///srv/app.yaml"),
    ("mk8s", "file:///usr/bin/mk8s"),
    ("image", "oci://reg.lan:5000/team/app@sha256:" + "b" * 64),
    ("image", "oci://reg.lan/app:1.0@sha256:" + "b" * 64),
]


@pytest.mark.parametrize(("kind", "url"), GOOD_URLS)
def test_good_urls(kind: str, url: str) -> None:
    assert field_lock(field_art(kind=kind, url=url)).artifacts[0].url == url


PIN = "oci:// url must be pinned as REGISTRY/REPO@sha256:DIGEST"


BAD_URLS = {
    "space": ("rke2", "https://mirror.lan/a b", "url has spaces or control characters"),
    "tab": ("rke2", "https://mirror.lan/a\tb", "url has spaces or control characters"),
    "DEL": ("rke2", "https://mirror.lan/a\x7f", "url has spaces or control characters"),
    "bad port": (
        "rke2",
        "https://mirror.lan:99999/x",
        "url is not a valid URL (Port out of range 0-65535)",
    ),
    "image over https": (
        "image",
        "https://reg.lan/app",
        "only an image comes from oci://, and always",
    ),
    "rke2 over oci": (
        "rke2",
        "oci://reg.lan/app@sha256:" + "b" * 64,
        "only an image comes from oci://, and always",
    ),
    "oci by tag": ("image", "oci://reg.lan/app:1.0", PIN),
    "oci without host": ("image", "oci:///app@sha256:" + "b" * 64, PIN),
    "oci without repository": ("image", "oci://reg.lan/@sha256:" + "b" * 64, PIN),
    "oci credentials": ("image", "oci://u@reg.lan/app@sha256:" + "b" * 64, PIN),
    "oci @ mid-path": ("image", "oci://reg.lan/a@b/app:1.0", PIN),
    "oci short digest": ("image", "oci://reg.lan/app@sha256:" + "b" * 63, PIN),
    "oci long digest": ("image", "oci://reg.lan/app@sha256:" + "b" * 65, PIN),
    "oci upper-case digest": ("image", "oci://reg.lan/app@sha256:" + "B" * 64, PIN),
    "oci other algorithm": ("image", "oci://reg.lan/app@sha512:" + "b" * 64, PIN),
    "oci two digests": (
        "image",
        "oci://reg.lan/app@sha256:" + "b" * 64 + "@sha256:" + "c" * 64,
        PIN,
    ),
    "rke2 from file": (
        "rke2",
        "file:///srv/rke2.tgz",
        "a rke2 artifact must come from upstream, not file://",
    ),
    "images from file": (
        "images",
        "file:///srv/i.tar",
        "a images artifact must come from upstream, not file://",
    ),
    "checksums from file": (
        "checksums",
        "file:///srv/s.txt",
        "a checksums artifact must come from upstream, not file://",
    ),
    "ftp": ("rke2", "ftp://mirror.lan/x", "url must be http(s) or file://"),
    "no host": ("rke2", "https:///x", "url must be http(s) or file://"),
    "relative": ("rke2", "rke2.tgz", "url must be http(s) or file://"),
    "credentials": (
        "rke2",
        "https://u:p@mirror.lan/x",
        "url holds credentials; keep them in ~/.netrc or in MK8S_RELEASE_URL at run time,"
        " never in a lock",
    ),
    "user only": (
        "rke2",
        "https://u@mirror.lan/x",
        "url holds credentials; keep them in ~/.netrc or in MK8S_RELEASE_URL at run time,"
        " never in a lock",
    ),
}


@pytest.mark.parametrize("case", list(BAD_URLS))
def test_bad_urls(case: str) -> None:
    kind, url, why = BAD_URLS[case]
    assert refused(field_art(kind=kind, url=url)) == f"artifact x.tgz: {why}"


def test_no_url_is_fine_for_every_kind() -> None:
    arts = [field_art(name=f"n{i}", kind=k) for i, k in enumerate(ArtifactKind)]
    assert len(field_lock(*arts).artifacts) == len(ArtifactKind)


def test_kind_sets() -> None:
    assert {str(k) for k in LOCAL_KINDS} == {"file", "mk8s", "chart", "manifest"}
    assert {str(k) for k in EXECUTABLE_KINDS} == {"install-script", "mk8s"}
    assert [artifact_path("n", k) for k in ("image", "chart", "manifest", "sbom", "mk8s")] == [
        "artifacts/oci/n",
        "artifacts/charts/n",
        "artifacts/manifests/n",
        "artifacts/n",
        "artifacts/n",
    ]


def test_every_path_fits_a_ustar_name() -> None:
    """Names are at most 80 bytes: every kind's path fits the 100 bytes of a ustar
    name field, so no member ever needs a long-name extension."""
    assert max(len(artifact_path("n" * 80, k).encode()) for k in ArtifactKind) == 100


def test_a_kind_given_as_a_string_becomes_the_enum() -> None:
    a = Artifact(name="x", kind="rke2", path="artifacts/x", size=1, sha256=SHA_A)  # type: ignore[arg-type]
    assert type(a.kind) is ArtifactKind and a.kind is ArtifactKind.RKE2


def test_unknown_kind() -> None:
    with pytest.raises(ValueError) as e:
        Artifact(name="x", kind="nope", path="artifacts/x", size=1, sha256=SHA_A)  # type: ignore[arg-type]
    assert str(e.value) == "artifact x: unknown kind 'nope'"


def test_artifact_json_round_trip_keeps_optional_fields_optional() -> None:
    a = field_art(url="https://m.lan/x", arch="arm64")
    assert a.to_json() == {
        "name": "x.tgz",
        "kind": "rke2",
        "path": "artifacts/x.tgz",
        "size": 1,
        "sha256": SHA_A,
        "url": "https://m.lan/x",
        "arch": "arm64",
    }
    assert Artifact.from_json(a.to_json()) == a
    bare = field_art()
    assert set(bare.to_json()) == {"name", "kind", "path", "size", "sha256"}
    assert Artifact.from_json(bare.to_json()) == bare


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "must be 1 to 80 characters"),
        ("n" * 81, "must be 1 to 80 characters"),
        ("a/b", "may hold only letters, digits and . _ + -"),
        ("a b", "may hold only letters, digits and . _ + -"),
        ("ä", "may hold only letters, digits and . _ + -"),
        (".hidden", "must not start with a dot"),
        (
            ".ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_+-",
            "must not start with a dot",
        ),
        ("..", "must not start with a dot"),
    ],
)
def test_bad_names(name: str, why: str) -> None:
    assert check_artifact_name(name) == why


@pytest.mark.parametrize(
    "name",
    [
        "n" * 80,
        "a",
        "rke2.linux-amd64.tar.gz",
        "A_b+c-1.0",
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._+-",  # every one
    ],
)
def test_good_names(name: str) -> None:
    assert check_artifact_name(name) is None


def test_a_bad_name_in_a_lock() -> None:
    a = Artifact(name=".x", kind=ArtifactKind.RKE2, path="artifacts/.x", size=1, sha256=SHA_A)
    assert refused(a) == "artifact name '.x' must not start with a dot"


@pytest.mark.parametrize(
    "kw", [{"size": True}, {"size": 1.0}, {"sha256": "A" * 64}, {"sha256": "X" * 64}, {"sha256": 7}]
)
def test_size_must_be_an_int_and_sha_lowercase_hex(kw: dict[str, Any]) -> None:
    base: dict[str, Any] = dict(name="x", kind="rke2", path="artifacts/x", size=1, sha256=SHA_A)
    a = Artifact(**{**base, **kw})
    assert refused(a) == "artifact x: bad size or sha256"


@pytest.mark.parametrize("field", ["requested", "tag", "cni"])
@pytest.mark.parametrize("value", ["", "v" * 65, 7, None])
def test_release_strings(field: str, value: Any) -> None:
    r = Release(**{**RELEASE.__dict__, field: value})
    assert refused(field_art(), release=r) == (
        f"rke2.{field} must be a non-empty string of at most 64 characters"
    )


def test_release_string_of_64_is_fine() -> None:
    r = Release(requested="v" * 64, tag="t" * 64, arch=("amd64",), cni="c" * 64)
    assert field_lock(field_art(), release=r).release == r


@pytest.mark.parametrize("arch", [(), ("x86",), ("amd64", "s390x")])
def test_release_arch(arch: tuple[str, ...]) -> None:
    r = Release(requested="v1.28.x", tag="v1.28.15+rke2r1", arch=arch)
    assert refused(field_art(), release=r) == "rke2.arch must list amd64 and/or arm64"


def test_release_both_arches_and_groups() -> None:
    r = Release(
        requested="v1.28.x",
        tag="v1.28.15+rke2r1",
        arch=("amd64", "arm64"),
        image_groups=("core", "canal"),
        allow_prerelease=True,
    )
    lk = field_lock(field_art(), release=r)
    assert lk.release.to_json() == {
        "requested": "v1.28.x",
        "tag": "v1.28.15+rke2r1",
        "arch": ["amd64", "arm64"],
        "cni": "canal",
        "imageGroups": ["core", "canal"],
        "allowPrerelease": True,
    }
    assert Release.from_json(lk.release.to_json()) == r
    assert r.version == "v1.28.15"
    assert lk.bundle_name() == "mk8s-rke2-v1.28.15-rke2r1-linux-amd64-arm64.tar.zst"


def test_release_groups_and_prerelease_types() -> None:
    r = Release(requested="v1.28.x", tag="t", arch=("amd64",), image_groups=(1,))  # type: ignore[arg-type]
    assert refused(field_art(), release=r) == "rke2.imageGroups must be strings"
    r = Release(requested="v1.28.x", tag="t", arch=("amd64",), allow_prerelease=1)  # type: ignore[arg-type]
    assert refused(field_art(), release=r) == "rke2.allowPrerelease must be true or false"


def test_kind_created_by_and_resolved_at() -> None:
    assert refused(field_art(), kind="mk8s.other") == "kind must be mk8s.lock or mk8s.bundle"
    assert refused(field_art(), created_by=7) == "createdBy must be a string"
    assert refused() == "the lock pins no artifact"
    assert refused(field_art(), resolved_at="2026-11-29 10:00:00") == (
        "resolvedAt '2026-11-29 10:00:00' is not a UTC time"
    )
    assert refused(field_art(), resolved_at=None) == "resolvedAt None is not a UTC time"
    lk = field_lock(field_art(), kind="mk8s.bundle", created_by="mk8s 9")
    assert (lk.kind, lk.created_by) == ("mk8s.bundle", "mk8s 9")
    assert lk.as_lock().created_by is None and lk.as_lock().kind == "mk8s.lock"
    assert lk.as_manifest("1.2").created_by == "mk8s 1.2"
    assert field_lock(field_art(), created_by="mk8s 1").created_by == "mk8s 1"


def test_find_by_kind_and_arch() -> None:
    lk = field_lock(
        field_art(name="a", kind="images", arch="amd64"),
        field_art(name="b", kind="images", arch="arm64"),
        field_art(name="c", kind="rke2", arch="amd64"),
    )
    assert [a.name for a in lk.find(kind="images")] == ["a", "b"]
    assert [a.name for a in lk.find(kind=ArtifactKind.IMAGES, arch="arm64")] == ["b"]
    assert lk.find(kind="sbom") == []
    with pytest.raises(ValueError):
        lk.find(kind="nope")
    assert lk.total_size == 3


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"[]", "mk8s.lock is JSON but not an object"),
        (b"7", "mk8s.lock is JSON but not an object"),
        (
            b"[" * 100_000 + b"]" * 100_000,
            "mk8s.lock is nested deeper than 64 levels",
        ),
    ],
)
@pytest.mark.parametrize("validate", [True, False])
def test_from_bytes_refusals(data: bytes, problem: str, validate: bool) -> None:
    with pytest.raises(LockError) as e:
        Lock.from_bytes(data, source="mk8s.lock", validate=validate)
    assert str(e.value) == f"{problem}; regenerate it with `mk8s bundle lock`"
    assert e.value.exit_code == 2


# -- hostile locks: credentials, invariants, dates, JSON that is no object ---------------
def test_a_lock_with_credentials_is_refused(tmp_path: Path) -> None:
    art = _art(url="https://u:p@mirror.example/rke2.linux-amd64.tar.gz")
    with pytest.raises(ValueError, match="credentials"):
        field_lock(art)


# ------------------------------------------------------------------ locks and manifests
def _art(**kw: object) -> Artifact:
    base: dict[str, object] = dict(
        name="rke2.linux-amd64.tar.gz",
        kind="rke2",
        path="artifacts/rke2.linux-amd64.tar.gz",
        size=1,
        sha256="0" * 64,
        url="https://example.invalid/x",
        arch="amd64",
    )
    base.update(kw)
    return Artifact(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kw",
    [
        {"path": "artifacts/."},
        {"name": ".", "path": "artifacts/."},
        {"name": "..", "path": "artifacts/.."},
        {"path": "artifacts/../x"},
        {"path": "/artifacts/x"},
        {"path": "artifacts/files/rke2.linux-amd64.tar.gz"},
        {"kind": "nonsense"},
        {"url": "file:///etc/shadow"},
        {"url": "gopher://h/x"},
        {"url": "https://h/\x1b[2J"},
        {"sha256": "G" * 64},
        {"size": -1},
    ],
)
def test_artifact_invariants(kw: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        field_lock(_art(**kw))


@pytest.mark.parametrize("when", ["2024-13-45T99:99:99Z", "2024-02-30T00:00:00Z"])
def test_dates_that_match_the_pattern_but_are_not_dates(tmp_path: Path, run_cli, when: str) -> None:  # type: ignore[no-untyped-def]
    good = field_lock(_art()).to_json()
    good["resolvedAt"] = when
    p = tmp_path / "mk8s.lock"
    p.write_text(json.dumps(good))
    with pytest.raises(InputError, match="not a UTC time"):
        Lock.from_bytes(p.read_bytes())
    r = run_cli("bundle", "create", "--lock", str(p), "--unsigned", "-o", str(tmp_path / "b"))
    assert r.code == 2 and "resolvedAt" in r.err and "internal error" not in r.err


@pytest.mark.parametrize("data", [b"[" * 100_000 + b"]" * 100_000, b"[1, 2]", b'"x"', b"null"])
def test_lock_json_that_is_deep_or_not_an_object(tmp_path: Path, run_cli, data: bytes) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "mk8s.lock"
    p.write_bytes(data)
    r = run_cli("bundle", "create", "--lock", str(p), "--unsigned", "-o", str(tmp_path / "b"))
    assert r.code == 2, r.err
    assert "internal error" not in r.err


# -- a generated hostile corpus: every field of a valid lock, replaced -------------------
def test_every_hostile_lock_variant_loads_or_is_a_lock_error(tmp_path: Path) -> None:
    files = bundles.default_files(tmp_path / "f")
    good = bundles.lock_for(files, bundles.KINDS).to_json()
    loaded = refused = 0
    for label, variant in field_variants(good):
        data = json.dumps(variant).encode()
        for validate in (True, False):
            try:
                lock = Lock.from_bytes(data, validate=validate)
            except LockError as e:
                refused += 1
                assert str(e), label
                continue
            loaded += 1
            lock.to_bytes()
            lock.bundle_name()
            _ = lock.mtime, lock.total_size
    assert loaded > 20 and refused > 500, (loaded, refused)
