"""Field fidelity on real test hosts: RKE2 where install.sh put it, a kubeconfig that
works with real kubectl, reset that never hides a failure, and Ctrl-C that tells the
truth."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.hosts import hostset_for_tests
from tests.support.world import World, audit, deploy, mk8s, write_cluster

pytestmark = pytest.mark.hosts

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
