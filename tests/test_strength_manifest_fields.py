"""Lock / manifest field checks, pinned: artifact URLs (which scheme for which kind,
no credentials, pinned oci:// references), names, the release block, kind, createdBy
and resolvedAt. Without the schema (``bundle inspect``, locks built in code) these
checks are the only guard, so each message is pinned exactly."""

from __future__ import annotations

from typing import Any

import pytest

from mk8s.bundle.format.manifest import (
    EXECUTABLE_KINDS,
    LOCAL_KINDS,
    Artifact,
    ArtifactKind,
    Lock,
    Release,
    artifact_path,
    check_artifact_name,
)
from mk8s.errors import LockError
from tests.support import bundles

SHA = "a" * 64
RELEASE = Release(requested="v1.28.x", tag="v1.28.15+rke2r1", arch=("amd64",))


def art(name: str = "x.tgz", kind: str = "rke2", url: str | None = None, **kw: Any) -> Artifact:
    return Artifact(
        name=name,
        kind=ArtifactKind(kind),
        path=artifact_path(name, kind),
        size=1,
        sha256=SHA,
        url=url,
        **kw,
    )


def lock(*arts: Artifact, release: Release = RELEASE, **kw: Any) -> Lock:
    kw.setdefault("resolved_at", bundles.RESOLVED_AT)
    return Lock(release=release, artifacts=arts, **kw)


def refused(*arts: Artifact, **kw: Any) -> str:
    with pytest.raises(ValueError) as e:
        lock(*arts, **kw)
    return str(e.value)


# -- URLs --------------------------------------------------------------------------------

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
    assert lock(art(kind=kind, url=url)).artifacts[0].url == url


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
    assert refused(art(kind=kind, url=url)) == f"artifact x.tgz: {why}"


def test_no_url_is_fine_for_every_kind() -> None:
    arts = [art(name=f"n{i}", kind=k) for i, k in enumerate(ArtifactKind)]
    assert len(lock(*arts).artifacts) == len(ArtifactKind)


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
    a = Artifact(name="x", kind="rke2", path="artifacts/x", size=1, sha256=SHA)  # type: ignore[arg-type]
    assert type(a.kind) is ArtifactKind and a.kind is ArtifactKind.RKE2


def test_unknown_kind() -> None:
    with pytest.raises(ValueError) as e:
        Artifact(name="x", kind="nope", path="artifacts/x", size=1, sha256=SHA)  # type: ignore[arg-type]
    assert str(e.value) == "artifact x: unknown kind 'nope'"


def test_artifact_json_round_trip_keeps_optional_fields_optional() -> None:
    a = art(url="https://m.lan/x", arch="arm64")
    assert a.to_json() == {
        "name": "x.tgz",
        "kind": "rke2",
        "path": "artifacts/x.tgz",
        "size": 1,
        "sha256": SHA,
        "url": "https://m.lan/x",
        "arch": "arm64",
    }
    assert Artifact.from_json(a.to_json()) == a
    bare = art()
    assert set(bare.to_json()) == {"name", "kind", "path", "size", "sha256"}
    assert Artifact.from_json(bare.to_json()) == bare


# -- names -------------------------------------------------------------------------------


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
    a = Artifact(name=".x", kind=ArtifactKind.RKE2, path="artifacts/.x", size=1, sha256=SHA)
    assert refused(a) == "artifact name '.x' must not start with a dot"


@pytest.mark.parametrize(
    "kw", [{"size": True}, {"size": 1.0}, {"sha256": "A" * 64}, {"sha256": "X" * 64}, {"sha256": 7}]
)
def test_size_must_be_an_int_and_sha_lowercase_hex(kw: dict[str, Any]) -> None:
    base: dict[str, Any] = dict(name="x", kind="rke2", path="artifacts/x", size=1, sha256=SHA)
    a = Artifact(**{**base, **kw})
    assert refused(a) == "artifact x: bad size or sha256"


# -- release, kind, createdBy, resolvedAt ------------------------------------------------


@pytest.mark.parametrize("field", ["requested", "tag", "cni"])
@pytest.mark.parametrize("value", ["", "v" * 65, 7, None])
def test_release_strings(field: str, value: Any) -> None:
    r = Release(**{**RELEASE.__dict__, field: value})
    assert refused(art(), release=r) == (
        f"rke2.{field} must be a non-empty string of at most 64 characters"
    )


def test_release_string_of_64_is_fine() -> None:
    r = Release(requested="v" * 64, tag="t" * 64, arch=("amd64",), cni="c" * 64)
    assert lock(art(), release=r).release == r


@pytest.mark.parametrize("arch", [(), ("x86",), ("amd64", "s390x")])
def test_release_arch(arch: tuple[str, ...]) -> None:
    r = Release(requested="v1.28.x", tag="v1.28.15+rke2r1", arch=arch)
    assert refused(art(), release=r) == "rke2.arch must list amd64 and/or arm64"


def test_release_both_arches_and_groups() -> None:
    r = Release(
        requested="v1.28.x",
        tag="v1.28.15+rke2r1",
        arch=("amd64", "arm64"),
        image_groups=("core", "canal"),
        allow_prerelease=True,
    )
    lk = lock(art(), release=r)
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
    assert refused(art(), release=r) == "rke2.imageGroups must be strings"
    r = Release(requested="v1.28.x", tag="t", arch=("amd64",), allow_prerelease=1)  # type: ignore[arg-type]
    assert refused(art(), release=r) == "rke2.allowPrerelease must be true or false"


def test_kind_created_by_and_resolved_at() -> None:
    assert refused(art(), kind="mk8s.other") == "kind must be mk8s.lock or mk8s.bundle"
    assert refused(art(), created_by=7) == "createdBy must be a string"
    assert refused() == "the lock pins no artifact"
    assert refused(art(), resolved_at="2026-11-29 10:00:00") == (
        "resolvedAt '2026-11-29 10:00:00' is not a UTC time"
    )
    assert refused(art(), resolved_at=None) == "resolvedAt None is not a UTC time"
    lk = lock(art(), kind="mk8s.bundle", created_by="mk8s 9")
    assert (lk.kind, lk.created_by) == ("mk8s.bundle", "mk8s 9")
    assert lk.as_lock().created_by is None and lk.as_lock().kind == "mk8s.lock"
    assert lk.as_manifest("1.2").created_by == "mk8s 1.2"
    assert lock(art(), created_by="mk8s 1").created_by == "mk8s 1"


def test_find_by_kind_and_arch() -> None:
    lk = lock(
        art(name="a", kind="images", arch="amd64"),
        art(name="b", kind="images", arch="arm64"),
        art(name="c", kind="rke2", arch="amd64"),
    )
    assert [a.name for a in lk.find(kind="images")] == ["a", "b"]
    assert [a.name for a in lk.find(kind=ArtifactKind.IMAGES, arch="arm64")] == ["b"]
    assert lk.find(kind="sbom") == []
    with pytest.raises(ValueError):
        lk.find(kind="nope")
    assert lk.total_size == 3


# -- from_bytes refusals, exactly ----------------------------------------------------------


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
