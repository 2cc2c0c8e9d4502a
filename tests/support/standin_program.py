"""The stand-in RKE2 program (``bin/rke2``) as a Python module, for unit-level tests of
the rules in tests/support/standin/CONTRACT.md: every path it reads or writes moved
under a test's tmp_path, and helpers that catch its refusals."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from tests.support import standin

TAG = "v1.28.15+rke2r1"
OLDER = "v1.27.16+rke2r1"
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, "amd64")
OTHER_ARCH = "arm64" if ARCH == "amd64" else "amd64"
# Every module-level path of the program, relative to the test's tmp_path.
PATHS = {
    "CONFIG": "etc/rancher/rke2/config.yaml",
    "REGISTRIES": "etc/rancher/rke2/registries.yaml",
    "KUBECONFIG": "etc/rancher/rke2/rke2.yaml",
    "NODE_PASSWORD": "etc/rancher/node/password",
    "DATA_DIR": "rke2",
    "SERVER_DIR": "rke2/server",
    "BOOTSTRAP_FILE": "rke2/server/cred/mk8s-standin-bootstrap.json",
    "TOKEN_FILE": "rke2/server/token",
    "ETCD_LOG_DIR": "rke2/agent/logs",
    "SNAPSHOT_DIR": "rke2/server/db/snapshots",
    "TLS_DIR": "rke2/server/tls",
    "MANIFESTS_DIR": "rke2/server/manifests",
    "AGENT_STATE": "rke2/agent/mk8s-standin-agent.json",
    "AGENT_CA": "rke2/agent/server-ca.crt",
    "IMAGES_DIR": "rke2/agent/images",
    "IMAGE_HASH_CACHE": "rke2/agent/mk8s-standin-image-hashes.json",
    "IMPORTED_IMAGES": "rke2/agent/mk8s-standin-images.json",
    "NODE_VERSION": "rke2/mk8s-standin-version.json",
    "KUBECTL": "rke2/bin/kubectl",
}


def load(path: Path, data: bytes, name: str) -> ModuleType:
    path.write_bytes(data)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def program(tmp: Path, arch: str = ARCH, name: str = "rke2_standin_contract") -> ModuleType:
    """The stand-in ``bin/rke2`` of release TAG for ``arch``, imported as module ``name``."""
    return load(tmp / f"{name}.py", standin.rke2_program(arch, TAG), name)


def sandboxed(module: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """``module`` with every file it reads or writes under tmp_path (for this test)."""
    for name, rel in PATHS.items():
        assert isinstance(getattr(module, name), str), name
        monkeypatch.setattr(module, name, str(tmp_path / rel))
    return module


def fatal(rke2: ModuleType, fn: Callable[..., object], *args: object) -> str:
    """What the stand-in says when it refuses to start (its ``level=fatal`` line)."""
    with pytest.raises(rke2.Fatal) as e:
        fn(*args)
    return str(e.value)


def http_fail(rke2: ModuleType, fn: Callable[..., object], *args: object) -> tuple[int, str]:
    """The status code and message of an error answer of the stand-in's HTTP side."""
    with pytest.raises(rke2.HTTPFail) as e:
        fn(*args)
    return e.value.code, e.value.message
