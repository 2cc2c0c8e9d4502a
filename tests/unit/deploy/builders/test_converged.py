"""Work follows what changed, in the pure parts (docs/scale.md): when a node counts as
converged, what a server's facts carry, the disk a run needs, and the version mk8s
remembers so that a converged node's facts need not run the RKE2 binary."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path

from mk8s.deploy.builders import facts, plan, serverprobe
from mk8s.deploy.builders.context import Context, remote_path
from mk8s.deploy.builders.converged import converged
from mk8s.deploy.builders.kubectl import Listed, listed_nodes
from mk8s.deploy.command import Command
from mk8s.deploy.rke2config import DEFAULT_PATHS
from tests.support.converging import OLD, context, small_cluster
from tests.support.converging import converged as running

READY = Listed(True, OLD)
READY_TRUE = {"type": "Ready", "status": "True"}


def _settled(tmp_path: Path, name: str) -> tuple[Context, facts.NodeFacts]:
    """A context and the facts of ``name`` running OLD with everything in place."""
    ctx = context(small_cluster(tmp_path))
    f = running(ctx, name)
    staged = {remote_path(ctx, a): a.sha256 for a in ctx.manifest.artifacts}
    f = replace(f, hashes={**f.hashes, **staged}, readyz="ok" if name.startswith("cp") else None)
    return ctx, f


def test_a_node_ready_at_the_release_with_nothing_to_do_is_converged(tmp_path: Path) -> None:
    for name in ("cp1", "w1"):
        ctx, f = _settled(tmp_path, name)
        node = ctx.cluster.node(name)
        assert converged(ctx, node, f, READY), name


def test_anything_to_check_or_change_means_not_converged(tmp_path: Path) -> None:
    ctx, f = _settled(tmp_path, "cp1")
    cp1 = ctx.cluster.node("cp1")
    config = facts.CONFIG_PATH
    staged = next(p for p in f.hashes if p.endswith("/install.sh"))
    cases = {
        "not listed": (f, None),
        "listed NotReady": (f, Listed(False, OLD, "kubelet stopped posting")),
        "listed at another version": (f, Listed(True, "v1.27.16+rke2r1")),
        "its own /readyz fails": (replace(f, readyz=""), READY),
        "its service is not active": (replace(f, server_active=False), READY),
        "config.yaml differs": (replace(f, hashes={**f.hashes, config: "0" * 64}), READY),
        "a staged file is gone": (
            replace(f, hashes={k: v for k, v in f.hashes.items() if k != staged}),
            READY,
        ),
        "a restart is pending": (replace(f, restart_pending=("config",)), READY),
    }
    for why, (g, listed) in cases.items():
        assert not converged(ctx, cp1, g, listed), why


def test_a_servers_facts_carry_its_readyz_kubeconfig_hash_and_the_node_list() -> None:
    item = {
        "metadata": {"name": "cp1"},
        "status": {"nodeInfo": {"kubeletVersion": "v1"}, "conditions": [READY_TRUE]},
    }
    listing = json.dumps({"items": [item]})
    out = (
        "uname_m=x86_64\nos=x\nhostname=cp1\nuid=0\nsudo=root\n"
        + facts.PRIVILEGED_MARK
        + "\nserver_active=active\n"
        + f"sha256 {'b' * 64} {DEFAULT_PATHS.kubeconfig}\nreadyz=ok\n"
        + serverprobe.LISTING_MARK
        + "\n"
        + listing
        + "\n"
    )
    f = facts.parse_gathered(out)
    assert f.readyz == "ok" and f.hashes[DEFAULT_PATHS.kubeconfig] == "b" * 64
    assert f.listing is not None and listed_nodes(f.listing) == {"cp1": Listed(True, "v1")}
    assert f.server_active and "items" not in repr(f)  # the list is not repeated in logs
    # asked, no answer: no list at all (the node is then simply not converged)
    empty = facts.parse_gathered(out.split(serverprobe.LISTING_MARK)[0] + serverprobe.LISTING_MARK)
    assert empty.listing is None
    only_first = serverprobe.probe(DEFAULT_PATHS, list_nodes=True).display()
    assert "get nodes -o json" in only_first and "get --raw /readyz" in only_first
    assert "get nodes" not in serverprobe.probe(DEFAULT_PATHS, list_nodes=False).display()


def test_the_disk_a_run_needs_is_what_it_writes(tmp_path: Path) -> None:
    ctx, f = _settled(tmp_path, "w1")
    tight = replace(f, disk_free=1 << 20)  # 1 MiB free, everything already there
    nodes = {n.name: _settled(tmp_path, n.name)[1] for n in ctx.cluster.nodes}
    problems = plan.preflight(ctx.cluster, ctx.manifest, {**nodes, "w1": tight})
    assert not [p for p in problems if "free" in p], problems
    staged = next(p for p in f.hashes if p.endswith("/install.sh"))
    missing = replace(tight, hashes={k: v for k, v in f.hashes.items() if k != staged})
    problems = plan.preflight(ctx.cluster, ctx.manifest, {**nodes, "w1": missing})
    assert [p for p in problems if p.startswith("w1:") and "MiB free" in p], problems


def _sh(script: str, cwd: Path) -> str:
    r = subprocess.run(["sh", "-c", script], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def _binary(path: Path, version: str, calls: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".new")
    tmp.write_text(f"#!/bin/sh\necho x >> {calls}\necho 'rke2 version {version} (abc)'\n")
    tmp.chmod(0o755)
    os.replace(tmp, path)  # a new inode, as install.sh leaves it


def test_facts_read_the_version_mk8s_recorded_while_the_binary_is_untouched(
    tmp_path: Path,
) -> None:
    prefix, staging, calls = tmp_path / "usr-local", tmp_path / "mk8s", tmp_path / "calls"
    rke2 = prefix / "bin" / "rke2"
    _binary(rke2, OLD, calls)
    record = Command.script(
        "sums={sums}; prefixes={prefixes}; "
        + facts.VERSION_RECORD.replace("{", "{{").replace("}", "}}"),
        {"sums": facts.sums_dir(str(staging)), "prefixes": str(prefix)},
    )
    _sh(record.render(), tmp_path)  # what the install command does after install.sh
    assert calls.read_text().count("x") == 1
    gather = facts.privileged(str(staging / "b1d"), (str(prefix),)).render()
    assert facts.parse("sudo=root\n", _sh(gather, tmp_path)).rke2_tag == OLD
    assert calls.read_text().count("x") == 1  # the binary did not run again
    _binary(rke2, "v1.29.10+rke2r1", calls)  # replaced behind mk8s's back
    assert facts.parse("sudo=root\n", _sh(gather, tmp_path)).rke2_tag == "v1.29.10+rke2r1"
    assert calls.read_text().count("x") == 2


def test_the_node_list_is_read_once_with_each_nodes_etcd_role() -> None:
    def item(name: str, ready: str | None, etcd: bool) -> dict[str, object]:
        labels = {"node-role.kubernetes.io/etcd": "true"} if etcd else {}
        conds = [{"type": "Ready", "status": ready, "message": "m"}] if ready else []
        return {
            "metadata": {"name": name, "labels": labels},
            "status": {"nodeInfo": {"kubeletVersion": OLD}, "conditions": conds},
        }

    listing = json.dumps(
        {"items": [item("cp1", "True", True), item("w1", "False", False), item("new", None, False)]}
    )
    assert listed_nodes(listing) == {
        "cp1": Listed(True, OLD, "m", etcd=True),
        "w1": Listed(False, OLD, "m"),
        "new": Listed(False, ""),  # no Ready condition yet: not Ready, at no version
    }
    assert listed_nodes("not json") == {} and listed_nodes('{"items": 3}') == {}
