"""Restarts as values: which start-only change restarts which node, how the plan shows
it, what mk8s removes from agent/images, and what a node that runs another version
than its disk holds gets. Pure: facts in, commands out."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from mk8s import rke2gates as gates
from mk8s.deploy.builders import facts, plan, restart
from mk8s.deploy.builders import upgradeplan as upgrade
from mk8s.deploy.builders.install import install_step, remove_unneeded_images
from mk8s.deploy.engine.session import Session, SessionSettings
from mk8s.deploy.phases.agents import JoinAgents
from mk8s.deploy.phases.inputs import assumed
from tests.support.converging import (
    IMAGES,
    MULTUS,
    NEW,
    OLD,
    context,
    converged,
    manifest,
    small_cluster,
)
from tests.support.registry import TestCA


def _restarts(step: plan.Step) -> list[str]:
    return [c.display() for c in step.commands if "systemctl restart" in c.display()]


# -- start-only inputs -------------------------------------------------------------------
def test_a_converged_node_is_not_restarted(tmp_path: Path) -> None:
    ctx = context(small_cluster(tmp_path))
    for n in ctx.cluster.nodes:
        f = converged(ctx, n.name)
        assert plan.start_step(ctx, n, f).commands == ()
        assert install_step(ctx, n, f).commands == ()


def test_a_registries_change_restarts_every_running_node(tmp_path: Path) -> None:
    before = context(small_cluster(tmp_path))
    after = context(
        small_cluster(
            tmp_path, "  rke2:\n    registries: {mirrors: {r.internal: {endpoint: [x]}}}\n"
        )
    )
    for n in after.cluster.nodes:
        f = converged(before, n.name)
        install = [c.display() for c in install_step(after, n, f).commands]
        # remembered on the node before registries.yaml changes, then written
        assert install[0].endswith(f"mk8s-pending {facts.RESTART_PENDING} registries.yaml")
        assert "registries.yaml" in install[1]
        start = plan.start_step(after, n, f)
        block = "" if n.is_server else " --no-block"  # an agent's wait step bounds it
        assert _restarts(start) == [
            f"systemctl enable {plan.service(n)} && systemctl restart{block}"
            f" {plan.service(n)} && rm -f {facts.RESTART_PENDING}"
        ]
        assert "registries.yaml changed" in start.note
        assert start.describe("root")[0].startswith("# RKE2 reads these only at start")
        # a stopped service just starts: it reads everything then
        stopped = replace(f, server_active=False, agent_active=False)
        assert _restarts(plan.start_step(after, n, stopped)) == []
        assert not any(
            "mk8s-pending" in c.display() for c in install_step(after, n, stopped).commands
        )


def test_a_new_registry_password_or_ca_restarts(tmp_path: Path) -> None:
    images = (
        "{distribution: registry, registry: {url: 'https://reg.internal:5000', caFile: ca.pem,"
        " username: u, passwordFile: pw}}"
    )
    c = small_cluster(tmp_path, images=images)
    before = context(c, password="pw-one")
    cp1 = c.node("cp1")
    f = converged(before, "cp1")
    assert plan.start_step(before, cp1, f).commands == ()
    new_password = plan.start_step(context(c, password="pw-two"), cp1, f)
    assert _restarts(new_password) and "registries.yaml changed" in new_password.note
    (tmp_path / "ca.pem").write_bytes(TestCA.create("CA two").pem())
    new_ca = plan.start_step(before, cp1, f)
    assert _restarts(new_ca) and new_ca.note.endswith("the registry CA changed")
    shown = [x.display() for x in install_step(before, cp1, f).commands]
    assert shown[0].endswith("registry-ca") and facts.REGISTRY_CA_PATH in shown[1]


def test_a_restart_an_earlier_run_left_pending_is_done(tmp_path: Path) -> None:
    ctx = context(small_cluster(tmp_path))
    w1 = ctx.cluster.node("w1")
    f = replace(converged(ctx, "w1"), restart_pending=("registries.yaml",))
    step = plan.start_step(ctx, w1, f)
    assert _restarts(step) and "registries.yaml changed" in step.note


def test_config_change_is_remembered_before_it_is_written(tmp_path: Path) -> None:
    ctx = context(small_cluster(tmp_path))
    cp2 = ctx.cluster.node("cp2")
    f = replace(
        converged(ctx, "cp2"), hashes={**converged(ctx, "cp2").hashes, facts.CONFIG_PATH: "0"}
    )
    shown = [c.display() for c in plan.start_step(ctx, cp2, f).commands]
    assert shown[0].endswith("config.yaml") and "mk8s-pending" in shown[0]
    assert "config.yaml.mk8s-tmp" in shown[1] and "systemctl restart rke2-server" in shown[2]


# -- image archives ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "running,restarts",
    [
        ("v1.28.15+rke2r1", True),
        ("v1.29.12+rke2r1", True),
        ("v1.29.13+rke2r1", False),
        ("v1.30.8+rke2r1", True),
        ("v1.30.9+rke2r1", False),
        ("v1.31.4+rke2r1", True),
        ("v1.31.5+rke2r1", False),
        ("v1.32.0+rke2r1", False),
    ],
)
def test_new_image_archives_restart_only_releases_that_import_at_start_only(
    tmp_path: Path, running: str, restarts: bool
) -> None:
    c = small_cluster(tmp_path)
    m = manifest(running)
    with_multus = manifest(running, (MULTUS, "images", "amd64"))
    w1 = c.node("w1")
    f = converged(context(c, m), "w1", running)
    step = plan.start_step(context(c, with_multus), w1, f)
    assert bool(_restarts(step)) is restarts
    assert gates.imports_while_running(running) is not restarts
    if restarts:
        assert "image archives changed" in step.note


def test_a_replaced_image_archive_restarts_every_release(tmp_path: Path) -> None:
    # RKE2's watcher re-imports a replaced file only when its size changed.
    c = small_cluster(tmp_path)
    tag = "v1.31.5+rke2r1"
    f = converged(context(c, manifest(tag)), "w1", tag)
    f = replace(f, hashes={**f.hashes, f"{facts.IMAGES_DIR}/{IMAGES}": "1" * 64})
    assert _restarts(plan.start_step(context(c, manifest(tag)), c.node("w1"), f))


def test_an_unknown_running_version_restarts_for_new_archives(tmp_path: Path) -> None:
    # Neither the binary nor the running process says a version: only a restart is sure.
    c = small_cluster(tmp_path)
    with_multus = manifest(OLD, (MULTUS, "images", "amd64"))
    f = replace(converged(context(c), "w1"), rke2_version=None, running_version=None)
    assert restart.image_changes(context(c, with_multus), c.node("w1"), f) == [restart.IMAGES]


# -- what mk8s removes from agent/images ---------------------------------------------------
def test_only_what_mk8s_placed_and_no_longer_needs_is_removed(tmp_path: Path) -> None:
    c = small_cluster(tmp_path)
    ctx = context(c, manifest(NEW))
    w1 = c.node("w1")
    old_multus = "1" * 64
    f = replace(
        converged(context(c), "w1"),
        hashes={
            f"{facts.IMAGES_DIR}/{IMAGES}": "2" * 64,
            f"{facts.IMAGES_DIR}/{MULTUS}": old_multus,  # mk8s placed it, NEW lacks it
            f"{facts.IMAGES_DIR}/acme-tools.tar": "3" * 64,  # the operator's
            f"{facts.IMAGES_DIR}/rke2-images-cilium.linux-amd64.tar.zst": "4" * 64,  # changed
        },
        placed_images={
            IMAGES: "2" * 64,
            MULTUS: old_multus,
            "rke2-images-cilium.linux-amd64.tar.zst": "5" * 64,
        },
    )
    (rm,) = remove_unneeded_images(ctx, w1, f, "amd64")
    args = rm.display().split()[2:]
    assert args == [
        f"{facts.IMAGES_DIR}/{MULTUS}",
        f"{facts.PLACED_IMAGES}/rke2-images-cilium.linux-amd64.tar.zst",
        f"{facts.PLACED_IMAGES}/{MULTUS}",
    ]
    steps = upgrade.node_steps(ctx, w1, f, ready_timeout=10)
    assert rm in steps[1].commands
    # a node not being upgraded is cleaned while staging; one being upgraded in its turn
    assert rm in install_step(ctx, w1, f).commands
    assert rm not in install_step(ctx, w1, f, run_install=False).commands


# -- what runs, not what is on disk --------------------------------------------------------
def test_a_node_whose_disk_is_new_but_runs_old_is_upgraded_without_reinstalling(
    tmp_path: Path,
) -> None:
    c = small_cluster(tmp_path)
    ctx = context(c, manifest(NEW))
    f = {n.name: converged(ctx, n.name, NEW) for n in c.nodes}
    f["w2"] = replace(f["w2"], running_version=OLD)  # install.sh ran, the restart did not
    p = upgrade.plan_upgrade(c, ctx.manifest, f)
    assert p.nodes == ("w2",) and p.versions["w2"] == OLD
    assert upgrade.refusals(p) == []
    shown = [
        x.display()
        for s in upgrade.node_steps(ctx, c.node("w2"), f["w2"], ready_timeout=9)
        for x in s.commands
    ]
    assert not any("install.sh" in x for x in shown)
    assert any("systemctl restart --no-block rke2-agent" in x for x in shown)
    # unknown running version (no server answered): the disk decides, as before
    unknown = {**f, "w2": replace(f["w2"], running_version=None)}
    assert not upgrade.plan_upgrade(c, ctx.manifest, unknown).needed


def test_a_newer_binary_or_a_newer_running_version_is_a_downgrade(tmp_path: Path) -> None:
    c = small_cluster(tmp_path)
    f = {n.name: converged(context(c), n.name, OLD) for n in c.nodes}
    newer = "v1.28.16+rke2r1"
    for field in ("running_version", "rke2_version"):
        value = newer if field == "running_version" else f"rke2 version {newer} (x)"
        g = {**f, "cp2": replace(f["cp2"], **{field: value})}
        problems = upgrade.refusals(upgrade.plan_upgrade(c, manifest(OLD), g))
        assert any("never downgraded" in x and "cp2" in x for x in problems), (field, problems)


def test_facts_read_the_records_and_the_ca() -> None:
    priv = (
        f"sha256 {'c' * 64} {facts.REGISTRY_CA_PATH}\n"
        "restart_pending=images registries.yaml \n"
        f"mk8s_image {'d' * 64} {IMAGES}\n"
        "mk8s_image short x\n"
    )
    f = facts.parse("sudo=root\n", priv)
    assert f.hashes == {facts.REGISTRY_CA_PATH: "c" * 64}
    assert f.restart_pending == ("images", "registries.yaml")
    assert f.placed_images == {IMAGES: "d" * 64}
    assert f.running_tag is None and f.effective_tag is None
    g = replace(f, rke2_version=f"rke2 version {NEW} (x)", running_version=OLD)
    assert (g.rke2_tag, g.running_tag, g.effective_tag) == (NEW, OLD, OLD)
    text = facts.gather("/var/lib/mk8s/b").display()
    for path in (facts.REGISTRY_CA_PATH, facts.RESTART_PENDING, facts.PLACED_IMAGES):
        assert path in text


# -- agents in batches, and the dry run ----------------------------------------------------
def test_running_agents_restart_in_batches_of_max_unavailable(tmp_path: Path) -> None:
    before = context(small_cluster(tmp_path, agents=3))
    after = context(
        small_cluster(
            tmp_path,
            "  rke2:\n    registries: {mirrors: {r.internal: {endpoint: [x]}}}\n",
            agents=3,
        )
    )
    s = Session(SessionSettings(cluster=after.cluster, state_base=tmp_path, dry_run=True))
    s.known.ctx = after
    s.known.facts = {n.name: converged(before, n.name) for n in after.cluster.nodes}
    s.known.facts["w3"] = replace(s.known.facts["w3"], agent_active=False)  # stopped: just starts
    lines = JoinAgents().plan(s)
    assert lines[:3] == [
        "  restart running agents in batches of 1, each Ready before the next:",
        "    [w1]",
        "    [w2]",
    ]
    assert any("# RKE2 reads these only at start: registries.yaml changed" in x for x in lines)


def test_the_dry_run_assumes_what_the_journal_says_a_node_runs_with(tmp_path: Path) -> None:
    ctx = context(small_cluster(tmp_path))
    cp1 = ctx.cluster.node("cp1")
    f = converged(ctx, "cp1")
    entry = {"state": "ready", "version": OLD, "inputs": {"hashes": f.hashes}}
    g = replace(f, hashes={}, placed_images={}, running_version=None)
    g = replace(g, **assumed(entry))
    assert g.hashes == f.hashes and g.placed_images == f.placed_images
    assert plan.start_step(ctx, cp1, g).commands == ()
    assert install_step(ctx, cp1, g).commands == ()
    assert assumed({"state": "ready"}) == {}


def test_status_says_what_runs_and_what_is_only_installed(tmp_path: Path) -> None:
    from mk8s.deploy.engine.known import NodeStatus
    from mk8s.deploy.phases.status import note_running

    c = small_cluster(tmp_path)
    st = NodeStatus(c.node("w1"), version=NEW, service="rke2-agent active")
    note_running(st, OLD)
    assert st.version == OLD and st.error.startswith(f"{NEW} is installed but {OLD} still runs")
    stopped = NodeStatus(c.node("w1"), version=NEW, service="rke2-agent inactive")
    note_running(stopped, OLD)  # a stale kubeletVersion: nothing runs
    assert stopped.version == NEW and not stopped.error
    same = NodeStatus(c.node("w1"), version=NEW, service="rke2-agent active")
    note_running(same, NEW)
    assert same.version == NEW and not same.error
