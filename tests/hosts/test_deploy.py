"""mk8s deploy end to end: the real CLI, real sshd test hosts, the RKE2 stand-in.

First the tests on hosts of their own (torn down after each, before the big cluster
starts): field fidelity (RKE2 where install.sh put it, a kubeconfig that works with
real kubectl, a server URL outside tlsSan, Ctrl-C that tells the truth) and hostile
values in every cluster.yaml field that reaches a node, deployed twice: canary files
prove that nothing the values say was ever run. Then one module-scoped cluster of 3
servers + 2 agents goes through the whole life: a tampered bundle (nothing touched),
dry run, first deploy, converged re-run, status, kubeconfig, reset of one node and its
return. Faults that need their own hosts use a second, smaller host set.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from mk8s.bundle.format import keys
from mk8s.deploy.state import StateDir
from tests.support import standin
from tests.support.hosts import HostSet, hostset_for_tests
from tests.support.upstream import ExampleUpstream
from tests.support.world import (
    World,
    audit,
    deploy,
    kubectl_nodes,
    make_bundle,
    mk8s,
    write_cluster,
)

pytestmark = pytest.mark.hosts

NAMES = ["cp1", "cp2", "cp3", "w1", "w2"]
ROLES = {"cp1": "server", "cp2": "server", "cp3": "server", "w1": "agent", "w2": "agent"}


# -- field fidelity: RKE2 where install.sh put it, real kubectl, the preflight, Ctrl-C ---
KUBECTL = shutil.which("kubectl")


def _restarts_or_uploads(records: list[dict[str, object]]) -> list[str]:
    out = [str(r["file"]) for r in records if r.get("file")]
    for r in records:
        c = str(r.get("command", ""))
        if r.get("step") != "facts" and (
            "systemctl start" in c or "systemctl restart" in c or "install.sh" in c
        ):
            out.append(c[:80])
    return out


def test_rke2_in_opt_converges_and_real_kubectl_works(tmp_path: Path, world: World) -> None:
    names = ["cp1", "cp2", "w1"]
    roles = {"cp1": "server", "cp2": "server", "w1": "agent"}
    modes = {"cp1": "mount", "cp2": "readonly", "w1": "mount-readonly"}
    with hostset_for_tests(3, tmp_path / "hosts", names=names, usr_local=modes) as hs:
        write_cluster(tmp_path / "cluster.yaml", hs, [(n, roles[n]) for n in names])
        r = deploy(tmp_path, world.bundle, world.pub)
        assert r.returncode == 0, r.stdout + r.stderr
        for n in names:
            assert hs.by_name(n).path("/opt/rke2/bin/rke2").exists(), n
            assert not hs.by_name(n).path("/usr/local/bin/rke2").exists(), n
        # The re-run finds RKE2 in /opt/rke2: nothing uploaded, installed or restarted.
        before = len(audit(tmp_path))
        r = deploy(tmp_path, world.bundle, world.pub)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "uploaded 0 B" in r.stdout
        assert _restarts_or_uploads(audit(tmp_path)[before:]) == []
        st = mk8s("status", "-f", "cluster.yaml", cwd=tmp_path)
        assert st.returncode == 0, st.stdout + st.stderr
        assert st.stdout.count("Ready") >= 3 and "v1.28" in st.stdout

        # The kubeconfig mk8s wrote works with a real kubectl on this machine.
        assert KUBECTL, "kubectl is installed by scripts/setup.sh"
        kc = str(tmp_path / "demo.kubeconfig")

        def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [KUBECTL, "--kubeconfig", kc, "--request-timeout=20s", *args],
                capture_output=True,
                text=True,
                timeout=60,
            )

        got = kubectl("get", "nodes", "-o", "json")
        assert got.returncode == 0, got.stderr
        items = json.loads(got.stdout)["items"]
        assert sorted(i["metadata"]["name"] for i in items) == names
        assert kubectl("cordon", "w1").returncode == 0
        assert "SchedulingDisabled" in kubectl("get", "nodes").stdout
        assert kubectl("uncordon", "w1").returncode == 0
        assert "SchedulingDisabled" not in kubectl("get", "nodes").stdout

        # reset --node never uninstalls a node the cluster still holds.
        for s in ("cp1", "cp2"):
            hs.by_name(s).run("systemctl stop rke2-server", timeout=60)
        r = mk8s("reset", "-f", "cluster.yaml", "--node", "w1", "--yes", cwd=tmp_path)
        assert r.returncode == 1, r.stdout + r.stderr
        assert "could not remove w1 from the cluster" in r.stderr and "--force" in r.stderr
        assert hs.by_name("w1").path("/opt/rke2/bin/rke2").exists()
        r = mk8s("reset", "-f", "cluster.yaml", "--node", "w1", "--yes", "--force", cwd=tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr
        assert not hs.by_name("w1").path("/opt/rke2/bin/rke2").exists()


def test_server_url_host_not_in_tls_san_is_a_preflight_error(
    tmp_path: Path,
    world: World,
) -> None:
    with hostset_for_tests(1, tmp_path / "hosts", names=["cp1"]) as hs:
        write_cluster(
            tmp_path / "cluster.yaml",
            hs,
            [("cp1", "server")],
            extra_rke2="    serverUrl: https://vip.example.internal:9345",
        )
        r = deploy(tmp_path, world.bundle, world.pub)
        assert r.returncode == 1, r.stderr
        assert "vip.example.internal" in r.stderr and "tlsSan" in r.stderr
        assert not hs.by_name("cp1").path("/var/lib/mk8s").exists()


def test_ctrl_c_during_deploy_says_what_was_done_and_resumes(
    tmp_path: Path,
    world: World,
) -> None:
    names = ["cp1", "w1"]
    with hostset_for_tests(2, tmp_path / "hosts", names=names) as hs:
        write_cluster(tmp_path / "cluster.yaml", hs, [("cp1", "server"), ("w1", "agent")])
        # Slow the first server's start so the interrupt lands mid-deploy.
        hs.by_name("cp1").run(
            "mkdir -p /etc/default && echo MK8S_STANDIN_START_SECONDS=4 > /etc/default/rke2-server"
        )
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mk8s",
                "deploy",
                "-f",
                "cluster.yaml",
                "--bundle",
                str(world.bundle),
                "--key",
                str(world.pub),
            ],
            cwd=tmp_path,
            env=dict(os.environ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        seen = ""
        assert proc.stderr is not None
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            seen += line
            if "starting rke2-server" in line or not line:
                break
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=120)
        err = seen + err
        assert proc.returncode == 130, err
        assert "deploy interrupted while" in err
        assert "run the same command again" in err
        assert "nothing was left half-written" not in err
        r = deploy(tmp_path, world.bundle, world.pub)
        assert r.returncode == 0, r.stdout + r.stderr


# -- hostile values in every cluster.yaml field that reaches a node travel as data -------
CANARIES = [f"/tmp/mk8s-canary-{i}" for i in range(8)]


def _payloads() -> list[str]:
    c = CANARIES
    return [
        f"$(touch {c[0]})",
        f"`touch {c[1]}`",
        f"'; touch {c[2]}; '",
        f'"; touch {c[3]}; "',
        f"\n touch {c[4]}\n",
        f"$(touch${{IFS}}{c[5]})",
    ]


def _cluster(path: Path, hs: HostSet, token: Path, *, staging: str = "/var/lib/mk8s") -> Path:
    p = _payloads()
    doc = {
        "apiVersion": "mk8s/v1alpha1",
        "kind": "Cluster",
        "metadata": {"name": "evil"},
        "spec": {
            "rke2": {
                "tlsSan": ["k8s.example.internal"],
                "token": {"file": str(token)},
                "config": {
                    "node-label": [f"a={p[0]}", f"b={p[1]}"],
                    "kubelet-arg": [f"x={p[2]}", f"y={p[3]}"],
                },
                "serverConfig": {"etcd-s3-secret-key": p[4]},
                "agentConfig": {"node-taint": [f"k={p[5]}:NoSchedule"]},
                "registries": {
                    "mirrors": {"docker.io": {"endpoint": [f"https://r.example/{p[0]}"]}},
                    "configs": {"r.example": {"auth": {"username": p[1], "password": p[2]}}},
                },
            },
            "ssh": {
                "user": "root",
                "identityFile": str(hs.identity_file),
                "knownHosts": str(hs.known_hosts),
            },
            "nodes": [
                {"address": hs.hosts[0].address, "name": "s1", "role": "server"},
                {
                    "address": hs.hosts[1].address,
                    "name": "a1",
                    "role": "agent",
                    "config": {"node-label": [f"c={p[3]}"]},
                },
            ],
            "options": {"stagingDir": staging},
        },
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _no_canary(hs: HostSet) -> None:
    for c in CANARIES:
        assert not Path(c).exists(), c
        for h in hs.hosts:
            assert not h.path(c).exists(), (h.name, c)


def test_hostile_values_are_data_on_real_hosts(tmp_path: Path, world: World) -> None:
    with hostset_for_tests(2, tmp_path / "hosts", names=["s1", "a1"]) as hs:
        token = tmp_path / "token"
        token.write_text(f"$(touch${{IFS}}{CANARIES[6]})`touch${{IFS}}{CANARIES[7]}`\nignored\n")
        _cluster(tmp_path / "cluster.yaml", hs, token)
        for attempt in (1, 2):  # the re-run reads back what the first run placed
            r = deploy(tmp_path, world.bundle, world.pub)
            assert r.returncode == 0, f"run {attempt}: {r.stdout}\n{r.stderr}"
            _no_canary(hs)
        # The values arrived verbatim, as data.
        placed = yaml.safe_load(hs.hosts[0].path("/etc/rancher/rke2/config.yaml").read_text())
        assert placed["node-label"] == [f"a={_payloads()[0]}", f"b={_payloads()[1]}"]
        assert placed["etcd-s3-secret-key"] == _payloads()[4]
        assert placed["token"] == token.read_text().splitlines()[0]
        regs = yaml.safe_load(hs.hosts[1].path("/etc/rancher/rke2/registries.yaml").read_text())
        assert regs["configs"]["r.example"]["auth"]["password"] == _payloads()[2]
        # Secrets never reached the audit log.
        audit = (tmp_path / ".mk8s" / "evil" / "audit.jsonl").read_text()
        assert _payloads()[2] not in audit and token.read_text().splitlines()[0] not in audit

        # A hostile stagingDir is refused before anything connects (exit 2).
        _cluster(tmp_path / "bad.yaml", hs, token, staging=f"/var/lib/$(touch {CANARIES[0]})")
        r = deploy(tmp_path, world.bundle, world.pub, file="bad.yaml")
        assert r.returncode == 2, r.stderr
        assert "stagingDir" in r.stderr
        _no_canary(hs)
        out = subprocess.run(["ls", "/tmp"], capture_output=True, text=True).stdout
        assert "mk8s-canary" not in out


# -- the main life of one cluster ---------------------------------------------------------
@pytest.fixture(scope="module")
def cluster5(
    tmp_path_factory: pytest.TempPathFactory, world: World
) -> Iterator[tuple[HostSet, Path]]:
    d = tmp_path_factory.mktemp("c5")
    with hostset_for_tests(5, d / "hosts", names=NAMES) as hs:
        write_cluster(d / "cluster.yaml", hs, [(n, ROLES[n]) for n in NAMES])
        yield hs, d


def test_tampered_bundle_touches_no_node(cluster5: tuple[HostSet, Path], world: World) -> None:
    hs, d = cluster5
    data = bytearray(world.bundle.read_bytes())
    data[len(data) // 2] ^= 0x40
    bad = d / "tampered.tar.zst"
    bad.write_bytes(bytes(data))
    r = deploy(d, bad, world.pub)
    assert r.returncode == 3, r.stderr
    for h in hs.hosts:
        assert not h.path("/var/lib/mk8s").exists()
        assert not h.path("/etc/rancher").exists()


def test_dry_run_prints_plan_and_touches_nothing(
    cluster5: tuple[HostSet, Path], world: World
) -> None:
    hs, d = cluster5
    r = deploy(d, world.bundle, world.pub, "--dry-run")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "INSTALL_RKE2_ARTIFACT_PATH=" in out and "systemctl start rke2-server" in out
    assert out.index("[cp1") < out.index("## 2.") < out.index("## 3.") < out.index("## 4.")
    assert "token: '***'" in out
    assert not (d / ".mk8s" / "demo" / "token").exists()
    for h in hs.hosts:
        assert not h.path("/var/lib/mk8s").exists()


def test_first_deploy(cluster5: tuple[HostSet, Path], world: World) -> None:
    hs, d = cluster5
    r = deploy(d, world.bundle, world.pub)
    assert r.returncode == 0, r.stdout + r.stderr
    for name in NAMES:
        assert any(
            line.startswith(name) and " ready " in f"{line} " for line in r.stdout.splitlines()
        ), r.stdout
    assert kubectl_nodes(hs, "cp1") == dict.fromkeys(NAMES, True)
    kc = d / "demo.kubeconfig"
    assert stat.S_IMODE(kc.stat().st_mode) == 0o600
    assert f"server: https://{hs.by_name('cp1').address}:6443" in kc.read_text()
    state = d / ".mk8s" / "demo"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    token = (state / "token").read_text().strip()
    assert stat.S_IMODE((state / "token").stat().st_mode) == 0o600
    # the token is in every node's config, and nowhere in what mk8s printed or logged
    for n in NAMES:
        cfg = yaml.safe_load(hs.by_name(n).path("/etc/rancher/rke2/config.yaml").read_text())
        assert cfg["token"] == token
        assert ("server" in cfg) == (n != "cp1")
        assert (
            stat.S_IMODE(hs.by_name(n).path("/etc/rancher/rke2/config.yaml").stat().st_mode)
            == 0o600
        )
    logged = (state / "audit.jsonl").read_text()
    assert token not in logged and token not in r.stdout + r.stderr
    records = audit(d)
    uploads = [x for x in records if x.get("file")]
    assert uploads and all(len(str(x["sha256"])) == 64 for x in uploads)
    assert "unchanged;" not in r.stderr  # a first deploy changes every server
    # servers joined one at a time: each server start began after the previous finished
    starts = [x for x in records if "systemctl start rke2-server" in str(x.get("command", ""))]
    assert [x["node"] for x in starts] == ["cp1", "cp2", "cp3"]


def test_rerun_converges_without_upload_or_restart(
    cluster5: tuple[HostSet, Path], world: World
) -> None:
    _hs, d = cluster5
    before = len(audit(d))
    r = deploy(d, world.bundle, world.pub)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "uploaded 0 B" in r.stdout
    # nothing to do anywhere: every node is judged by its facts alone
    assert "5 of 5 nodes converged" in r.stderr
    new = audit(d)[before:]
    commands = [str(x.get("command", "")) for x in new if x.get("step") != "facts"]
    assert not [x for x in new if x.get("file")]
    assert not [
        c
        for c in commands
        if "systemctl start" in c
        or "systemctl restart" in c
        or "install.sh" in c
        or "config.yaml" in c
    ]


def test_rerun_resends_a_staged_file_that_changed(
    cluster5: tuple[HostSet, Path], world: World
) -> None:
    """Recorded hashes are trusted only while the file is untouched."""
    hs, d = cluster5
    cp2 = hs.by_name("cp2")
    staged = next(p for p in cp2.path("/var/lib/mk8s").glob("*/install.sh"))
    remote = "/var/lib/mk8s/" + staged.parent.name + "/install.sh"
    cp2.run(f"printf '# tampered\\n' >> {remote}", timeout=30)
    before = len(audit(d))
    r = deploy(d, world.bundle, world.pub)
    assert r.returncode == 0, r.stdout + r.stderr
    sent = [(x["node"], x["file"]) for x in audit(d)[before:] if x.get("file")]
    assert sent == [("cp2", remote)]
    assert "# tampered" not in cp2.run(f"cat {remote}").stdout


def test_status_and_kubeconfig(cluster5: tuple[HostSet, Path]) -> None:
    _hs, d = cluster5
    r = mk8s("status", "-f", "cluster.yaml", cwd=d)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("Ready") >= 5 and "NotReady" not in r.stdout
    out = d / "other.kubeconfig"
    r = mk8s("kubeconfig", "-f", "cluster.yaml", "-o", str(out), cwd=d)
    assert r.returncode == 0 and stat.S_IMODE(out.stat().st_mode) == 0o600


def test_two_deploys_at_once_the_second_refuses(
    cluster5: tuple[HostSet, Path], world: World
) -> None:
    _hs, d = cluster5
    st = StateDir("demo", d)
    with st.locked():
        r = deploy(d, world.bundle, world.pub)
    assert r.returncode == 1 and "already working on cluster demo" in r.stderr


def test_reset_one_node_and_bring_it_back(cluster5: tuple[HostSet, Path], world: World) -> None:
    hs, d = cluster5
    r = mk8s("reset", "-f", "cluster.yaml", "--node", "w2", cwd=d)
    assert r.returncode == 2 and "--yes" in r.stderr
    r = mk8s("reset", "-f", "cluster.yaml", "--node", "w2", "--yes", cwd=d)
    assert r.returncode == 0, r.stderr
    assert "w2" not in kubectl_nodes(hs, "cp1")
    assert not hs.by_name("w2").path("/usr/local/bin/rke2").exists()
    r = mk8s("status", "-f", "cluster.yaml", cwd=d)
    assert r.returncode == 1
    r = deploy(d, world.bundle, world.pub)
    assert r.returncode == 0, r.stdout + r.stderr
    assert kubectl_nodes(hs, "cp1") == dict.fromkeys(NAMES, True)


def test_wrong_token_for_existing_cluster(cluster5: tuple[HostSet, Path], world: World) -> None:
    _hs, d = cluster5
    (d / "wrong-token").write_text("not-the-cluster-token\n")
    text = (
        (d / "cluster.yaml")
        .read_text()
        .replace("    tlsSan:", "    token: {file: ./wrong-token}\n    tlsSan:")
    )
    (d / "wrong.yaml").write_text(text)
    r = deploy(d, world.bundle, world.pub, file="wrong.yaml")
    assert r.returncode == 1
    assert "not the token of the running cluster" in r.stderr


def test_version_mismatch_is_refused(cluster5: tuple[HostSet, Path], world: World) -> None:
    _hs, d = cluster5
    text = (
        (d / "cluster.yaml")
        .read_text()
        .replace("    tlsSan:", "    version: v1.27.1+rke2r1\n    tlsSan:")
    )
    (d / "v.yaml").write_text(text)
    r = deploy(d, world.bundle, world.pub, file="v.yaml")
    assert r.returncode == 2 and "v1.27.1+rke2r1" in r.stderr


def test_reset_whole_cluster(cluster5: tuple[HostSet, Path]) -> None:
    hs, d = cluster5
    before = len(audit(d))
    r = mk8s("reset", "-f", "cluster.yaml", "--yes", cwd=d)
    assert r.returncode == 0, r.stderr
    new = audit(d)[before:]
    order = [str(x["node"]) for x in new if "uninstall" in str(x.get("command"))]
    assert order[:2] and set(order[:2]) == {"w1", "w2"} and order[-1] == "cp1"
    # RKE2's uninstall leaves a node registered: each is deleted from the cluster (on
    # the first server) before its uninstall, so a reset that stops halfway leaves no
    # node whose reinstall would be refused
    for name in ("w1", "w2", "cp3", "cp2"):
        deleted = next(
            i for i, x in enumerate(new) if f"delete node {name} " in str(x.get("command"))
        )
        assert new[deleted]["node"] == "cp1" and new[deleted]["exit"] == 0
        uninstalled = next(
            i
            for i, x in enumerate(new)
            if x["node"] == name and "uninstall" in str(x.get("command"))
        )
        assert deleted < uninstalled
    assert not [x for x in new if "delete node cp1 " in str(x.get("command"))]
    for h in hs.hosts:
        assert not h.path("/usr/local/bin/rke2").exists()


# -- faults on a small cluster ----------------------------------------------------------------
@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HostSet, Path]]:
    d = tmp_path_factory.mktemp("small")
    with hostset_for_tests(3, d / "hosts", names=["s1", "a1", "a2"]) as hs:
        write_cluster(
            d / "cluster.yaml",
            hs,
            [("s1", "server"), ("a1", "agent"), ("a2", "agent")],
            name="small",
        )
        yield hs, d


def _unchanged(hs: HostSet) -> None:
    for h in hs.hosts:
        if h.running:
            assert not h.path("/var/lib/mk8s").exists(), h.name
            assert not h.path("/etc/rancher").exists(), h.name


def test_wrong_arch_fails_preflight(small: tuple[HostSet, Path], world: World) -> None:
    hs, d = small
    arm = make_bundle(world.up, d, world.key, arches=("arm64",), name="arm.tar.zst")
    r = deploy(d, arm, world.pub)
    assert r.returncode == 1 and "is amd64 but the bundle holds only arm64" in r.stderr
    _unchanged(hs)


def test_rke2_binary_of_another_arch_fails_preflight(
    small: tuple[HostSet, Path], world: World
) -> None:
    """A binary that cannot execute answers nothing to --version: not "not installed"."""
    hs, d = small
    a1 = hs.by_name("a1")
    foreign = standin.rke2_program("arm64", "v1.28.15+rke2r1").decode()
    a1.run("cat > /usr/local/bin/rke2 && chmod 755 /usr/local/bin/rke2", input=foreign, check=True)
    try:
        r = deploy(d, world.bundle, world.pub)
        assert r.returncode == 1, r.stdout + r.stderr
        assert "a1: /usr/local/bin/rke2 is installed but does not run" in r.stderr, r.stderr
        assert "Exec format error" in r.stderr and "mk8s reset --node a1" in r.stderr
    finally:
        a1.run("rm -f /usr/local/bin/rke2", check=True)
    _unchanged(hs)


def test_user_without_sudo_fails_preflight(small: tuple[HostSet, Path], world: World) -> None:
    hs, d = small
    write_cluster(
        d / "nosudo.yaml",
        hs,
        [("s1", "server"), ("a1", "agent")],
        user=hs.nosudo_user,
        name="nosudo",
    )
    r = deploy(d, world.bundle, world.pub, file="nosudo.yaml")
    assert r.returncode == 1 and "cannot run sudo without a password" in r.stderr
    _unchanged(hs)


def test_too_little_disk_fails_preflight(small: tuple[HostSet, Path], world: World) -> None:
    hs, d = small
    hs.by_name("a2").run(
        "mkdir -p /opt/small && mount -t tmpfs -o size=64k tmpfs /opt/small", timeout=30
    )
    try:
        write_cluster(
            d / "disk.yaml",
            hs,
            [("s1", "server"), ("a2", "agent")],
            staging="/opt/small/mk8s",
            name="disk",
        )
        r = deploy(d, world.bundle, world.pub, file="disk.yaml")
        assert r.returncode == 1 and "a2: /opt/small/mk8s has" in r.stderr, r.stderr
    finally:
        hs.by_name("a2").run("umount /opt/small", timeout=30)
    _unchanged(hs)


def test_unreachable_node_changes_nothing(small: tuple[HostSet, Path], world: World) -> None:
    hs, d = small
    hs.by_name("a2").kill()
    try:
        r = deploy(d, world.bundle, world.pub)
        assert r.returncode == 1 and "a2" in r.stderr and "nothing was changed" in r.stderr
    finally:
        hs.by_name("a2").start()
    _unchanged(hs)


def test_changed_host_key_is_refused(small: tuple[HostSet, Path], world: World) -> None:
    hs, d = small
    other = keys.generate_private_key()  # any ed25519 key: not the node's
    from cryptography.hazmat.primitives import serialization

    raw = (
        other.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    kh = d / "changed_known_hosts"
    lines = []
    for line in hs.known_hosts.read_text().splitlines():
        if line.split(" ", 1)[0] == hs.by_name("a1").address:
            line = f"{hs.by_name('a1').address} {raw}"
        lines.append(line)
    kh.write_text("\n".join(lines) + "\n")
    text = (d / "cluster.yaml").read_text().replace(str(hs.known_hosts), str(kh))
    (d / "hk.yaml").write_text(text)
    r = deploy(d, world.bundle, world.pub, file="hk.yaml")
    assert r.returncode == 1 and "a1" in r.stderr and "ssh-keygen -R" in r.stderr, r.stderr
    _unchanged(hs)


def test_failed_agent_install_others_finish_and_rerun_fixes(
    small: tuple[HostSet, Path], world: World
) -> None:
    hs, d = small
    # a directory where the tarball puts the rke2 binary: tar cannot unpack it.
    hs.by_name("a2").run("mkdir -p /usr/local/bin/rke2/keep")
    r = deploy(d, world.bundle, world.pub)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "a2" in r.stderr and "failed" in r.stdout
    assert kubectl_nodes(hs, "s1") == {"s1": True, "a1": True}
    hs.by_name("a2").run("rm -rf /usr/local/bin/rke2")
    r = deploy(d, world.bundle, world.pub)
    assert r.returncode == 0, r.stdout + r.stderr
    assert kubectl_nodes(hs, "s1") == {"s1": True, "a1": True, "a2": True}


def test_agent_reinstalled_by_hand_is_refused_named_and_reset_brings_it_back(
    small: tuple[HostSet, Path], world: World
) -> None:
    """rke2-uninstall.sh leaves the node in the cluster: the reinstalled agent's new node
    password is refused and it retries for ever (its start never returns). mk8s bounds
    the wait, names the cause, and reset --node (which deletes the node) fixes it."""
    hs, d = small
    assert kubectl_nodes(hs, "s1") == {"s1": True, "a1": True, "a2": True}
    hs.by_name("a2").run("/usr/local/bin/rke2-uninstall.sh", check=True)
    assert "a2" in kubectl_nodes(hs, "s1")  # still registered
    t0 = time.monotonic()
    r = deploy(d, world.bundle, world.pub, "--wait", "15")
    assert r.returncode == 1, r.stdout + r.stderr
    assert time.monotonic() - t0 < 150
    out = r.stdout + r.stderr
    assert "a2 was not Ready within 15s" in out, out
    assert "likely cause: the cluster refuses its node password" in out, out
    assert "mk8s reset --node a2 --yes" in out, out
    r = mk8s("reset", "-f", "cluster.yaml", "--node", "a2", "--yes", cwd=d)
    assert r.returncode == 0, r.stdout + r.stderr
    r = deploy(d, world.bundle, world.pub)
    assert r.returncode == 0, r.stdout + r.stderr
    assert kubectl_nodes(hs, "s1") == {"s1": True, "a1": True, "a2": True}


def test_node_killed_mid_upload_resumes(tmp_path: Path, world: World) -> None:
    # zstd level 3: RKE2's -16 --long=25 costs about 1 s a MiB of these incompressible
    # images, and only the upload's size matters here
    with ExampleUpstream(image_size=48 << 20, image_zstd_level=3) as up:
        bundle = make_bundle(up, tmp_path, world.key, name="big.tar.zst")
    with hostset_for_tests(2, tmp_path / "hosts", names=["k1", "k2"]) as hs:
        write_cluster(
            tmp_path / "cluster.yaml", hs, [("k1", "server"), ("k2", "agent")], name="killed"
        )
        # slow the link to k2 so the upload is still running when the node dies
        subprocess.run(
            [
                "tc",
                "qdisc",
                "add",
                "dev",
                hs.by_name("k2").veth,
                "root",
                "tbf",
                "rate",
                "80mbit",
                "burst",
                "32kbit",
                "latency",
                "400ms",
            ],
            check=True,
        )
        k2 = hs.by_name("k2")
        killed = threading.Event()

        def killer() -> None:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                parts = (
                    list(k2.path("/var/lib/mk8s").rglob("*.part"))
                    if k2.path("/var/lib/mk8s").exists()
                    else []
                )
                if any(p.stat().st_size > (8 << 20) for p in parts):
                    k2.kill()
                    killed.set()
                    return
                time.sleep(0.05)

        t = threading.Thread(target=killer)
        t.start()
        r = deploy(tmp_path, bundle, world.pub, "--wait", "60")
        t.join()
        assert killed.is_set()
        assert r.returncode == 1 and "k2" in r.stdout + r.stderr
        # the partial file was never moved into place nor installed
        staged = [p.name for p in k2.path("/var/lib/mk8s").rglob("*") if p.is_file()]
        assert any(n.endswith(".part") for n in staged)
        assert not k2.path("/usr/local/bin/rke2").exists()
        k2.start()
        subprocess.run(["tc", "qdisc", "del", "dev", k2.veth, "root"], check=False)
        r = deploy(tmp_path, bundle, world.pub)
        assert r.returncode == 0, r.stdout + r.stderr
        resumed = [
            x
            for x in audit(tmp_path, "killed")
            if x.get("node") == "k2" and x.get("file") and int(str(x.get("offset", 0))) > 0
        ]
        assert resumed, "the re-run did not resume the partial upload"
        assert kubectl_nodes(hs, "k1") == {"k1": True, "k2": True}


def test_deploy_as_sudo_user_with_new_node_joining_later(tmp_path: Path, world: World) -> None:
    """A non-root login (sudo -n) deploys; a node added to the file later joins."""
    with hostset_for_tests(3, tmp_path / "hosts", names=["u1", "u2", "u3"]) as hs:
        write_cluster(
            tmp_path / "cluster.yaml",
            hs,
            [("u1", "server"), ("u2", "agent")],
            user=hs.sudo_user,
            name="sudo",
        )
        r = deploy(tmp_path, world.bundle, world.pub)
        assert r.returncode == 0, r.stdout + r.stderr
        assert kubectl_nodes(hs, "u1") == {"u1": True, "u2": True}
        cmds = [str(x.get("command")) for x in audit(tmp_path, "sudo") if x.get("command")]
        assert any(c.startswith("sudo -n ") for c in cmds)
        write_cluster(
            tmp_path / "cluster.yaml",
            hs,
            [("u1", "server"), ("u2", "agent"), ("u3", "agent")],
            user=hs.sudo_user,
            name="sudo",
        )
        before = len(audit(tmp_path, "sudo"))
        r = deploy(tmp_path, world.bundle, world.pub)
        assert r.returncode == 0, r.stdout + r.stderr
        assert kubectl_nodes(hs, "u1") == {"u1": True, "u2": True, "u3": True}
        sent = {x["node"] for x in audit(tmp_path, "sudo")[before:] if x.get("file")}
        assert sent == {"u3"}
