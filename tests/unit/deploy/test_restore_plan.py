"""Backup and restore as values (no hosts): the snapshot index and its checks, the
refusals, the restore's commands, its phase order and what a resumed restore redoes."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from mk8s.bundle.format.manifest import Artifact, Lock, Release
from mk8s.deploy.builders import facts
from mk8s.deploy.builders.context import Context
from mk8s.deploy.cluster import Cluster, load_cluster
from mk8s.deploy.command import Secret, as_user
from mk8s.deploy.engine.phase import Phase
from mk8s.deploy.engine.session import Session, SessionSettings
from mk8s.deploy.lifecycle import index, restore_steps, snapshot
from mk8s.deploy.lifecycle.restore import (
    ClusterReset,
    InstallNodes,
    RejoinServers,
    StageSnapshot,
    StartFirst,
    StartMembers,
    StopNodes,
    restore_phases,
)
from mk8s.deploy.lifecycle.restore_agents import RestartAgents
from mk8s.deploy.lifecycle.restore_checks import (
    Probe,
    RestoreRun,
    check_bundle_version,
    check_token,
)
from mk8s.deploy.phases.stage import Stage
from mk8s.errors import InputError, SnapshotRejected

OLD, NEW = "v1.28.15+rke2r1", "v1.29.10+rke2r1"
TOKEN = "4f2c" * 16


def _manifest(tag: str) -> Lock:
    def art(name: str, kind: str, arch: str | None = "amd64") -> Artifact:
        return Artifact(
            name=name,
            kind=kind,  # type: ignore[arg-type]
            path=f"artifacts/{name}",
            size=10,
            sha256=hashlib.sha256((tag + name).encode()).hexdigest(),
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


def _cluster(tmp_path: Path) -> Cluster:
    p = tmp_path / "c.yaml"
    p.write_text("""apiVersion: mk8s/v1alpha1
kind: Cluster
metadata: {name: demo}
spec:
  nodes:
    - {address: 10.0.0.1, name: cp1, role: server}
    - {address: 10.0.0.2, name: cp2, role: server}
    - {address: 10.0.0.3, name: cp3, role: server}
    - {address: 10.0.0.4, name: w1, role: agent}
    - {address: 10.0.0.5, name: w2, role: agent}
