"""mk8s/deploy/builders/membership.py: who bootstraps and who joins, as RKE2 has it. A first server
without a datastore rejoins a live member; only a new cluster bootstraps; the token's
full and short forms. The same rules are enforced by the stand-in on real test hosts
(tests/hosts/test_rke2_contract.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from mk8s.deploy.builders import facts, membership, plan
from mk8s.deploy.builders.nodeconfig import config_bytes, sha256_hex
from tests.support.clusters import (
    contract_cluster,
    debian_node,
    member_context,
    release_manifest,
)

TAG = "v1.28.15+rke2r1"


# -- a first server without a datastore rejoins; only a new cluster bootstraps ----------
def test_new_cluster_the_first_server_bootstraps(tmp_path: Path) -> None:
    c = contract_cluster(tmp_path)
    m = membership.membership(c, {n.name: debian_node() for n in c.nodes})
    assert m == membership.Membership(new_cluster=True, anchor="cp1")
    cfg = plan.node_config(member_context(c), c.node("cp1"))
    assert "server" not in cfg
    assert plan.node_config(member_context(c), c.node("cp2"))["server"] == "https://10.0.0.11:9345"


def test_a_reset_first_server_joins_a_live_member(tmp_path: Path) -> None:
    c = contract_cluster(tmp_path)
    live = debian_node(
        datastore=True, server_active=True, node_token="K10" + "a" * 64 + "::server:x"
    )
    found = {"cp1": debian_node(), "cp2": live, "w1": debian_node(agent_active=True)}
    m = membership.membership(c, found)
    assert m == membership.Membership(new_cluster=False, anchor="cp2", rejoin=True)
    assert membership.problems(c, found, m) == []
    cx = member_context(c, found=found)
    assert plan.node_config(cx, c.node("cp1"))["server"] == "https://10.0.0.12:9345"
    assert cx.anchor_node.name == "cp2"
    # The kubeconfig and the node list come from that live member.
    wait = plan.wait_step(c.node("cp1"), 10, paths=c.paths(c.node("cp1")))
    assert wait.actions


def test_a_rejoining_first_server_needs_a_running_member(tmp_path: Path) -> None:
    c = contract_cluster(tmp_path)
    found = {"cp1": debian_node(), "cp2": debian_node(datastore=True), "w1": debian_node()}
    m = membership.membership(c, found)
    problems = membership.problems(c, found, m)
    assert problems and "cp1: has no datastore while cp2" in problems[0]
    assert "systemctl start rke2-server" in problems[0]


def test_a_rejoined_first_server_is_not_restarted_for_its_server_line(tmp_path: Path) -> None:
    """Once it has a datastore, RKE2 ignores server:, so the config it rejoined with is
    as good as one without: a converged re-run restarts nothing."""
    c = contract_cluster(tmp_path)
    joining = {"cp1": debian_node(), "cp2": debian_node(datastore=True, server_active=True)}
    joining["w1"] = debian_node()
    joined_bytes = config_bytes(member_context(c, found=joining), c.node("cp1"))[0]
    both = debian_node(datastore=True, server_active=True, rke2_version=f"rke2 version {TAG}")
    # its images in place (else placing them would restart it: RKE2 imports at start)
    images = {
        f"{facts.IMAGES_DIR}/{a.name}": a.sha256 for a in release_manifest().find(kind="images")
    }
    now = {"cp1": replace(both, hashes={facts.CONFIG_PATH: sha256_hex(joined_bytes), **images})}
    now |= {"cp2": both, "w1": debian_node(agent_active=True)}
    cx = member_context(c, found=now)
    assert cx.first_joins == ""
    assert plan.start_step(cx, c.node("cp1"), now["cp1"]).commands == ()
    # An agent has no datastore: its server: line is what it is.
    agent = replace(now["w1"], hashes={facts.CONFIG_PATH: sha256_hex(joined_bytes)})
    assert plan.start_step(cx, c.node("w1"), agent).commands


# -- the token form ---------------------------------------------------------------------
def test_full_and_short_tokens() -> None:
    full = "K10" + "0123456789abcdef" * 4 + "::server:s3cret"
    assert membership.is_full_token(full) and membership.token_secret(full) == "s3cret"
    for short in ("s3cret", "K10abc::server:x", "K10" + "g" * 64 + "::server:x", full[:-9]):
        assert not membership.is_full_token(short), short
