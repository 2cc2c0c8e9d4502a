"""mk8s/deploy/builders/nodeconfig.py: each node's config.yaml and registries.yaml. spec.images as
values (which nodes get image tarballs, their config in each mode, the preflight rules),
config values (tls-san, secrets masked in what is shown), and RKE2's rules about the
bundle's CNI and system-default-registry."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mk8s.deploy.builders import facts, plan
from mk8s.deploy.builders.context import Context
from mk8s.deploy.builders.nodeconfig import REGISTRY_CA_PATH, registries_bytes
from mk8s.deploy.builders.requirements import input_problems
from mk8s.deploy.cluster import Cluster, load_cluster
from mk8s.deploy.command import Secret
from mk8s.deploy.phases.status import image_source
from mk8s.errors import ClusterFileError
from tests.support import bundles
from tests.support.clusters import FRESH_BARE as FRESH
from tests.support.clusters import (
    REGISTRY,
    cluster_text,
    contract_cluster,
    debian_node,
    images_cluster,
    images_manifest,
    member_context,
    release_manifest,
    write_cluster,
)


def _ctx(c: Cluster, password: str | None = None, tag: str = "v1.28.15+rke2r1") -> Context:
    return Context(
        c,
        images_manifest(tag),
        "0123456789abcdef",
        Secret("tok"),
        registry_password=Secret(password) if password else None,
    )


def _names(step: plan.Step) -> list[str]:
    return sorted(u.remote_path.rsplit("/", 1)[1] for u in step.uploads)


def test_all_mode_is_the_default(tmp_path: Path) -> None:
    c = images_cluster(tmp_path, "{}")
    ctx = _ctx(c)
    for node in c.nodes:
        assert "rke2-images.linux-amd64.tar.zst" in _names(plan.upload_step(ctx, node, FRESH))
        assert "embedded-registry" not in plan.node_config(ctx, node)
    assert registries_bytes(ctx) is None
    assert image_source(c, c.node("w1")) == "tarballs"


def test_servers_mode(tmp_path: Path) -> None:
    c = images_cluster(
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
    c = images_cluster(tmp_path, "{distribution: servers}")
    problems = plan.preflight(c, images_manifest(tag), {"cp1": FRESH, "w1": FRESH})
    assert (problems == []) == ok, problems
    if not ok:
        assert "embedded registry" in problems[0] and tag in problems[0]


def test_registry_mode(tmp_path: Path) -> None:
    c = images_cluster(tmp_path, REGISTRY)
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
        images_cluster(tmp_path, "{distribution: registry}")
    with pytest.raises(ClusterFileError, match="username and passwordFile go together"):
        images_cluster(
            tmp_path, "{distribution: registry, registry: {url: 'https://r', username: u}}"
        )
    with pytest.raises(ClusterFileError, match="does not match"):
        images_cluster(tmp_path, "{distribution: registry, registry: {url: 'http://r'}}")


# -- config.yaml values: tls-san, secrets masked -----------------------------------------
def _config_ctx(tmp_path: Path, rke2: str) -> tuple[plan.Context, Path]:
    c = load_cluster(write_cluster(tmp_path, cluster_text(rke2=rke2)), check_files=False)
    files = bundles.default_files(tmp_path / "f")
    manifest = bundles.lock_for(files, bundles.KINDS).as_manifest()
    return plan.Context(c, manifest, "0123456789abcdef", Secret("tok-123")), tmp_path


def test_a_string_san_is_one_san(tmp_path: Path) -> None:
    ctx, _ = _config_ctx(
        tmp_path, "  rke2:\n    tlsSan: k8s.example\n    config: {tls-san: lb.example}\n"
    )
    assert ctx.cluster.rke2.tls_san == ("k8s.example",)
    config = plan.node_config(ctx, ctx.cluster.bootstrap)
    assert config["tls-san"] == ["lb.example", "k8s.example"]


def test_secret_looking_config_values_are_masked(tmp_path: Path) -> None:
    ctx, _ = _config_ctx(
        tmp_path,
        "  rke2:\n"
        "    config: {etcd-s3-secret-key: s3secret, etcd-s3-access-key: s3access,"
        " db-password: dbpw, agent-token-x: 1, nested: {my-token: deep}}\n"
        "    registries:\n"
        "      configs:\n"
        "        reg.example: {auth: {username: u, password: regpw, auth: dXA=}}\n",
    )
    real, masked = plan.config_bytes(ctx, ctx.cluster.bootstrap)
    for secret in (b"s3secret", b"s3access", b"dbpw", b"deep", b"tok-123"):
        assert secret in real and secret not in masked
    assert b"***" in masked
    regs = plan.registries_bytes(ctx)
    assert regs is not None
    assert b"regpw" in regs[0] and b"regpw" not in regs[1] and b"dXA=" not in regs[1]
    step = plan.install_step(ctx, ctx.cluster.bootstrap, _fresh())
    shown = "\n".join(c.display() for c in step.commands)
    assert "regpw" not in shown
    write = [c for c in step.commands if "registries" in c.description]
    assert write and isinstance(write[0].stdin, Secret)


def _fresh() -> facts.NodeFacts:
    return facts.NodeFacts(arch="amd64", uname_m="x86_64", os="", hostname="", root=True, sudo=True)


@pytest.mark.parametrize("san", ["5", "[a.example, 7]", "{x: 1}"])
def test_odd_tls_san_values_in_config_are_strings(tmp_path: Path, san: str) -> None:
    ctx, _ = _config_ctx(tmp_path, f"  rke2:\n    config: {{tls-san: {san}}}\n")
    sans = plan.node_config(ctx, ctx.cluster.bootstrap)["tls-san"]
    assert all(isinstance(s, str) for s in sans)


# -- RKE2's rules in config.yaml: the bundle's CNI, system-default-registry on servers ---
# -- the bundle's CNI is written to the servers ---------------------------------------
def test_a_cilium_bundle_writes_cni_to_every_server(tmp_path: Path) -> None:
    c = contract_cluster(tmp_path)
    cx = member_context(c, release_manifest(cni="cilium"))
    for n in c.servers:
        assert plan.node_config(cx, n)["cni"] == "cilium"
    assert "cni" not in plan.node_config(cx, c.node("w1"))
    assert "cni" not in plan.node_config(member_context(c), c.node("cp1"))  # canal: RKE2's default
    assert (
        input_problems(c, release_manifest(cni="cilium"), {n.name: debian_node() for n in c.nodes})
        == []
    )


# -- system-default-registry: servers only ---------------------------------------------
def test_system_default_registry_reaches_servers_only(tmp_path: Path) -> None:
    c = contract_cluster(tmp_path, rke2="    config: {system-default-registry: reg.lan:5000}\n")
    assert (
        plan.node_config(member_context(c), c.node("cp1"))["system-default-registry"]
        == "reg.lan:5000"
    )
    assert "system-default-registry" not in plan.node_config(member_context(c), c.node("w1"))
