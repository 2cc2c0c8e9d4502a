"""spec.images as values: which nodes get image tarballs, their config.yaml and
registries.yaml in each mode, the preflight rules, and the agents' port check."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
import yaml

from mk8s.bundle.manifest import Artifact, Lock, Release
from mk8s.deploy.builders import facts, plan
from mk8s.deploy.builders.context import Context
from mk8s.deploy.builders.nodeconfig import REGISTRY_CA_PATH, registries_bytes
from mk8s.deploy.cluster import Cluster, load_cluster
from mk8s.deploy.command import Secret
from mk8s.deploy.phases.images import port_check
from mk8s.deploy.phases.status import image_source
from mk8s.errors import ClusterFileError
from tests.support.registry import TestCA

CA_PEM = TestCA.create().pem()


def _manifest(tag: str = "v1.28.15+rke2r1") -> Lock:
    def art(name: str, kind: str, arch: str | None = "amd64") -> Artifact:
        return Artifact(
            name=name,
            kind=kind,  # type: ignore[arg-type]
            path=f"artifacts/{name}",
            size=1000,
            sha256=hashlib.sha256(name.encode()).hexdigest(),
            arch=arch,
        )

    return Lock(
        release=Release(requested="v1.28.x", tag=tag, arch=("amd64",)),
        resolved_at="2026-01-01T00:00:00Z",
        artifacts=(
            art("sha256sum-amd64.txt", "checksums"),
            art("rke2.linux-amd64.tar.gz", "rke2"),
            art("rke2-images.linux-amd64.tar.zst", "images"),
            art("install.sh", "install-script", None),
        ),
    ).as_manifest("0.1.0")


def _cluster(tmp_path: Path, images: str, rke2: str = "") -> Cluster:
    (tmp_path / "ca.pem").write_bytes(CA_PEM)
    (tmp_path / "pw").write_text("s3cret-pw\n")
    p = tmp_path / "c.yaml"
    p.write_text(f"""apiVersion: mk8s/v1alpha1
kind: Cluster
metadata: {{name: img}}
spec:
{rke2}  images: {images}
  nodes:
    - {{address: 10.0.0.1, name: cp1, role: server}}
    - {{address: 10.0.0.2, name: w1, role: agent}}
