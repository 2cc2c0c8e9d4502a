"""Workload builders: Helm chart archives and the artifacts and deploy context that carry them."""

from __future__ import annotations

import hashlib
import io
import random
import tarfile
from pathlib import Path

from mk8s.bundle import workload_sources as workloads
from mk8s.bundle.format.manifest import Artifact, ArtifactKind, Lock, Release, artifact_path
from mk8s.deploy.builders.context import Context
from mk8s.deploy.cluster import load_cluster
from mk8s.deploy.command import Secret


def make_chart(
    path: Path, chart_yaml: str | None = "apiVersion: v2\nname: hello\nversion: 0.1.0\n"
) -> Path:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        files = {"hello/values.yaml": b"replicas: 1\n"}
        if chart_yaml is not None:
            files["hello/Chart.yaml"] = chart_yaml.encode()
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(raw.getvalue())
    return path


def workloads_context(tmp_path: Path, arts: tuple[Artifact, ...]) -> Context:
    p = tmp_path / "c.yaml"
    p.write_text("""apiVersion: mk8s/v1alpha1
kind: Cluster
metadata: {name: w}
spec:
  nodes:
    - {address: 10.0.0.1, name: cp1, role: server}
""")
    base = Artifact(
        name="install.sh",
        kind=ArtifactKind.INSTALL_SCRIPT,
        path="artifacts/install.sh",
        size=1,
        sha256="0" * 64,
    )
    lock = Lock(
        release=Release(requested="v1.28.x", tag="v1.28.15+rke2r1", arch=("amd64",)),
        resolved_at="2026-01-01T00:00:00Z",
        artifacts=(base, *arts),
    ).as_manifest("0.1.0")
    return Context(load_cluster(p, check_files=False), lock, "0123456789abcdef", Secret("t"))


def workload_art(path: Path, kind: ArtifactKind) -> Artifact:
    data = path.read_bytes()
    return Artifact(
        name=path.name,
        kind=kind,
        path=artifact_path(path.name, kind),
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        url=path.as_uri(),
        chart=workloads.check_chart(path) if kind == ArtifactKind.CHART else None,
    )


def chart_tgz(path: Path, name: str, version: str, payload: int = 0) -> Path:
    """A chart archive ``name/Chart.yaml`` (+ ``payload`` incompressible bytes)."""
    raw = io.BytesIO()
    files = {f"{name}/Chart.yaml": f"apiVersion: v2\nname: {name}\nversion: {version}\n".encode()}
    if payload:
        files[f"{name}/files/blob"] = random.Random(name).randbytes(payload)
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for member, data in files.items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(raw.getvalue())
    return path


def chart_art(path: Path) -> Artifact:
    data = path.read_bytes()
    return Artifact(
        name=path.name,
        kind=ArtifactKind.CHART,
        path=artifact_path(path.name, ArtifactKind.CHART),
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        url=path.as_uri(),
        chart=workloads.check_chart(path),
    )


def tgz(members: dict[str, bytes]) -> io.BytesIO:
    """A gzip tar of ``members`` (name -> bytes), in memory."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.GNU_FORMAT) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf
