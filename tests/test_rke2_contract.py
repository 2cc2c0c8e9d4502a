"""RKE2's contract as mk8s plans it (issue #22, part A), pure: no SSH, no hosts.

Membership (a first server without a datastore rejoins), node names, the bundle's CNI,
the token form, system-default-registry on servers only, options that move paths, and
what SELinux and the CIS profile require of hosts. The same rules are enforced by the
stand-in on real test hosts (tests/test_rke2_contract_hosts.py).
"""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from mk8s.bundle.manifest import Artifact, Lock, Release
from mk8s.deploy.builders import facts, kubectl, membership, plan
from mk8s.deploy.builders import upgradeplan as upgrade
from mk8s.deploy.builders.nodeconfig import config_bytes, sha256_hex
from mk8s.deploy.builders.requirements import host_problems, input_problems
from mk8s.deploy.cluster import Cluster, load_cluster
from mk8s.deploy.command import Secret
from mk8s.errors import ClusterFileError

TAG = "v1.28.15+rke2r1"
SUM = {
    "vm.panic_on_oom": "0",
    "vm.overcommit_memory": "1",
    "kernel.panic": "10",
    "kernel.panic_on_oops": "1",
}


def _art(name: str, kind: str, arch: str | None = "amd64") -> Artifact:
    digest = hashlib.sha256(name.encode()).hexdigest()
    return Artifact(
        name=name, kind=kind, path=f"artifacts/{name}", size=10, sha256=digest, arch=arch
    )


def manifest(cni: str = "canal", groups: tuple[str, ...] = ()) -> Lock:
    images = (
        [_art("rke2-images.linux-amd64.tar.zst", "images")]
        if cni == "canal"
        else [
            _art("rke2-images-core.linux-amd64.tar.zst", "images"),
            _art(f"rke2-images-{cni}.linux-amd64.tar.zst", "images"),
        ]
    )
    return Lock(
        release=Release(
            requested="v1.28.x", tag=TAG, arch=("amd64",), cni=cni, image_groups=groups
        ),
        resolved_at="2026-01-01T00:00:00Z",
        artifacts=(
            _art("sha256sum-amd64.txt", "checksums"),
            _art("rke2.linux-amd64.tar.gz", "rke2"),
            *images,
            _art("install.sh", "install-script", None),
        ),
    ).as_manifest("0.1.0")


def cluster(tmp_path: Path, rke2: str = "", nodes: str = "", extra: str = "") -> Cluster:
    nodes = nodes or (
        "    - {address: 10.0.0.11, name: cp1, role: server}\n"
        "    - {address: 10.0.0.12, name: cp2, role: server}\n"
        "    - {address: 10.0.0.21, name: w1, role: agent}\n"
    )
    p = tmp_path / "cluster.yaml"
    p.write_text(
        "apiVersion: mk8s/v1alpha1\nkind: Cluster\nmetadata: {name: prod}\nspec:\n"
        f"  rke2:\n    tlsSan: [k8s.internal]\n{rke2}{extra}  nodes:\n{nodes}"
    )
    return load_cluster(p, check_files=False)


def node_facts(**kw: object) -> facts.NodeFacts:
    base: dict[str, object] = {
        "arch": "amd64",
        "uname_m": "x86_64",
        "os": "Debian",
        "hostname": "h",
        "root": True,
        "sudo": True,
        "disk_free": 100 << 30,
        "sysctls": dict(SUM),
    }
    return facts.NodeFacts(**{**base, **kw})  # type: ignore[arg-type]


def ctx(
    c: Cluster, m: Lock | None = None, found: dict[str, facts.NodeFacts] | None = None
) -> plan.Context:
    """The deploy context as the Token phase builds it from the facts."""
    mem = membership.membership(c, found or {n.name: node_facts() for n in c.nodes})
    anchor = c.node(mem.anchor)
    return plan.Context(
        c,
        m or manifest(),
        "b1d",
        Secret("s3cret-token"),
        anchor=mem.anchor,
        first_joins=f"https://{anchor.address}:9345" if mem.rejoin else "",
    )


# -- 1. a first server without a datastore rejoins; only a new cluster bootstraps ----------
def test_new_cluster_the_first_server_bootstraps(tmp_path: Path) -> None:
    c = cluster(tmp_path)
    m = membership.membership(c, {n.name: node_facts() for n in c.nodes})
    assert m == membership.Membership(new_cluster=True, anchor="cp1")
    cfg = plan.node_config(ctx(c), c.node("cp1"))
    assert "server" not in cfg
    assert plan.node_config(ctx(c), c.node("cp2"))["server"] == "https://10.0.0.11:9345"


