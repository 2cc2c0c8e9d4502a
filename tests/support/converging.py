"""A small cluster (cp1, cp2 servers; agents w1..wN) and the facts of a node running a
release with exactly what a run wants on disk: the pure restart and convergence tests'
shared case (tests/unit/deploy/builders/test_restart.py, test_converged.py)."""

from __future__ import annotations

from pathlib import Path

from mk8s.bundle.format.manifest import Lock
from mk8s.deploy.builders import facts, restart
from mk8s.deploy.builders.context import Context
from mk8s.deploy.builders.nodeconfig import config_bytes, registries_bytes, sha256_hex
from mk8s.deploy.cluster import Cluster, load_cluster
from mk8s.deploy.command import Secret
from tests.support.clusters import release_manifest
from tests.support.registry import TestCA

OLD, NEW = "v1.28.15+rke2r1", "v1.29.10+rke2r1"
IMAGES = "rke2-images.linux-amd64.tar.zst"
MULTUS = "rke2-images-multus.linux-amd64.tar.zst"


def manifest(tag: str, *extra: tuple[str, str, str | None]) -> Lock:
    return release_manifest(tag, extra, salted=True)


def small_cluster(tmp_path: Path, rke2: str = "", images: str = "{}", agents: int = 2) -> Cluster:
    if not (tmp_path / "ca.pem").exists():
        (tmp_path / "ca.pem").write_bytes(TestCA.create("CA one").pem())
    (tmp_path / "pw").write_text("pw-one\n")
    workers = "".join(
        f"    - {{address: 10.0.0.{20 + i}, name: w{i}, role: agent}}\n"
        for i in range(1, agents + 1)
    )
    p = tmp_path / "c.yaml"
    p.write_text(f"""apiVersion: mk8s/v1alpha1
kind: Cluster
metadata: {{name: rs}}
spec:
{rke2}  images: {images}
  nodes:
    - {{address: 10.0.0.1, name: cp1, role: server}}
    - {{address: 10.0.0.2, name: cp2, role: server}}
{workers}  options: {{upgrade: {{maxUnavailable: 1}}}}
""")
    return load_cluster(p, check_files=True)


def context(c: Cluster, m: Lock | None = None, password: str | None = None) -> Context:
    return Context(
        c,
        m or manifest(OLD),
        "0123456789abcdef",
        Secret("tok"),
        registry_password=Secret(password) if password else None,
    )


def converged(ctx: Context, node_name: str, version: str = OLD) -> facts.NodeFacts:
    """A node running ``version`` with exactly what ``ctx`` wants on disk."""
    node = ctx.cluster.node(node_name)
    hashes = {facts.CONFIG_PATH: sha256_hex(config_bytes(ctx, node)[0])}
    regs = registries_bytes(ctx)
    if regs is not None:
        hashes[facts.REGISTRIES_PATH] = sha256_hex(regs[0])
    ca = restart.registry_ca(ctx)
    if ca is not None:
        hashes[facts.REGISTRY_CA_PATH] = sha256_hex(ca)
    placed = {}
    for art in restart.wanted_images(ctx, node, "amd64"):
        hashes[f"{facts.IMAGES_DIR}/{art.name}"] = placed[art.name] = art.sha256
    return facts.NodeFacts(
        arch="amd64",
        uname_m="x86_64",
        os="",
        hostname="",
        root=True,
        sudo=True,
        rke2_version=f"rke2 version {version} (x)",
        server_active=node.is_server,
        agent_active=not node.is_server,
        running_version=version,
        hashes=hashes,
        placed_images=placed,
    )


__all__ = ["IMAGES", "MULTUS", "NEW", "OLD", "context", "converged", "manifest", "small_cluster"]
