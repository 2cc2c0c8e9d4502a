"""Image references and registry credentials: pure parsing, no network."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from mk8s.images.auth import Credentials, auth_file_candidates, find_credentials, registry_key
from mk8s.images.errors import CredentialsFileError, ImageReferenceError
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


# -- credentials ------------------------------------------------------------------------------
def _write(path: Path, auths: dict[str, object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"auths": auths}))
    return path


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def test_registry_keys_normalise() -> None:
    assert registry_key("https://index.docker.io/v1/") == "docker.io"
    assert registry_key("https://reg.lan:5000/v2/") == "reg.lan:5000"
    assert registry_key("reg.lan:5000") == "reg.lan:5000"


def test_credentials_from_docker_config(tmp_path: Path) -> None:
    _write(
        tmp_path / "home/.docker/config.json",
        {
            "https://index.docker.io/v1/": {"auth": _b64("hubuser:hub:pass")},
            "reg.lan:5000": {"auth": _b64("u1:p1")},
            "https://other.lan/v2/": {"username": "u2", "password": "p2"},
        },
    )
    env = {"HOME": str(tmp_path / "home")}
    assert find_credentials("docker.io", env) == Credentials("hubuser", "hub:pass")
    assert find_credentials("reg.lan:5000", env) == Credentials("u1", "p1")
    assert find_credentials("other.lan", env) == Credentials("u2", "p2")
    assert find_credentials("nowhere.lan", env) is None


def test_registry_auth_file_wins_then_docker_config(tmp_path: Path) -> None:
    first = _write(tmp_path / "auth.json", {"reg.lan": {"auth": _b64("podman:pw1")}})
    _write(
        tmp_path / "dc/config.json",
        {"reg.lan": {"auth": _b64("docker:pw2")}, "b.lan": {"auth": _b64("b:pw3")}},
    )
    env = {
        "REGISTRY_AUTH_FILE": str(first),
        "DOCKER_CONFIG": str(tmp_path / "dc"),
        "HOME": "/nonexistent",
    }
    assert auth_file_candidates(env) == [first, tmp_path / "dc/config.json"]
    assert find_credentials("reg.lan", env) == Credentials("podman", "pw1")
    assert find_credentials("b.lan", env) == Credentials("b", "pw3")


def test_secrets_stay_out_of_repr_and_errors(tmp_path: Path) -> None:
    creds = Credentials("user", "s3cret-pw")
    assert "s3cret-pw" not in repr(creds)
    bad = _write(tmp_path / "c/config.json", {"reg.lan": {"auth": _b64("no-colon-s3cret")}})
    with pytest.raises(CredentialsFileError) as e:
        find_credentials("reg.lan", {"DOCKER_CONFIG": str(bad.parent)})
    assert "s3cret" not in str(e.value) and "reg.lan" in str(e.value)
    bad.write_text('{"auths": {"reg.lan": {"auth": "s3cret-not-json"')
    with pytest.raises(CredentialsFileError) as e:
        find_credentials("reg.lan", {"DOCKER_CONFIG": str(bad.parent)})
    assert "s3cret" not in str(e.value)
    assert e.value.__cause__ is None and e.value.__suppress_context__
