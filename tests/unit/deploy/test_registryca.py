"""mk8s/deploy/registryca.py: a registry's CA file, pinned: what it must hold, the exact
messages, and that only its certificates are uploaded."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.support.clusters import CA_PEM
from tests.support.registry import CA_FIX, TestCA, pem_block


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"x" * (1 << 20), None),
        (
            b"x" * ((1 << 20) + 1),
            "registry CA file {p} is larger than 1048576 bytes; this cannot be a registry CA file",
        ),
        (
            b"-----BEGIN RSA PRIVATE KEY-----\n",
            "{p} holds a private key, not only certificates;"
            " it would be readable by everyone on every node",
        ),
        (pem_block(b"PKCS7"), "{p} holds PEM blocks that are not certificates"),
        (b"hunter2", "{p} is not a PEM certificate"),
    ],
)
def test_registry_ca_messages(tmp_path: Path, content: bytes, problem: str | None) -> None:
    from mk8s.deploy import registryca
    from mk8s.errors import InputError

    p = tmp_path / "ca.pem"
    p.write_bytes(content)
    with pytest.raises(InputError) as e:
        registryca.read_ca(p)
    if problem is None:  # at the size cap: read, and refused only as no certificate
        assert str(e.value) == f"{p} is not a PEM certificate; {CA_FIX}"
    else:
        assert str(e.value) == problem.format(p=p) + f"; {CA_FIX}"


def test_only_the_certificates_of_a_ca_file_are_uploaded(tmp_path: Path) -> None:
    from mk8s.deploy import registryca

    second = TestCA.create("second").pem()
    p = tmp_path / "ca.pem"
    p.write_bytes(b"# a comment openssl writes\n" + CA_PEM + b"\n" + second)
    assert registryca.read_ca(p) == CA_PEM + second
    shown = registryca.describe(CA_PEM + second, p)
    sha = hashlib.sha256(CA_PEM + second).hexdigest()
    assert shown == f"<2 certificate(s) from ca.pem, {len(CA_PEM + second)} bytes, sha256 {sha}>"