def test_a_reset_first_server_joins_a_live_member(tmp_path: Path) -> None:
    c = cluster(tmp_path)
    live = node_facts(
        datastore=True, server_active=True, node_token="K10" + "a" * 64 + "::server:x"
    )
    found = {"cp1": node_facts(), "cp2": live, "w1": node_facts(agent_active=True)}
    m = membership.membership(c, found)
    assert m == membership.Membership(new_cluster=False, anchor="cp2", rejoin=True)
    assert membership.problems(c, found, m) == []
    cx = ctx(c, found=found)
    assert plan.node_config(cx, c.node("cp1"))["server"] == "https://10.0.0.12:9345"
    assert cx.anchor_node.name == "cp2"
    # The kubeconfig and the node list come from that live member.
    wait = plan.wait_step(c.node("cp1"), 10, paths=c.paths(c.node("cp1")))
    assert wait.actions


def test_a_rejoining_first_server_needs_a_running_member(tmp_path: Path) -> None:
    c = cluster(tmp_path)
    found = {"cp1": node_facts(), "cp2": node_facts(datastore=True), "w1": node_facts()}
    m = membership.membership(c, found)
    problems = membership.problems(c, found, m)
    assert problems and "cp1: has no datastore while cp2" in problems[0]
    assert "systemctl start rke2-server" in problems[0]


def test_a_rejoined_first_server_is_not_restarted_for_its_server_line(tmp_path: Path) -> None:
    """Once it has a datastore, RKE2 ignores server:, so the config it rejoined with is
    as good as one without: a converged re-run restarts nothing."""
    c = cluster(tmp_path)
    joining = {"cp1": node_facts(), "cp2": node_facts(datastore=True, server_active=True)}
    joining["w1"] = node_facts()
    joined_bytes = config_bytes(ctx(c, found=joining), c.node("cp1"))[0]
    both = node_facts(datastore=True, server_active=True, rke2_version=f"rke2 version {TAG}")
    # its images in place (else placing them would restart it: RKE2 imports at start)
    images = {f"{facts.IMAGES_DIR}/{a.name}": a.sha256 for a in manifest().find(kind="images")}
    now = {"cp1": replace(both, hashes={facts.CONFIG_PATH: sha256_hex(joined_bytes), **images})}
    now |= {"cp2": both, "w1": node_facts(agent_active=True)}
    cx = ctx(c, found=now)
    assert cx.first_joins == ""
    assert plan.start_step(cx, c.node("cp1"), now["cp1"]).commands == ()
    # An agent has no datastore: its server: line is what it is.
    agent = replace(now["w1"], hashes={facts.CONFIG_PATH: sha256_hex(joined_bytes)})
    assert plan.start_step(cx, c.node("w1"), agent).commands


# -- 2. node names: lower-cased as RKE2 registers them, RFC 1123 or refused --------------
def test_upper_case_names_register_lower_cased(tmp_path: Path) -> None:
    nodes = (
        "    - {address: 10.0.0.11, name: CP1, role: server}\n"
        "    - {address: Worker-7.Example, role: agent}\n"
    )
    c = cluster(tmp_path, nodes=nodes)
    assert [n.name for n in c.nodes] == ["cp1", "worker-7.example"]
    assert c.node("CP1").name == "cp1"
    assert any("'CP1' registers as 'cp1'" in n for n in c.notes)
    assert plan.node_config(ctx(c), c.node("cp1"))["node-name"] == "cp1"
    # The readiness wait looks for the name that registers.
    assert plan.wait_step(c.node("cp1"), 5, paths=c.paths(c.node("cp1"))).actions[0].node == "cp1"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("node", "fix"),
    [
        ("{address: 10.0.0.11, name: cp_1, role: server}", "e.g. cp-1"),
        ("{address: 10.0.0.11, name: web..1, role: server}", "e.g. web.1"),
        ("{address: 'fd00::1', role: server}", "give it a name"),
    ],
)
def test_names_kubernetes_refuses_are_refused_at_load(tmp_path: Path, node: str, fix: str) -> None:
    with pytest.raises(ClusterFileError) as e:
        cluster(tmp_path, nodes=f"    - {node}\n")
    assert e.value.exit_code == 2
    assert "spec.nodes[0]" in str(e.value) and "RFC 1123" in str(e.value)
    assert fix in str(e.value)


