"""Fixtures of the bundle format's tests: one signing key per module, and a good bundle
it signed (as a path, and opened: its decompressed tar and members)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mk8s.bundle.format import keys
from tests.support import bundles


@pytest.fixture(scope="module")
def signer() -> keys.PrivateKey:
    return keys.generate_private_key()


@pytest.fixture(scope="module")
def trusted(signer: keys.PrivateKey) -> list[keys.TrustedKey]:
    return [keys.TrustedKey(Path("mk8s.pub"), signer.public_key())]


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory, signer: keys.PrivateKey) -> Path:
    written, _ = bundles.build(tmp_path_factory.mktemp("good"), signer)
    return written.path


@pytest.fixture(scope="module")
def good_tar(
    tmp_path_factory: pytest.TempPathFactory, signer: keys.PrivateKey
) -> bundles.OpenedBundle:
    written, lock = bundles.build(tmp_path_factory.mktemp("good"), signer)
    return bundles.open_bundle(written.path, lock)
