"""mk8s/images/auth.py: registry credentials, explicit or from the Docker / containers
auth files: pure parsing, no network; auth files within bounds."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mk8s.images.auth import find_credentials, read_auth_file
from mk8s.images.errors import CredentialsFileError
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
