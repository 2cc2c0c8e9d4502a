"""mk8s/images/reference.py: image references, pure parsing, no network."""

from __future__ import annotations

import pytest

from mk8s.errors import ImageReferenceError
from mk8s.images.reference import parse_reference

D = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("nginx", "docker.io", "library/nginx", "latest", None),
        ("nginx:1.25", "docker.io", "library/nginx", "1.25", None),
        ("docker.io/library/nginx:1.25", "docker.io", "library/nginx", "1.25", None),
        (
            "index.docker.io/rancher/rke2-runtime:v1",
            "docker.io",
            "rancher/rke2-runtime",
            "v1",
            None,
        ),
        (
            "rancher/hardened-calico:v3.28.1-build20240806",
            "docker.io",
            "rancher/hardened-calico",
            "v3.28.1-build20240806",
            None,
        ),
        (f"ghcr.io/o/r@{D}", "ghcr.io", "o/r", None, D),
        (f"host:5000/r:tag@{D}", "host:5000", "r", "tag", D),
        ("localhost/a/b", "localhost", "a/b", "latest", None),
        ("127.0.0.1:5000/x/y_z/w__v:1", "127.0.0.1:5000", "x/y_z/w__v", "1", None),
        ("[::1]:5000/x:1", "[::1]:5000", "x", "1", None),
        ("Registry.Example.com/team/app:V1.0", "Registry.Example.com", "team/app", "V1.0", None),
    ],
)
def test_good_references(
    text: str, registry: str, repository: str, tag: str | None, digest: str | None
) -> None:
    ref = parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (
        registry,
        repository,
        tag,
        digest,
    )
    assert parse_reference(str(ref)) == ref  # printing and parsing round-trip


def test_normalised_printing_and_ref() -> None:
    assert str(parse_reference("nginx")) == "docker.io/library/nginx:latest"
    pinned = parse_reference(f"nginx:1.25@{D}")
    assert pinned.ref == D  # the digest wins when pulling
    assert parse_reference("nginx:1.25").ref == "1.25"
    assert parse_reference("nginx").api_host == "registry-1.docker.io"
    assert parse_reference("nginx:1").with_digest(D).digest == D


def test_retarget_keeps_the_path_tag_and_digest() -> None:
    ref = parse_reference(f"docker.io/rancher/foo:v1@{D}")
    assert str(ref.retarget("reg.lan:5000")) == f"reg.lan:5000/rancher/foo:v1@{D}"
    assert str(ref.retarget("reg.lan", "mirror")) == f"reg.lan/mirror/rancher/foo:v1@{D}"
    with pytest.raises(ImageReferenceError):
        ref.retarget("https://reg.lan")
    with pytest.raises(ImageReferenceError):
        ref.retarget("reg.lan", "UPPER")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "empty"),
        ("nginx latest", "whitespace"),
        (" nginx", "whitespace"),
        ("nginx\0", "control"),
        ("nginx\n", "whitespace"),
        ("ngïnx", "non-ASCII"),
        ("Nginx", "lowercase"),
        ("docker.io/Library/nginx", "lowercase"),
        ("nginx@sha256:abc", "not a sha256 digest"),
        (f"nginx@sha512:{'a' * 128}", "not a sha256 digest"),
        (f"nginx@sha256:{'A' * 64}", "not a sha256 digest"),
        ("nginx:", "not a valid tag"),
        ("nginx:-x", "not a valid tag"),
        ("nginx:" + "t" * 129, "not a valid tag"),
        ("host:5000/", "not a valid repository"),
        ("a//b", "not a valid repository"),
        ("a/b/", "not a valid repository"),
        ("a--/b", "not a valid repository"),
        ("bad_host.example:99999999/x", "registry"),
        ("-bad.example/x", "registry"),
        ("x/" + "a" * 300, "longer than"),
        (f"nginx@{D}@{D}", "not a sha256 digest"),
    ],
)
def test_hostile_references(text: str, says: str) -> None:
    with pytest.raises(ImageReferenceError) as e:
        parse_reference(text)
    assert says in str(e.value)
    assert e.value.exit_code == 2
