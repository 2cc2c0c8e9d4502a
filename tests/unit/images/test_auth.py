"""mk8s/images/auth.py: registry credentials, explicit or from the Docker / containers
auth files: pure parsing, no network; auth files within bounds."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from mk8s.errors import CredentialsFileError
from mk8s.images.auth import (
    Credentials,
    auth_file_candidates,
    find_credentials,
    read_auth_file,
    registry_key,
)
from tests.support import hostile


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b'{"auths": {}}' + b" " * (1 << 20), "is larger than 1048576 bytes"),
        (hostile.nested_json(100_000), "is nested deeper than 64 levels"),
        (b'{"auths": {"r": {"auth": "hunter2', "is not valid JSON"),
        (b'{"auths": "x"}', None),
    ],
)
def test_auth_files_are_bounded(tmp_path: Path, content: bytes, problem: str | None) -> None:
    p = tmp_path / "config.json"
    p.write_bytes(content)
    if problem is None:
        assert read_auth_file(p) == {}
        return
    with pytest.raises(CredentialsFileError) as e:
        read_auth_file(p)
    assert problem in str(e.value) and "hunter2" not in str(e.value)
    assert e.value.exit_code == 2


def test_auth_files_are_regular_files_when_found(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    env = {"REGISTRY_AUTH_FILE": str(tmp_path / "fifo"), "HOME": str(tmp_path)}
    with pytest.raises(CredentialsFileError, match="is a FIFO"):
        find_credentials("reg.lan", env)
    # a default place without a file gives no credentials, not an error
    assert find_credentials("reg.lan", {"HOME": str(tmp_path)}) is None
    good = tmp_path / "auth.json"
    good.write_text(json.dumps({"auths": {"reg.lan": {"username": "u", "password": "p"}}}))
    creds = find_credentials("reg.lan", {"REGISTRY_AUTH_FILE": str(good)})
    assert creds is not None and creds.username == "u"


# -- credentials from the auth files -----------------------------------------------------
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
