"""The single-file executable (scripts/build-exe.sh), run with no Python packages at all.

It runs under ``env -i PATH=/usr/bin:/bin`` from an empty directory, so neither the
venv nor the source tree can help it. Set MK8S_SKIP_EXE=1 to skip it on purpose;
it is never skipped silently.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from mk8s.bundle.format import keys
from tests.support import bundles
from tests.support.paths import ROOT
from tests.support.upstream import ExampleUpstream

EXE = ROOT / "dist" / "mk8s-linux-amd64"

pytestmark = pytest.mark.skipif(
    os.environ.get("MK8S_SKIP_EXE") == "1", reason="MK8S_SKIP_EXE=1 was set"
)


@pytest.fixture(scope="module")
def exe() -> Path:
    r = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build-exe.sh")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "sha256 " in r.stdout and "mk8s 0.1.0" in r.stdout
    return EXE


@pytest.fixture
def clean(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "PYTHONNOUSERSITE": "1",
    }
    yield tmp_path, env


def run(exe: Path, cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_runs_without_python_packages(exe: Path, clean: tuple[Path, dict[str, str]]) -> None:
    d, env = clean
    r = run(exe, d, env, "--version")
    assert r.returncode == 0 and r.stdout.strip() == "mk8s 0.1.0"
    r = run(exe, d, env | {"MK8S_KEY_PASSPHRASE": "pw"}, "key", "generate")
    assert r.returncode == 0, r.stderr
    assert (d / "mk8s.key").read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY")
    key = keys.load_private_key(d / "mk8s.key", lambda: b"pw")
    written, _ = bundles.build(d / "b", key)
    r = run(exe, d, env, "bundle", "verify", str(written.path), "--key", "mk8s.pub")
    assert r.returncode == 0 and r.stdout.startswith("verified: RKE2 v1.28.15+rke2r1"), r.stderr
    r = run(exe, d, env, "bundle", "inspect", str(written.path), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["verified"] is False
    # tampering is still rejected with exit 3
    bad = d / "bad.tar.zst"
    bad.write_bytes(written.path.read_bytes()[:-50])
    assert run(exe, d, env, "bundle", "verify", str(bad), "--key", "mk8s.pub").returncode == 3
    (d / "cluster.yaml").write_text("""apiVersion: mk8s/v1alpha1
kind: Cluster
metadata: {name: example}
spec:
  nodes:
    - {address: 10.77.0.11, name: cp1, role: server}
    - {address: 10.77.0.12, name: cp2, role: server}
    - {address: 10.77.0.13, name: cp3, role: server}
    - {address: 10.77.0.21, name: w1, role: agent}
    - {address: 10.77.0.22, name: w2, role: agent}
""")
    r = run(
        exe,
        d,
        env,
        "deploy",
        "--dry-run",
        "-f",
        "cluster.yaml",
        "--bundle",
        str(written.path),
        "--key",
        "mk8s.pub",
    )
    assert r.returncode == 0, r.stderr
    assert "INSTALL_RKE2_ARTIFACT_PATH" in r.stdout and "[w2 10.77.0.22 agent]" in r.stdout
    r = run(
        exe,
        d,
        env,
        "deploy",
        "-f",
        "missing.yaml",
        "--bundle",
        str(written.path),
        "--key",
        "mk8s.pub",
    )
    assert r.returncode == 2 and "no such file" in r.stderr


def test_create_include_self(exe: Path, clean: tuple[Path, dict[str, str]]) -> None:
    d, env = clean
    keys.write_key_pair(keys.generate_private_key(), d / "mk8s", None)
    with ExampleUpstream() as up:
        r = run(
            exe,
            d,
            env | up.env,
            "bundle",
            "create",
            "--rke2",
            "v1.28.x",
            "--key",
            "mk8s.key",
            "--include-self",
        )
    assert r.returncode == 0, r.stderr
    bundle = next(d.glob("mk8s-rke2-*.tar.zst"))
    r = run(exe, d, env, "bundle", "inspect", str(bundle), "--json")
    arts = json.loads(r.stdout)["manifest"]["artifacts"]
    carried = [a for a in arts if a["kind"] == "mk8s"]
    assert [a["path"] for a in carried] == ["artifacts/mk8s-linux-amd64"]
    import hashlib

    assert carried[0]["sha256"] == hashlib.sha256(exe.read_bytes()).hexdigest()
    r = run(exe, d, env, "bundle", "extract", str(bundle), "--key", "mk8s.pub", "-d", "out")
    assert r.returncode == 0, r.stderr
    inner = d / "out" / "artifacts" / "mk8s-linux-amd64"
    assert os.access(inner, os.X_OK)
    assert run(inner, d, env, "--version").stdout.strip() == "mk8s 0.1.0"
