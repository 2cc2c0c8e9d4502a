"""SSHTransport against real sshd test hosts (network namespaces, tests/support/hosts.py):
strict host keys, bastions, sudo, timeouts, SFTP transfers. The transports without
network are tests/unit/deploy/transport/."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from mk8s.deploy.cluster import Bastion, SSHSettings
from mk8s.deploy.command import Command, Secret, write_file
from mk8s.deploy.transport import SSHTransport
from mk8s.deploy.transport import sftp as tr_sftp
from mk8s.errors import ConnectError, HostKeyError, RemoteCommandError
from tests.support.hosts import HostSet, hostset_for_tests
from tests.support.sshkeys import ssh_keygen

# Own network and prefix: another module's hosts may be up at the same time.
SUBNET = "10.77.19.0/24"
PREFIX = "mk8sr"


# ------------------------------------------------------------ real sshd test hosts


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostSet]:
    workdir = tmp_path_factory.mktemp("transport-hosts")
    with hostset_for_tests(2, workdir, subnet=SUBNET, prefix=PREFIX) as hs:
        yield hs


def settings(hs: HostSet, **kw: object) -> SSHSettings:
    base: dict[str, object] = {"identity_file": hs.identity_file, "known_hosts": hs.known_hosts}
    base.update(kw)
    return SSHSettings(**base)  # type: ignore[arg-type]


def connect(hs: HostSet, i: int = 0, **kw: object) -> SSHTransport:
    t = SSHTransport(hs[i].name, hs[i].address, settings(hs, **kw), connect_timeout=5)
    t.connect()
    return t


@pytest.mark.hosts
def test_strict_connect_run_reuse(hosts: HostSet) -> None:
    with connect(hosts) as t:
        assert t.cipher == "aes128-gcm@openssh.com"
        conn = t._transport
        for _ in range(30):
            assert t.run(Command.argv("hostname")).stdout == "node1\n"
        assert t._transport is conn  # one connection for every command
        r = t.run(Command.argv("sh", "-c", "echo oops >&2; exit 4", check=False))
        assert (r.exit_code, r.stderr) == (4, "oops\n")
        with pytest.raises(
            RemoteCommandError, match=r"node1: `sh -c 'exit 5'` exited 5: \(no output\)"
        ):
            t.run(Command.argv("sh", "-c", "exit 5"))


@pytest.mark.hosts
def test_unknown_host_refused_before_auth(
    hosts: HostSet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_keys(self: SSHTransport) -> list[paramiko.PKey]:
        raise AssertionError("credentials must not be offered to an unverified host")

    monkeypatch.setattr(SSHTransport, "_keys", no_keys)
    kh = tmp_path / "empty"
    kh.write_text("")
    with pytest.raises(HostKeyError) as info:
        connect(hosts, known_hosts=kh)
    a = hosts[0].address
    assert str(info.value).startswith(f"host key for {a} (ssh-ed25519 SHA256:")
    assert f"`ssh-keyscan -p 22 {a} >> {kh}`" in str(info.value)


@pytest.mark.hosts
def test_changed_key_refused_no_connection(
    hosts: HostSet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_keys(self: SSHTransport) -> list[paramiko.PKey]:
        raise AssertionError("credentials must not be offered to a host whose key changed")

    monkeypatch.setattr(SSHTransport, "_keys", no_keys)
    other = paramiko.Ed25519Key.from_private_key_file(ssh_keygen(tmp_path / "other"))
    kh = tmp_path / "kh"
    kh.write_text(f"{hosts[0].address} ssh-ed25519 {other.get_base64()}\n")
    t = SSHTransport(
        "node1", hosts[0].address, settings(hosts, known_hosts=kh, host_key_policy="accept-new")
    )
    with pytest.raises(
        HostKeyError, match=rf"CHANGED: {kh}:1 .*ssh-keygen -R {hosts[0].address} -f {kh}"
    ):
        t.connect()
    assert t._transport is None


@pytest.mark.hosts
def test_accept_new_appends_then_strict_works(hosts: HostSet, tmp_path: Path) -> None:
    kh = tmp_path / "kh"
    with connect(hosts, known_hosts=kh, host_key_policy="accept-new") as t:
        assert t.run(Command.argv("true")).ok
    line = kh.read_text()
    assert line.startswith(f"{hosts[0].address} ssh-ed25519 ")
    assert line.split()[:2] == hosts.known_hosts.read_text().splitlines()[0].split()[:2]
    with connect(hosts, known_hosts=kh) as t:
        assert t.run(Command.argv("true")).ok
    assert kh.read_text() == line  # nothing appended twice


@pytest.mark.hosts
def test_hashed_known_hosts(hosts: HostSet, tmp_path: Path) -> None:
    kh = tmp_path / "hashed"
    shutil.copy(hosts.known_hosts, kh)
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(kh)], check=True, capture_output=True)
    assert kh.read_text().startswith("|1|")
    with connect(hosts, known_hosts=kh) as t:
        assert t.run(Command.argv("true")).ok


@pytest.mark.hosts
def test_bastion_hop(hosts: HostSet, tmp_path: Path) -> None:
    jump = Bastion(hosts[0].address, "ops", 22)
    with connect(hosts, 1, bastion=jump) as t:
        assert t.run(Command.argv("hostname")).stdout == "node2\n"
        r = t.run(Command.argv("sh", "-c", "echo $SSH_CONNECTION"))
        assert r.stdout.split()[0] == hosts[0].address  # came in through node1
    # The bastion's host key is checked too.
    kh = tmp_path / "only-node2"
    kh.write_text(hosts.known_hosts.read_text().splitlines()[1] + "\n")
    with pytest.raises(HostKeyError, match=f"host key for {hosts[0].address} "):
        connect(hosts, 1, bastion=jump, known_hosts=kh)


@pytest.mark.hosts
def test_sudo_user_and_no_sudo_user(hosts: HostSet) -> None:
    with connect(hosts, user="ops") as t:
        assert t.run(Command.argv("id", "-u", sudo=True)).stdout == "0\n"
        assert t.run(Command.argv("id", "-un")).stdout == "ops\n"
        w = write_file("/etc/mk8s-test/secret", Secret("token: abc\n"), mode=0o600)
        t.run(w)
        assert t.get("/etc/mk8s-test/secret", sudo=True) == b"token: abc\n"
        with pytest.raises(RemoteCommandError, match="cannot read /etc/mk8s-test/secret as ops"):
            t.get("/etc/mk8s-test/secret")
        with pytest.raises(RemoteCommandError, match="cannot write /etc/mk8s-test/x as ops"):
            t.put(b"x", "/etc/mk8s-test/x")
    f = hosts[0].path("/etc/mk8s-test/secret")
    assert f.read_bytes() == b"token: abc\n"
    assert f.stat().st_mode & 0o777 == 0o600
    with connect(hosts, user="nosudo") as t:
        with pytest.raises(RemoteCommandError) as info:
            t.run(Command.argv("true", sudo=True))
        assert str(info.value) == (
            "user nosudo cannot sudo without a password on node1;"
            " add a NOPASSWD sudoers rule for nosudo, or connect as root"
        )
        assert t.run(Command.argv("true")).ok  # plain commands still work


class _FullDisk(io.BytesIO):
    def write(self, data: object) -> int:
        if self.tell() > 1 << 20:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(data)  # type: ignore[arg-type]


@pytest.mark.hosts
def test_download_streams_a_file_and_names_whose_fault_a_failure_is(hosts: HostSet) -> None:
    made = "head -c 3145728 /dev/urandom > /home/ops/big && chown ops /home/ops/big"
    hosts[0].run(made, check=True)
    want = hosts[0].run("sha256sum /home/ops/big", check=True).stdout.split()[0]
    with connect(hosts, user="ops") as t:
        out = io.BytesIO()
        assert t.download("/home/ops/big", out) == 3 << 20
        assert hashlib.sha256(out.getvalue()).hexdigest() == want
        with pytest.raises(RemoteCommandError, match="cannot read /home/ops/missing as ops"):
            t.download("/home/ops/missing", io.BytesIO())
        # the local disk filling up is the local disk's error, not the node's
        with pytest.raises(OSError, match="No space left") as info:
            t.download("/home/ops/big", _FullDisk())
        assert not isinstance(info.value, RemoteCommandError)
        assert t.run(Command.argv("true")).ok  # the connection survives


@pytest.mark.hosts
def test_command_timeout_kills_channel(hosts: HostSet) -> None:
    with connect(hosts) as t:
        start = time.monotonic()
        with pytest.raises(RemoteCommandError, match=r"node1: `sleep 30` timed out after 1s"):
            t.run(Command.argv("sleep", "30", timeout=1))
        assert time.monotonic() - start < 5
        assert t.run(Command.argv("true")).ok  # the connection survives
    # ... and the command itself is gone from the node, also when run through sudo.
    with connect(hosts, user="ops") as t, pytest.raises(RemoteCommandError, match="timed out"):
        t.run(Command.script("sleep 29; true", sudo=True, timeout=1))
    assert hosts[0].run("pgrep -af 'sleep (29|30)'").stdout == ""


@pytest.mark.hosts
def test_connect_errors(hosts: HostSet, tmp_path: Path) -> None:
    with pytest.raises(ConnectError) as info:
        connect(hosts, port=2)
    assert str(info.value) == (
        f"cannot connect to {hosts[0].address}:2 (node1): Connection refused;"
        " check the address and that sshd runs"
    )
    stranger = ssh_keygen(tmp_path / "stranger")
    with pytest.raises(
        ConnectError, match=rf"root@{hosts[0].address}:22 \(node1\) refused the key"
    ):
        connect(hosts, identity_file=stranger)


@pytest.mark.hosts
def test_put_get_stat_resume(hosts: HostSet) -> None:
    data = os.urandom(5 * 1024 * 1024 + 123)
    with connect(hosts) as t:
        t.run(Command.argv("mkdir", "-p", "/var/lib/mk8s-t"))
        remote = "/var/lib/mk8s-t/blob.part"
        assert t.stat(remote) is None and t.size(remote) is None
        # A cut transfer: only the first 2 MiB arrived (plus some garbage past it).
        t.put(data[: 2 * 1024 * 1024] + b"garbage", remote, mode=0o640)
        assert t.size(remote) == 2 * 1024 * 1024 + 7
        seen: list[int] = []
        sent = t.put(data, remote, mode=0o640, offset=2 * 1024 * 1024, progress=seen.append)
        assert sent == sum(seen) == len(data) - 2 * 1024 * 1024
        st = t.stat(remote)
        assert st is not None and st.size == len(data) and st.mode == 0o640 and not st.is_dir
        assert t.get(remote) == data
        digest = t.run(Command.argv("sha256sum", remote)).stdout.split()[0]
        assert digest == hashlib.sha256(data).hexdigest()
        with pytest.raises(RemoteCommandError, match="cannot resume"):
            t.put(data, remote, offset=len(data) + 1)
        with pytest.raises(RemoteCommandError, match="cannot write /nonexistent/x as root"):
            t.put(b"x", "/nonexistent/x")
        with pytest.raises(RemoteCommandError, match="cannot read /nonexistent/x"):
            t.get("/nonexistent/x")


@pytest.mark.hosts
def test_large_file_integrity(hosts: HostSet, tmp_path: Path) -> None:
    src = tmp_path / "big"
    h = hashlib.sha256()
    with src.open("wb") as f:
        for _ in range(64):
            block = os.urandom(1024 * 1024 + 7)  # odd size: requests never align
            h.update(block)
            f.write(block)
    with connect(hosts) as t:
        t.run(Command.argv("mkdir", "-p", "/var/lib/mk8s-t"))
        t.put(src, "/var/lib/mk8s-t/big")
        out = t.run(Command.argv("sha256sum", "/var/lib/mk8s-t/big")).stdout
        assert out.split()[0] == h.hexdigest()
        # The same again through paramiko's own write path (the fallback).
        old = tr_sftp.FAST_WRITES
        tr_sftp.FAST_WRITES = False
        try:
            t.put(src, "/var/lib/mk8s-t/big2")
        finally:
            tr_sftp.FAST_WRITES = old
        out = t.run(Command.argv("sha256sum", "/var/lib/mk8s-t/big2")).stdout
        assert out.split()[0] == h.hexdigest()


@pytest.mark.hosts
def test_for_node_uses_merged_settings(hosts: HostSet, tmp_path: Path) -> None:
    from mk8s.deploy.cluster import load_cluster

    p = tmp_path / "cluster.yaml"
    p.write_text(
        "apiVersion: mk8s/v1alpha1\nkind: Cluster\nmetadata: {name: t}\nspec:\n"
        f"  ssh: {{identityFile: {hosts.identity_file}, knownHosts: {hosts.known_hosts}}}\n"
        "  nodes:\n"
        f"    - {{address: {hosts[0].address}, name: cp1, role: server}}\n"
        f"    - {{address: {hosts[1].address}, role: agent, ssh: {{user: ops}}}}\n"
    )
    c = load_cluster(p)
    with SSHTransport.for_node(c.nodes[1]) as t:
        assert t.name == hosts[1].address
        assert t.run(Command.argv("id", "-u", sudo=True)).stdout == "0\n"
        assert t.run(Command.argv("id", "-un")).stdout == "ops\n"