""")
    return load_cluster(p, check_files=False)


def _facts(version: str | None) -> facts.NodeFacts:
    return facts.NodeFacts(
        arch="amd64",
        uname_m="x86_64",
        os="",
        hostname="",
        root=True,
        sudo=True,
        rke2_version=f"rke2 version {version} (x)" if version else None,
        rke2_prefix="/usr/local" if version else None,
        server_active=bool(version),
        agent_active=bool(version),
    )


def _record(**kw: object) -> index.SnapshotRecord:
    base: dict = {
        "file": "nightly-cp1-1733370000",
        "sha256": "a" * 64,
        "size": 10,
        "rke2_version": OLD,
        "bundle_id": "0123456789abcdef",
        "token_id": index.token_id(TOKEN),
        "taken_at": "2026-01-01T00:00:00Z",
        "node": "cp1",
        "name": "nightly",
        "kind": "backup",
        "cluster_id": "6d1c0f3e-uid",
    }
    base.update(kw)
    return index.SnapshotRecord(**base)


def _session(tmp_path: Path, versions: dict[str, str | None], tag: str = OLD) -> Session:
    cluster = _cluster(tmp_path)
    s = Session(SessionSettings(cluster=cluster, state_base=tmp_path, dry_run=True))
    manifest = _manifest(tag)
    s.known.ctx = Context(cluster, manifest, "b" * 16, Secret(TOKEN), anchor="cp1")
    s.known.facts = {n.name: _facts(versions.get(n.name, tag)) for n in cluster.nodes}
    return s


def _run(tmp_path: Path, **progress: object) -> RestoreRun:
    snap = tmp_path / "nightly-cp1-1733370000"
    snap.write_bytes(b"x" * 10)
    run = RestoreRun(snap, index.CheckedSnapshot(snap, _record()))
    run.progress = {"sha256": "a" * 64, "reset": False, "attempted": [], "rejoined": [],
                    **progress}  # fmt: skip
    run.probes = {n: Probe(True, n.startswith("cp")) for n in ("cp1", "cp2", "cp3", "w1", "w2")}
    return run


def _shown(s: Session, phase: Phase, node: str) -> list[str]:
    n = s.cluster.node(node)
    return [line for step in phase.steps(s, n) for line in step.describe("root")]


# ---- the index ------------------------------------------------------------------------------
def test_token_id_names_the_token_without_showing_it() -> None:
    tid = index.token_id(TOKEN)
    assert len(tid) == 16 and int(tid, 16) >= 0
    assert TOKEN not in tid and tid not in TOKEN
    assert index.token_id(f"K10{'c' * 64}::server:{TOKEN}") == tid  # RKE2's full form
    assert index.token_id("other") != tid
    # not a plain hash prefix of the secret (salted)
    assert hashlib.sha256(TOKEN.encode()).hexdigest()[:16] != tid


def test_records_are_added_read_back_and_replaced_by_file_name(tmp_path: Path) -> None:
    home = tmp_path / "snapshots"
    index.add_record(home, "demo", _record())
    index.add_record(home, "demo", _record(file="other-cp1-1", sha256="b" * 64))
    index.add_record(home, "demo", _record(size=11))
    got = index.read_records(home)
    assert [(r.file, r.size) for r in got] == [("other-cp1-1", 10), ("nightly-cp1-1733370000", 11)]
    path = home / "index.json"
    assert path.stat().st_mode & 0o777 == 0o600 and home.stat().st_mode & 0o777 == 0o700
    data = json.loads(path.read_text())
    assert data["kind"] == "mk8s.snapshots" and data["cluster"] == "demo"
    assert data["snapshots"][0]["tokenId"] == index.token_id(TOKEN)


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d["snapshots"][0].update(sha256="nothex"),
        lambda d: d["snapshots"][0].update(rke2Version="1.28"),
        lambda d: d["snapshots"][0].update(file="../../etc/passwd"),
        lambda d: d["snapshots"][0].pop("tokenId"),
        lambda d: d.update(kind="mk8s.other"),
    ],
)
def test_a_damaged_index_is_refused_naming_the_file(tmp_path: Path, damage: object) -> None:
    index.add_record(tmp_path, "demo", _record())
    data = json.loads((tmp_path / "index.json").read_text())
    damage(data)  # type: ignore[operator]
    (tmp_path / "index.json").write_text(json.dumps(data))
    with pytest.raises(InputError) as e:
        index.read_records(tmp_path)
    assert e.value.exit_code == 2 and "index.json" in str(e.value)


def _snapshot_with_record(d: Path, data: bytes = b"etcd snapshot bytes") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    f = d / "nightly-cp1-1733370000"
    f.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    index.add_record(d, "demo", _record(sha256=sha, size=len(data)))
    return f


def test_a_snapshot_that_matches_its_record_is_taken(tmp_path: Path) -> None:
    f = _snapshot_with_record(tmp_path / "snaps")
    got = index.check_snapshot(f, tmp_path / "home")
    assert got.record.file == f.name and got.path == f
    # a renamed copy is found by its sha256
    renamed = tmp_path / "snaps" / "copy.db"
    renamed.write_bytes(f.read_bytes())
    assert index.check_snapshot(renamed, tmp_path / "home").record.file == f.name
    # the record may be in the cluster's home instead of beside the file
    elsewhere = tmp_path / "usb" / f.name
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(f.read_bytes())
    assert index.check_snapshot(elsewhere, tmp_path / "snaps").record.sha256 == got.record.sha256


def test_a_changed_byte_or_no_record_is_rejected_exit_3(tmp_path: Path) -> None:
    f = _snapshot_with_record(tmp_path / "snaps")
    data = bytearray(f.read_bytes())
    data[3] ^= 0x20
    f.write_bytes(bytes(data))
    with pytest.raises(SnapshotRejected) as e:
        index.check_snapshot(f, tmp_path / "home")
    assert e.value.exit_code == 3 and "does not match its record" in str(e.value)
    f.write_bytes(f.read_bytes() + b"x")  # same prefix, another size
    with pytest.raises(SnapshotRejected):
        index.check_snapshot(f, tmp_path / "home")
    stray = tmp_path / "stray"
    stray.write_bytes(b"anything")
    with pytest.raises(SnapshotRejected) as e:
        index.check_snapshot(stray, tmp_path / "snaps")
    assert "has no record" in str(e.value)
    with pytest.raises(InputError) as e2:  # a directory is no snapshot: exit 2
        index.check_snapshot(tmp_path / "snaps", tmp_path / "home")
    assert e2.value.exit_code == 2


def test_a_bundle_of_another_version_and_another_token_are_refused_exit_2() -> None:
    check_bundle_version(_record(), OLD)
    check_token(_record(), TOKEN, "t")
    with pytest.raises(InputError) as e:
        check_bundle_version(_record(), NEW)
    assert e.value.exit_code == 2 and OLD in str(e.value) and "0123456789abcdef" in str(e.value)
    with pytest.raises(InputError) as e:
        check_token(_record(), "another-token", "the token file")
    assert e.value.exit_code == 2 and "the token file" in str(e.value)


def test_backup_names_are_what_rke2_takes() -> None:
    assert snapshot.check_name("nightly.2026-01_01") == "nightly.2026-01_01"
    for bad in ("", "-x", "../x", "a b", "a/b", "x" * 101, "a;rm"):
        with pytest.raises(InputError):
            snapshot.check_name(bad)


def test_rke2_etcd_snapshot_ls_is_parsed() -> None:
    out = (
        "Name                          Location                                 Size Created\n"
        "nightly-cp1-1733370000 file:///var/lib/rancher/rke2/server/db/snapshots/n 4096"
        " 2024-12-05T03:40:00Z\n"
    )
    (row,) = snapshot.parse_ls(out)
    assert row.name == "nightly-cp1-1733370000" and row.size == "4096"
    assert snapshot.parse_ls("level=info msg=x\n") == []
    assert snapshot.newest([OLD, NEW, "", "junk"]) == NEW


# ---- the commands -------------------------------------------------------------------------
def test_servers_stop_with_killall_and_the_reset_keeps_the_token_off_the_command_line(
    tmp_path: Path,
) -> None:
    s = _session(tmp_path, {})
    run = _run(tmp_path)
    stop = StopNodes(run)
    assert [n.name for n in stop.nodes(s)] == ["cp1", "cp2", "cp3"]  # agents keep running
    shown = _shown(s, stop, "cp2")
    assert any("rke2-killall.sh" in line for line in shown)
    assert not any("systemctl stop" in line for line in shown)  # etcd outlives it (SC5)
    reset = " ".join(_shown(s, ClusterReset(run), "cp1"))
    assert "server --cluster-reset --cluster-reset-restore-path=" in reset
    assert "/var/lib/mk8s/" + "b" * 16 + "/mk8s-restore/nightly-cp1-1733370000" in reset
    assert TOKEN not in reset and "--token" not in reset


def test_the_restore_order_stages_everything_before_anything_stops(tmp_path: Path) -> None:
    _, phases = restore_phases(tmp_path / "snap", tmp_path / "bundle", [])
    kinds = [type(p) for p in phases]
    at = {k: i for i, k in enumerate(kinds)}
    assert at[Stage] < at[StageSnapshot] < at[StopNodes] < at[InstallNodes]
    assert at[InstallNodes] < at[ClusterReset] < at[StartMembers] < at[StartFirst]
    assert at[StartFirst] < at[RejoinServers]
    assert at[RejoinServers] < at[RestartAgents]
    # every check that refuses comes before anything that changes a node
    assert kinds.index(Stage) > 6


def test_a_rollback_stops_and_reinstalls_the_agents_of_the_newer_release(
    tmp_path: Path,
) -> None:
    s = _session(tmp_path, {"cp1": NEW, "cp2": NEW, "cp3": NEW, "w1": NEW, "w2": OLD})
    run = _run(tmp_path)
    assert [n.name for n in StopNodes(run).nodes(s)] == ["cp1", "cp2", "cp3", "w1"]
    install = " ".join(_shown(s, InstallNodes(), "w1"))
    assert "install.sh" in install and "INSTALL_RKE2_ARTIFACT_PATH" in install
    assert "install.sh" not in " ".join(_shown(s, InstallNodes(), "w2"))


def test_fresh_hosts_are_installed_and_their_old_nodes_deleted_first(tmp_path: Path) -> None:
    s = _session(tmp_path, {n: None for n in ("cp1", "cp2", "cp3", "w1", "w2")})
    run = _run(tmp_path)
    run.probes = {n: Probe(False, False) for n in run.probes}
    assert StopNodes(run).nodes(s) == []  # nothing runs there to stop
    assert "install.sh" in " ".join(_shown(s, InstallNodes(), "cp2"))
    steps = RejoinServers(run).steps(s, s.cluster.node("cp2"))
    assert [(st.node, st.name) for st in steps][:2] == [("cp1", "forget"), ("cp2", "rejoin")]
    assert "delete node cp2" in " ".join(steps[0].describe("root"))
    agent = RestartAgents(run).steps(s, s.cluster.node("w1"))
    assert agent[0].node == "cp1" and "delete node w1" in " ".join(agent[0].describe("root"))
    # the first server writes config.yaml (its token) before the reset
    reset = ClusterReset(run).steps(s, s.cluster.node("cp1"))[0]
    assert "config.yaml" in reset.commands[0].display() and "--cluster-reset" in (
        reset.commands[1].display()
    )


def test_a_resumed_restore_skips_what_is_done_and_keeps_a_half_joined_server(
    tmp_path: Path,
) -> None:
    s = _session(tmp_path, {})
    run = _run(tmp_path, reset=True, attempted=["cp2"], rejoined=[])
    assert not ClusterReset(run).should_run(s)  # never reset twice
    # the restored cluster's members (the first, cp2 half joined) run on: stopping one
    # could take etcd's quorum from the others
    assert [n.name for n in StopNodes(run).nodes(s)] == ["cp3"]
    members = StartMembers(run)
    assert members.should_run(s) and [n.name for n in members.nodes(s)] == ["cp1", "cp2"]
    assert not members.steps(s, s.cluster.node("cp1"))[0].commands  # it runs
    s.known.facts["cp2"] = replace(s.known.facts["cp2"], server_active=False)
    (start,) = members.steps(s, s.cluster.node("cp2"))[0].commands
    assert "systemctl start --no-block rke2-server" in start.display()
    steps = RejoinServers(run).steps(s, s.cluster.node("cp2"))
    # a second try keeps the datastore the cut-off rejoin began (its etcd member)
    assert [st.name for st in steps] == ["start", "wait"]
    cp3 = RejoinServers(run).steps(s, s.cluster.node("cp3"))
    assert [st.name for st in cp3] == ["rejoin", "start", "wait"]  # nothing to forget
    move = cp3[0].commands[0].display()
    assert "mv /var/lib/rancher/rke2/server/db /var/lib/rancher/rke2/server/db-mk8s-before" in move
    assert move.startswith("if [ -d /var/lib/rancher/rke2/server/db ]; then rm -rf")
    retry = RejoinServers(run).retry_steps(s, s.cluster.node("cp2"))
    assert "rm -rf /var/lib/rancher/rke2/server/db" in retry[0].commands[0].display()
    plan = "\n".join(RejoinServers(run).plan(s))
    assert "if cp2 does not come back as the member it became:" in plan
    assert "if cp3 does not" not in plan
    # a server recorded as rejoined is only waited for
    run.progress["rejoined"] = ["cp2"]
    (wait,) = RejoinServers(run).steps(s, s.cluster.node("cp2"))
    assert wait.name == "wait"
    # the first server, reset and running in the earlier run, is not started again
    s.settings = SessionSettings(cluster=s.cluster, state_base=tmp_path, dry_run=False)
    start = StartFirst(run).steps(s, s.cluster.node("cp1"))[0]
    assert not any("systemctl" in c.display() for c in start.commands)


def test_the_probe_and_the_move_quote_their_paths() -> None:
    from mk8s.deploy.rke2config import NodePaths

    paths = NodePaths(data_dir="/srv/rke2 data")
    probe = as_user(restore_steps.probe_command(paths), "ops").display()
    assert "'/srv/rke2 data/server/db'" in probe and probe.startswith("sudo -n sh -c")
    move = restore_steps.move_db_command(paths).display()
    assert "'/srv/rke2 data/server/db-mk8s-before-restore'" in move


# ---- the CLI, before any node --------------------------------------------------------------
def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mk8s", *args],
        cwd=tmp_path, env=dict(os.environ), capture_output=True, text=True, timeout=120,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_cli_refusals_before_any_node(tmp_path: Path) -> None:
    (tmp_path / "cluster.yaml").write_text(_cluster(tmp_path).path.read_text())
    (tmp_path / "pub.pem").write_text("not used")
    snaps = tmp_path / ".mk8s" / "demo" / "snapshots"
    f = _snapshot_with_record(snaps)
    base = ["restore", "-f", "cluster.yaml", "--snapshot", str(f), "--bundle", "b.tar.zst"]
    r = _cli(tmp_path, *base, "--key", "pub.pem")
    assert r.returncode == 2 and "--yes" in r.stderr, r.stderr  # no terminal, no --yes
    r = _cli(tmp_path, *base)
    assert r.returncode == 2 and "--key" in r.stderr
    f.write_bytes(b"changed")
    from mk8s.bundle.format import keys

    pub = keys.write_key_pair(keys.generate_private_key(), tmp_path / "k", None).public
    r = _cli(tmp_path, *base, "--key", str(pub), "--yes")
    assert r.returncode == 3 and "does not match its record" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    r = _cli(tmp_path, "backup", "-f", "cluster.yaml", "--name", "a b")
    assert r.returncode == 2 and "snapshot name" in r.stderr
