"""The test world's hosts: isolation, SSH with strict host keys, sudo, teardown."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import hosts as H
from tests.support.hosts import HostSet, hostset_for_tests
from tests.support.paths import ROOT


@pytest.fixture(scope="module")
def hs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostSet]:
    with hostset_for_tests(2, tmp_path_factory.mktemp("hosts")) as hs:
        yield hs


def _leftovers(prefix: str, bridge: str) -> list[str]:
    out = []
    nss = json.loads(
        subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True).stdout or "[]"
    )
    out += [n["name"] for n in nss if n["name"].startswith(prefix + "-")]
    links = json.loads(
        subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True).stdout
    )
    out += [
        lk["ifname"]
        for lk in links
        if lk["ifname"] == bridge or lk["ifname"].startswith(prefix + "v")
    ]
    out += [f"pid {p}" for p in H._marked_pids(prefix)]
    return out


@pytest.mark.hosts
def test_filesystem_views_are_separate(hs: HostSet) -> None:
    a, b = hs.hosts
    assert a.ssh("hostname").stdout.strip() == a.name
    assert (
        a.ssh("mkdir -p /etc/rancher/x && echo A > /etc/rancher/x/f && echo T > /tmp/t").returncode
        == 0
    )
    assert a.path("/etc/rancher/x/f").read_text() == "A\n"
    assert a.path("/tmp/t").read_text() == "T\n"
    assert b.run("test -e /etc/rancher/x/f").returncode == 1
    assert b.run("test -e /tmp/t").returncode == 1
    assert not Path("/etc/rancher/x/f").exists()
    for d in (
        "/var/lib/mk8s-probe",
        "/usr/local/bin/probe",
        "/opt/probe",
        "/root/probe",
        "/run/probe",
    ):
        assert a.run(f"mkdir -p {d}").returncode == 0
        assert a.path(d).is_dir()
        assert b.run(f"test -e {d}").returncode == 1
        assert not Path(d).exists()
    # /usr/local starts empty (only the stand-ins) and is not a mount point (install.sh)
    ls = b.run("ls /usr/local/bin /usr/local/sbin").stdout.split()
    assert "journalctl" in ls and "systemctl" in ls and "terraform" not in ls
    assert b.run("mountpoint -q /usr/local").returncode != 0
    # each node sees only its own processes
    assert "sshd" in b.run("ps -o comm= 1").stdout
    assert b.run("ls /proc | grep -c '^[0-9]'").stdout.strip() != ""


@pytest.mark.hosts
def test_paths_and_tools_on_the_node(hs: HostSet) -> None:
    a = hs.hosts[0]
    assert a.ssh("command -v systemctl").stdout.strip() == "/usr/local/sbin/systemctl"
    p = a.ssh("sudo -n sh -c 'command -v systemctl; id -u'", user=hs.sudo_user)
    assert p.stdout.split() == ["/usr/local/sbin/systemctl", "0"]
    assert "unable to resolve host" not in p.stderr
    p = a.ssh("sudo -n true", user=hs.nosudo_user)
    assert p.returncode != 0 and "password is required" in p.stderr
    assert a.ssh("test -x /usr/bin/python3 && test -x /usr/bin/sha256sum").returncode == 0
    # nodes reach each other by address and name
    b = hs.hosts[1]
    probe = f"exec 3<>/dev/tcp/{b.name}/22 && head -c 4 <&3"
    assert a.ssh(f"bash -c '{probe}'").stdout == "SSH-"


@pytest.mark.hosts
def test_strict_host_key_checking(hs: HostSet, tmp_path: Path) -> None:
    a, b = hs.hosts
    opts = hs.ssh_options()
    assert (
        subprocess.run(["ssh", *opts, f"root@{a.address}", "true"], capture_output=True).returncode
        == 0
    )
    # unknown host: refused
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    strict = [o.replace(str(hs.known_hosts), str(empty)) for o in opts]
    p = subprocess.run(
        ["ssh", *strict, f"root@{a.address}", "true"], capture_output=True, text=True
    )
    assert p.returncode == 255 and "Host key verification failed" in p.stderr
    # a different key for the address: refused
    swapped = tmp_path / "swapped_known_hosts"
    lines = hs.known_hosts.read_text().splitlines()
    keys = [ln.split(" ", 1)[1] for ln in lines]
    swapped.write_text(f"{a.address} {keys[1]}\n")
    strict = [o.replace(str(hs.known_hosts), str(swapped)) for o in opts]
    p = subprocess.run(
        ["ssh", *strict, f"root@{a.address}", "true"], capture_output=True, text=True
    )
    assert p.returncode == 255 and "Host key verification failed" in p.stderr
    # no key, no entry (password login is off)
    p = subprocess.run(
        ["ssh", *[o for o in opts if o != str(hs.identity_file) and o != "-i"], "-o", "IdentityFile=/dev/null",
         f"root@{b.address}", "true"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert p.returncode == 255 and "Permission denied" in p.stderr


@pytest.mark.hosts
def test_kill_and_start_keep_the_disk(hs: HostSet) -> None:
    b = hs.hosts[1]
    b.ssh("echo keep > /var/lib/keep; echo gone > /run/gone; sleep 1000 >/dev/null 2>&1 &")
    b.kill()
    assert not b.running
    assert (
        subprocess.run(
            ["ssh", *hs.ssh_options(), f"root@{b.address}", "true"], capture_output=True
        ).returncode
        == 255
    )
    b.start()
    assert b.ssh("cat /var/lib/keep").stdout == "keep\n"
    assert b.run("test -e /run/gone").returncode == 1  # /run is empty after a "boot"
    assert b.run("pgrep -x sleep").returncode == 1  # every process died with the node


@pytest.mark.hosts
def test_usr_local_modes(tmp_path: Path) -> None:
    """Opt-in per node: /usr/local a mount point, read-only, or both; the default is
    neither (RKE2's install.sh uses /usr/local only when it is neither)."""
    modes = {"mnt": "mount", "ro": "readonly", "mntro": "mount-readonly"}
    names = ["plain", *modes]
    with hostset_for_tests(4, tmp_path, names=names, usr_local=modes) as hs:
        for h in hs.hosts:
            mount = h.run("mountpoint -q /usr/local").returncode == 0
            writable = h.run("touch /usr/local/.probe && rm /usr/local/.probe").returncode == 0
            assert (h.usr_local, mount, writable) == (
                modes.get(h.name, "plain"),
                h.name in ("mnt", "mntro"),
                h.name in ("plain", "mnt"),
            )
            # the stand-ins are there in every mode; /opt stays writable
            assert h.ssh("command -v systemctl").stdout.strip() == "/usr/local/sbin/systemctl"
            assert h.run("mkdir -p /opt/rke2 && rmdir /opt/rke2").returncode == 0
        # what a node writes to a mounted /usr/local is still read through host.path()
        mnt = hs.by_name("mnt")
        assert mnt.run("echo x > /usr/local/bin/probe").returncode == 0
        assert mnt.path("/usr/local/bin/probe").read_text() == "x\n"
        # the mode survives a restart
        ro = hs.by_name("ro")
        ro.kill()
        ro.start()
        assert ro.run("touch /usr/local/x").returncode != 0
        assert [h["usr_local"] for h in hs.summary()["hosts"]] == ["plain", *modes.values()]
    with pytest.raises(H.HostError, match="not one of"):
        H.start_hosts(1, workdir=tmp_path / "bad", prefix="mk8sq", usr_local="tmpfs")


@pytest.mark.hosts
def test_teardown_leaves_nothing_and_leftovers_are_cleaned(tmp_path: Path) -> None:
    H.require_root_or_skip()
    prefix, bridge, subnet = "mk8sq", "mk8sqbr", "10.77.99.0/24"
    hs = H.start_hosts(2, workdir=tmp_path / "a", prefix=prefix, bridge=bridge, subnet=subnet)
    hs.hosts[0].ssh("sleep 1000 >/dev/null 2>&1 &")
    # a run that was killed: nothing was torn down; the next start cleans it
    hs2 = H.start_hosts(1, workdir=tmp_path / "b", prefix=prefix, bridge=bridge, subnet=subnet)
    try:
        assert not any(H._pid_alive(p) for p in [h.init_pid or 0 for h in hs.hosts])
        assert hs2.hosts[0].ssh("true").returncode == 0
    finally:
        hs2.close()
    assert _leftovers(prefix, bridge) == []
    assert not Path(f"/run/netns/{prefix}-node1").exists()


def test_no_root_skips_or_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.delenv("MK8S_REQUIRE_HOSTS", raising=False)
    with pytest.raises(pytest.skip.Exception, match="need root"):
        H.require_root_or_skip()
    monkeypatch.setenv("MK8S_REQUIRE_HOSTS", "1")
    with pytest.raises(pytest.fail.Exception, match="MK8S_REQUIRE_HOSTS=1"):
        H.require_root_or_skip()


@pytest.mark.hosts
def test_testhosts_script(tmp_path: Path) -> None:
    H.require_root_or_skip()
    d = tmp_path / "demo"
    cmd = [sys.executable, str(ROOT / "scripts" / "testhosts")]
    args = ["--prefix", "mk8sz", "--subnet", "10.77.98.0/24"]
    p = subprocess.run(
        [*cmd, "up", "2", "--dir", str(d), *args], capture_output=True, text=True, timeout=60
    )
    try:
        assert p.returncode == 0, p.stderr
        info = json.loads(p.stdout)
        assert [h["address"] for h in info["hosts"]] == ["10.77.98.11", "10.77.98.12"]
        # the hosts outlive the script
        ssh = ["ssh", "-F", "/dev/null", "-i", info["identity_file"], "-o", "BatchMode=yes",
               "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={info['known_hosts']}"]  # fmt: skip
        assert (
            subprocess.run(
                [*ssh, "root@10.77.98.12", "hostname"], capture_output=True, text=True
            ).stdout
            == "node2\n"
        )
    finally:
        q = subprocess.run(
            [*cmd, "down", "--dir", str(d)], capture_output=True, text=True, timeout=60
        )
    assert q.returncode == 0, q.stderr
    assert _leftovers("mk8sz", "mk8szbr0") == []