# -- 3. the bundle's CNI is written to the servers ---------------------------------------
def test_a_cilium_bundle_writes_cni_to_every_server(tmp_path: Path) -> None:
    c = cluster(tmp_path)
    cx = ctx(c, manifest("cilium"))
    for n in c.servers:
        assert plan.node_config(cx, n)["cni"] == "cilium"
    assert "cni" not in plan.node_config(cx, c.node("w1"))
    assert "cni" not in plan.node_config(ctx(c), c.node("cp1"))  # canal: RKE2's default
    assert input_problems(c, manifest("cilium"), {n.name: node_facts() for n in c.nodes}) == []


def test_a_cni_the_bundle_has_no_images_for_is_refused(tmp_path: Path) -> None:
    c = cluster(tmp_path, rke2="    serverConfig: {cni: calico}\n")
    found = {n.name: node_facts() for n in c.nodes}
    problems = input_problems(c, manifest("cilium"), found)
    assert len(problems) == 2 and "cp1: cni: calico" in problems[0]
    assert "--cni calico" in problems[0]
    ok = cluster(tmp_path, rke2="    config: {cni: [multus, canal]}\n")
    assert input_problems(ok, manifest("canal", ("multus",)), found) == []


# -- 4. the token form ---------------------------------------------------------------------
def test_full_and_short_tokens() -> None:
    full = "K10" + "0123456789abcdef" * 4 + "::server:s3cret"
    assert membership.is_full_token(full) and membership.token_secret(full) == "s3cret"
    for short in ("s3cret", "K10abc::server:x", "K10" + "g" * 64 + "::server:x", full[:-9]):
        assert not membership.is_full_token(short), short


# -- 5. system-default-registry: servers only ---------------------------------------------
def test_system_default_registry_reaches_servers_only(tmp_path: Path) -> None:
    c = cluster(tmp_path, rke2="    config: {system-default-registry: reg.lan:5000}\n")
    assert plan.node_config(ctx(c), c.node("cp1"))["system-default-registry"] == "reg.lan:5000"
    assert "system-default-registry" not in plan.node_config(ctx(c), c.node("w1"))


@pytest.mark.parametrize(
    ("rke2", "nodes"),
    [
        ("    agentConfig: {system-default-registry: reg.lan}\n", ""),
        (
            "",
            "    - {address: 10.0.0.11, name: cp1, role: server}\n"
            "    - {address: 10.0.0.21, name: w1, role: agent, config: {system-default-registry: r}}\n",
        ),
    ],
)
def test_system_default_registry_in_an_agent_block_is_refused(
    tmp_path: Path, rke2: str, nodes: str
) -> None:
    with pytest.raises(ClusterFileError, match="system-default-registry is a server option") as e:
        cluster(tmp_path, rke2=rke2, nodes=nodes)
    assert "serverConfig" in str(e.value) and e.value.exit_code == 2


# -- 6. options that move paths are honoured everywhere ---------------------------------
MOVED = (
    "    config: {data-dir: /data/rke2, private-registry: /etc/mk8s/reg.yaml}\n"
    "    serverConfig: {write-kubeconfig: /root/admin.yaml, etcd-snapshot-dir: /backup/snaps}\n"
    "    registries: {mirrors: {docker.io: {}}}\n"
)


def test_moved_paths_are_used_for_every_file_mk8s_touches(tmp_path: Path) -> None:
    c = cluster(tmp_path, rke2=MOVED)
    cp1, w1 = c.node("cp1"), c.node("w1")
    sp, ap = c.paths(cp1), c.paths(w1)
    assert (sp.images_dir, sp.manifests_dir, sp.node_token) == (
        "/data/rke2/agent/images",
        "/data/rke2/server/manifests",
        "/data/rke2/server/node-token",
    )
    assert (sp.kubectl, sp.kubeconfig, sp.registries, sp.snapshot_dir) == (
        "/data/rke2/bin/kubectl",
        "/root/admin.yaml",
        "/etc/mk8s/reg.yaml",
        "/backup/snaps",
    )
    assert ap.kubeconfig == "/etc/rancher/rke2/rke2.yaml" and ap.data_dir == "/data/rke2"
    shown = " ".join(x.display() for x in plan.install_step(ctx(c), cp1, node_facts()).commands)
    assert "/data/rke2/agent/images/rke2-images.linux-amd64.tar.zst" in shown
    assert "/etc/mk8s/reg.yaml" in shown and "/var/lib/rancher" not in shown
    gather = facts.gather("/var/lib/mk8s/b1d", c.rke2.prefixes, sp).display()
    assert "/data/rke2/server/db" in gather and "/data/rke2/agent/images" in gather
    assert kubectl.kubeconfig_command(sp).display() == "cat /root/admin.yaml"
    assert (
        kubectl.nodes_command(sp)
        .display()
        .startswith("/data/rke2/bin/kubectl --kubeconfig /root/admin.yaml get nodes")
    )
    assert "RKE2_DATA_DIR=/data/rke2 exec" in kubectl.uninstall_command(ap).display()
    assert "RKE2_DATA_DIR" not in kubectl.uninstall_command(c.paths(cp1).__class__()).display()
    snap = upgrade.snapshot_command(node_facts(), "v1.29.1+rke2r1", sp).display()
    assert "/backup/snaps/mk8s-pre-v1.29.1-rke2r1" in snap