""")
    return load_cluster(p, check_files=True)


FRESH = facts.NodeFacts(arch="amd64", uname_m="x86_64", os="", hostname="", root=True, sudo=True)
REGISTRY = "{distribution: registry, registry: {url: 'https://reg.internal:5000', caFile: ca.pem, username: pusher, passwordFile: pw}}"


def _ctx(c: Cluster, password: str | None = None, tag: str = "v1.28.15+rke2r1") -> Context:
    return Context(
        c,
        _manifest(tag),
        "0123456789abcdef",
        Secret("tok"),
        registry_password=Secret(password) if password else None,
    )


def _names(step: plan.Step) -> list[str]:
    return sorted(u.remote_path.rsplit("/", 1)[1] for u in step.uploads)


def test_all_mode_is_the_default(tmp_path: Path) -> None:
    c = _cluster(tmp_path, "{}")
    ctx = _ctx(c)
    for node in c.nodes:
        assert "rke2-images.linux-amd64.tar.zst" in _names(plan.upload_step(ctx, node, FRESH))
        assert "embedded-registry" not in plan.node_config(ctx, node)
    assert registries_bytes(ctx) is None
    assert image_source(c, c.node("w1")) == "tarballs"


def test_servers_mode(tmp_path: Path) -> None:
    c = _cluster(
        tmp_path,
        "{distribution: servers}",
        "  rke2:\n    registries: {mirrors: {quay.io: {endpoint: ['https://q.internal']}}}\n",
    )
    ctx = _ctx(c)
    cp1, w1 = c.node("cp1"), c.node("w1")
    assert "rke2-images.linux-amd64.tar.zst" in _names(plan.upload_step(ctx, cp1, FRESH))
    assert "rke2-images.linux-amd64.tar.zst" not in _names(plan.upload_step(ctx, w1, FRESH))
    assert not any(
        "image tarballs" in x.description for x in plan.install_step(ctx, w1, FRESH).commands
    )
    assert plan.node_config(ctx, cp1)["embedded-registry"] is True
    assert "embedded-registry" not in plan.node_config(ctx, w1)
    regs = yaml.safe_load(registries_bytes(ctx)[0])  # type: ignore[index]
    assert regs["mirrors"]["docker.io"] == {} and "quay.io" in regs["mirrors"]
    assert image_source(c, w1) == "peers" and image_source(c, cp1) == "tarballs"
    assert plan.preflight(c, ctx.manifest, {"cp1": FRESH, "w1": FRESH}) == []


@pytest.mark.parametrize(
    "tag,ok",
    [
        ("v1.28.5+rke2r1", False),
        ("v1.28.6+rke2r1", True),
        ("v1.27.9+rke2r2", False),
        ("v1.29.1+rke2r1", True),
        ("v1.25.16+rke2r1", False),
        ("v1.31.0+rke2r1", True),
    ],
)
def test_servers_mode_needs_the_embedded_mirror(tmp_path: Path, tag: str, ok: bool) -> None:
    c = _cluster(tmp_path, "{distribution: servers}")
    problems = plan.preflight(c, _manifest(tag), {"cp1": FRESH, "w1": FRESH})
    assert (problems == []) == ok, problems
    if not ok:
        assert "embedded registry" in problems[0] and tag in problems[0]


def test_registry_mode(tmp_path: Path) -> None:
    c = _cluster(tmp_path, REGISTRY)
    ctx = _ctx(c, "s3cret-pw")
    for node in c.nodes:
        assert "rke2-images.linux-amd64.tar.zst" not in _names(plan.upload_step(ctx, node, FRESH))
        # A server option: agents ignore it (rancher/rke2 pkg/cli/cmds/agent.go) and use
        # the registry their server hands out, so only servers get it.
        sdr = plan.node_config(ctx, node).get("system-default-registry")
        assert sdr == ("reg.internal:5000" if node.is_server else None)
        shown = [x.display() for x in plan.install_step(ctx, node, FRESH).commands]
        assert any(REGISTRY_CA_PATH in x for x in shown)
        assert not any("s3cret-pw" in x for x in shown)
    real, masked = registries_bytes(ctx)  # type: ignore[misc]
    regs = yaml.safe_load(real)
    assert regs["mirrors"]["docker.io"] == {"endpoint": ["https://reg.internal:5000"]}
    entry = regs["configs"]["reg.internal:5000"]
    assert entry["auth"] == {"username": "pusher", "password": "s3cret-pw"}
    assert entry["tls"] == {"ca_file": REGISTRY_CA_PATH}
    assert b"s3cret-pw" not in masked
    assert image_source(c, c.node("cp1")) == "registry reg.internal:5000"


def test_registry_mode_needs_a_registry_and_pairs_credentials(tmp_path: Path) -> None:
    with pytest.raises(ClusterFileError, match="needs spec.images.registry"):
        _cluster(tmp_path, "{distribution: registry}")
    with pytest.raises(ClusterFileError, match="username and passwordFile go together"):
        _cluster(tmp_path, "{distribution: registry, registry: {url: 'https://r', username: u}}")
    with pytest.raises(ClusterFileError, match="does not match"):
        _cluster(tmp_path, "{distribution: registry, registry: {url: 'http://r'}}")


def test_port_check_passes_addresses_as_data(tmp_path: Path) -> None:
    c = _cluster(tmp_path, "{distribution: servers}")
    cmd = port_check(c.servers)
    assert "10.0.0.1:9345" in cmd.display() and "10.0.0.1:5001" in cmd.display()
    # Run the script itself against loopback ports nothing listens on: both reported.
    script = cmd.pieces[4]
    assert isinstance(script, str)
    r = subprocess.run(
        ["sh", "-c", script, "x", "127.0.0.1:1", "127.0.0.1:2"], capture_output=True, text=True
    )
    assert r.stdout.split() == ["unreachable", "127.0.0.1:1", "unreachable", "127.0.0.1:2"]