@pytest.mark.parametrize(
    "value", ["relative/dir", "/a b", "/data/../etc", "/", "[/a]", "/tmp/$(reboot)"]
)
def test_a_path_option_mk8s_cannot_use_is_refused(tmp_path: Path, value: str) -> None:
    with pytest.raises(ClusterFileError, match="data-dir must be an absolute path") as e:
        cluster(
            tmp_path, rke2=f"    config: {{data-dir: {yaml.safe_dump(value).split(chr(10))[0]}}}\n"
        )
    assert e.value.exit_code == 2


# -- 7. SELinux and profile: cis ---------------------------------------------------------
def test_selinux_needs_the_rpm_and_selinux_true(tmp_path: Path) -> None:
    c = cluster(tmp_path)
    enforcing = {n.name: node_facts(selinux_enforcing=True) for n in c.nodes}
    text = " ".join(host_problems(c, enforcing))
    assert "cp1: SELinux is enforcing but the rke2-selinux RPM is not installed" in text
    assert "w1: SELinux" in text
    assert "add selinux: true" in " ".join(input_problems(c, manifest(), enforcing))
    prepared = {n: replace(f, rke2_selinux=True) for n, f in enforcing.items()}
    assert host_problems(c, prepared) == []
    on = cluster(tmp_path, rke2="    config: {selinux: true}\n")
    assert input_problems(on, manifest(), prepared) == []
    # Not enforcing: nothing is required.
    assert host_problems(c, {n.name: node_facts() for n in c.nodes}) == []


def test_profile_cis_needs_the_etcd_user_and_the_kernel_parameters(tmp_path: Path) -> None:
    c = cluster(tmp_path, rke2="    config: {profile: cis}\n")
    bare = {n.name: node_facts(sysctls={**SUM, "kernel.panic": "0"}) for n in c.nodes}
    text = "\n".join(host_problems(c, bare))
    assert "cp1: profile: cis needs an etcd user and group" in text
    assert "w1: profile: cis needs an etcd user" not in text  # agents run no etcd
    assert "kernel.panic=0 (needs 10)" in text and "w1: profile: cis needs the CIS kernel" in text
    assert "/etc/sysctl.d/60-rke2-cis.conf" in text
    ready = {n.name: node_facts(etcd_user=True) for n in c.nodes}
    assert host_problems(c, ready) == []


def test_the_facts_read_selinux_etcd_and_sysctls(tmp_path: Path) -> None:
    """The privileged facts, run on this machine: what it says about itself."""
    cmd = facts.privileged(str(tmp_path / "staging"))
    r = subprocess.run(["sh", "-c", cmd.render()], capture_output=True, text=True, timeout=60)
    f = facts.parse("uname_m=x86_64\nsudo=root\n", r.stdout)
    assert set(f.sysctls) == set(SUM)
    for key, value in f.sysctls.items():
        assert value == Path("/proc/sys/" + key.replace(".", "/")).read_text().strip()
    enforce = Path("/sys/fs/selinux/enforce")
    assert f.selinux_enforcing == (enforce.exists() and enforce.read_text().strip() == "1")
    etc = (
        Path("/etc/passwd").read_text().startswith("etcd:")
        or "\netcd:" in Path("/etc/passwd").read_text()
    )
    assert f.etcd_user == (etc and "\netcd:" in "\n" + Path("/etc/group").read_text())
    assert not f.datastore
    priv = "datastore=yes\nselinux_enforce=1\nrke2_selinux=yes\netcd_user=yes\netcd_group=yes\n"
    g = facts.parse("uname_m=x86_64\nsudo=root\n", priv + "sysctl kernel.panic 10\n")
    assert (g.datastore, g.selinux_enforcing, g.rke2_selinux, g.etcd_user) == (True,) * 4
    assert g.sysctls == {"kernel.panic": "10"}
