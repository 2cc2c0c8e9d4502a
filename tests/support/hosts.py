"""Test hosts: real OpenSSH sshd per simulated node (docs/testing.md, "Real parts").

Each node gets
  * its own network namespace, with a veth into a bridge in the root namespace;
  * its own mount, UTS and PID namespaces: overlays on /etc, /var and /usr
    (upper dirs on the host side, so tests read what a node wrote with
    ``host.path(...)``); an empty per-node /root, /home and /opt; its own /run
    and /tmp (bind mounts).  /usr/local starts empty: an opaque directory in the
    /usr overlay, so it is *not* a mount point (install.sh would otherwise
    switch to /opt/rke2).  Opt-in per node (``usr_local=``): ``"mount"`` makes
    /usr/local a mount point (a bind mount of itself), ``"readonly"`` makes
    /usr (so /usr/local) read-only without /usr/local being a mount point,
    ``"mount-readonly"`` both; RKE2's install.sh then installs to /opt/rke2;
  * a real sshd as PID 1 of its PID namespace: killing it takes down every
    process of the node (services included), like pulling the plug;
  * root login by key, an ``ops`` user with passwordless sudo and a ``nosudo``
    user without it;
  * the ``systemctl`` / ``journalctl`` stand-ins in /usr/local/sbin and
    /usr/local/bin (before /usr/bin on sshd's root PATH and sudo's secure_path).

Needs root.  Library use::

    with start_hosts(3, workdir=tmp, prefix="mk8sx", subnet="10.77.5.0/24") as hs:
        hs.hosts[0].run("hostname")           # inside the node, no SSH (nsenter)
        hs.hosts[0].ssh("id", user="ops")     # real OpenSSH, strict host keys
        hs.hosts[0].path("/etc/rancher/rke2/config.yaml")  # what the node wrote

In tests use ``hostset_for_tests`` (or the fixtures in tests/conftest.py): it
skips when not root, or fails when MK8S_REQUIRE_HOSTS=1.

CLI: ``scripts/testhosts up N --dir DIR`` / ``status|down --dir DIR``
(also ``python -m tests.support.hosts ...``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_SUBNET = "10.77.0.0/24"
DEFAULT_PREFIX = "mk8s"
DEFAULT_BRIDGE = "mk8sbr0"
# The pytest fixtures use their own networks (10.77.100.0/24, 10.77.101.0/24, ...)
# and prefixes (mk8st0, mk8st1, ...), so a demo cluster can run beside them.
TEST_PREFIX = "mk8st"
TEST_SUBNET_BASE = 100
_MAX_TEST_SETS = 20

NODE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SUDO_USER = "ops"
NOSUDO_USER = "nosudo"
_USERS = {SUDO_USER: 2901, NOSUDO_USER: 2902}
# Overlaid paths (node path -> host-side name).  /usr covers /usr/local.
OVERLAYS = ("/etc", "/var", "/usr")
# Start empty (plain bind of DIR/upper, so host.path() looks the same as for overlays):
# the real /root and /home (shell rc files, toolchains on PATH) must not show through.
CLEAN = ("/root", "/home", "/opt")
BINDS = ("/run", "/tmp")
# /usr/local of a node: "plain" (the default: installable, not a mount point), "mount"
# (a mount point), "readonly" (read-only /usr, not a mount point), "mount-readonly".
USR_LOCAL_MODES = ("plain", "mount", "readonly", "mount-readonly")
STATE_FILE = "testhosts.json"
MARKER = "mk8s-testhost"


class HostError(RuntimeError):
    pass


def _sh(
    *args: str, check: bool = True, input: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(
        list(args),
        input=input.decode() if input is not None else None,
        capture_output=True,
        text=True,
    )
    if check and p.returncode != 0:
        raise HostError(f"{' '.join(args)}: exit {p.returncode}: {p.stderr.strip()}")
    return p


def _quiet(*args: str) -> None:
    subprocess.run(list(args), capture_output=True)


def _keygen(path: Path, comment: str) -> str:
    if path.exists():
        path.unlink()
    Path(str(path) + ".pub").unlink(missing_ok=True)
    _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path))
    return Path(str(path) + ".pub").read_text().strip()


def _write(path: Path, data: str | bytes, mode: int = 0o644, uid: int = 0, gid: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    path.write_bytes(data)
    os.chown(path, uid, gid)
    os.chmod(path, mode)


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _kill(pids: Sequence[int]) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def _wait_gone(pids: Sequence[int], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in pids:  # reap our own children
            with contextlib.suppress(OSError):
                os.waitpid(pid, os.WNOHANG)
        if not any(_pid_alive(p) for p in pids):
            return
        time.sleep(0.02)


def _netns_pids(ns: str) -> list[int]:
    p = _sh("ip", "netns", "pids", ns, check=False)
    return [int(x) for x in p.stdout.split()] if p.returncode == 0 else []


def _marked_pids(prefix: str) -> list[int]:
    """Processes whose command line carries this prefix's marker (a killed run's leftovers)."""
    tag = f"{MARKER}-{prefix}-".encode()
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                if tag in f.read():
                    out.append(int(d))
        except OSError:
            pass
    return out


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{t}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def cleanup(prefix: str, bridge: str | None = None) -> None:
    """Remove everything a (possibly killed) run with this prefix left behind."""
    _kill(_marked_pids(prefix))
    nss = _sh("ip", "-j", "netns", "list", check=False).stdout
    names = [n["name"] for n in json.loads(nss or "[]")] if nss.strip() else []
    for ns in names:
        if ns.startswith(prefix + "-"):
            pids = _netns_pids(ns)
            _kill(pids)
            _wait_gone(pids)
    links = json.loads(_sh("ip", "-j", "link", "show", check=False).stdout or "[]")
    for link in links:
        name = link.get("ifname", "")
        if name.startswith(prefix + "v") and name[len(prefix) + 1 :].isdigit():
            _quiet("ip", "link", "del", name)
    for ns in names:
        if ns.startswith(prefix + "-"):
            _quiet("ip", "netns", "del", ns)
    if bridge:
        _quiet("ip", "link", "del", bridge)


@dataclass
class Host:
    """One simulated node.  ``root`` is the host-side directory holding its layers."""

    name: str
    address: str
    ns: str
    root: Path
    veth: str
    hostset: HostSet = field(repr=False)
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    init_pid: int | None = None  # PID 1 of the node's PID namespace (sshd), as seen from here
    usr_local: str = "plain"  # one of USR_LOCAL_MODES

    # ---- files -------------------------------------------------------------
    def path(self, node_path: str) -> Path:
        """Host-side path of what the node wrote at ``node_path`` (overlay upper / bind dir).

        Only files the node created or changed exist there; unchanged files from
        the real root do not."""
        p = "/" + node_path.strip("/")
        for b in BINDS:
            if p == b or p.startswith(b + "/"):
                return self.root / b.strip("/") / p[len(b) + 1 :]
        for o in OVERLAYS + CLEAN:
            if p == o or p.startswith(o + "/"):
                return self.root / o.strip("/") / "upper" / p[len(o) + 1 :]
        raise ValueError(
            f"{node_path} is not on a per-node filesystem ({OVERLAYS + CLEAN + BINDS})"
        )

    # ---- processes ---------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.init_pid is not None and _pid_alive(self.init_pid)

    def nsenter_argv(self) -> list[str]:
        if not self.running:
            raise HostError(f"host {self.name} is not running")
        return [
            "nsenter",
            f"--target={self.init_pid}",
            "--mount",
            "--uts",
            "--net",
            "--pid",
            "--wd=/",
            "--",
            "env",
            "-i",
            f"PATH={NODE_PATH}",
            "HOME=/root",
            "USER=root",
            "LANG=C.UTF-8",
        ]

    def run(
        self,
        cmd: str | Sequence[str],
        *,
        check: bool = False,
        input: bytes | str | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` as root inside the node (no SSH; for test setup and assertions).

        A string runs under ``/bin/sh -c``.  Output is text."""
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        return subprocess.run(
            self.nsenter_argv() + argv,
            input=input.decode() if isinstance(input, bytes) else input,
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
        )

    def ssh(
        self,
        cmd: str,
        *,
        user: str = "root",
        check: bool = False,
        input: bytes | str | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` over real SSH (OpenSSH client, strict host key checking)."""
        return subprocess.run(
            [*self.hostset.ssh_argv(self, user=user), cmd],
            input=input.decode() if isinstance(input, bytes) else input,
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
        )

    def put(self, local: Path | str, remote: str, *, user: str = "root") -> None:
        """Copy a file to the node with OpenSSH scp."""
        hs = self.hostset
        subprocess.run(
            ["scp", "-q", *hs.ssh_options(mux=True), str(local), f"{user}@{self.address}:{remote}"],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start(self, timeout: float = 10.0, *, boot_units: bool = True) -> None:
        """(Re)start the node with the same disk; /run starts empty like after a boot.

        With ``boot_units`` the enabled units are started (without waiting), as
        systemd would at boot."""
        if self.running:
            return
        self._launch()
        self._wait_up(timeout, boot_units=boot_units)

    def _launch(self) -> None:
        run_dir = self.root / "run"
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(mode=0o755)
        (self.root / "tmp").mkdir(mode=0o1777, exist_ok=True)
        os.chmod(self.root / "tmp", 0o1777)
        mounts = []
        for o in OVERLAYS:
            n = o.strip("/")
            d = self.root / n
            ro = "ro," if o == "/usr" and self.usr_local == "readonly" else ""
            mounts.append(
                f"mount -t overlay {MARKER}-{self.ns}-{n} "
                f"-o {ro}lowerdir={o},upperdir={d}/upper,workdir={d}/work {o}"
            )
        if self.usr_local in ("mount", "mount-readonly"):
            # a bind of itself: a mount point whose files stay in the /usr overlay
            mounts.append("mount --bind /usr/local /usr/local")
        if self.usr_local == "mount-readonly":
            mounts.append("mount -o remount,bind,ro /usr/local")
        for c in CLEAN:
            mounts.append(f"mount --bind {self.root / c.strip('/') / 'upper'} {c}")
        for b in BINDS:
            mounts.append(f"mount --bind {self.root / b.strip('/')} {b}")
        script = "\n".join(
            [
                "set -e",
                f"# {MARKER}-{self.ns}-",
                f"hostname {self.name}",
                *mounts,
                "mkdir -p -m 0755 /run/sshd",
                f"exec /usr/sbin/sshd -D -e -f /etc/ssh/{MARKER}-{self.ns}-.conf",
            ]
        )
        log = open(self.root / "sshd.log", "ab")  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    self.ns,
                    "unshare",
                    "--mount",
                    "--uts",
                    "--pid",
                    "--fork",
                    "--mount-proc",
                    "--propagation",
                    "private",
                    "/bin/bash",
                    "-c",
                    script,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        self.init_pid = None

    def _wait_up(self, timeout: float, *, boot_units: bool) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise HostError(
                    f"host {self.name} exited at start: {(self.root / 'sshd.log').read_text()[-2000:]}"
                )
            if self.init_pid is None:
                kids = _children(self.proc.pid)
                self.init_pid = kids[0] if kids else None
            if self.init_pid is not None and _banner(self.address):
                if boot_units:
                    subprocess.Popen(
                        [*self.nsenter_argv(), "/usr/local/sbin/systemctl", "__boot"],
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    ).wait(timeout=30)
                return
            time.sleep(0.02)
        raise HostError(f"host {self.name}: sshd did not answer on {self.address}:22 in {timeout}s")

    def kill(self) -> None:
        """Take the node down at once (every process in it dies), keeping its disk."""
        pids = []
        if self.init_pid:
            pids.append(self.init_pid)
        if self.proc is not None:
            pids.append(self.proc.pid)
        pids += _netns_pids(self.ns)
        _kill(pids)
        _wait_gone(pids)
        if self.proc is not None:
            with contextlib.suppress(Exception):
                self.proc.wait(timeout=5)
        self.init_pid = None

    stop = kill


def _short_hash(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()[:10]


def _banner(address: str, port: int = 22) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5) as s:
            s.settimeout(0.5)
            return s.recv(4).startswith(b"SSH-")
    except OSError:
        return False


@dataclass
class HostSet:
    hosts: list[Host]
    workdir: Path
    known_hosts: Path
    identity_file: Path
    prefix: str
    bridge: str
    subnet: str
    gateway: str
    user: str = "root"
    sudo_user: str = SUDO_USER
    nosudo_user: str = NOSUDO_USER
    closed: bool = False

    def __enter__(self) -> HostSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getitem__(self, i: int) -> Host:
        return self.hosts[i]

    def by_name(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    def ssh_options(self, *, mux: bool = False) -> list[str]:
        """OpenSSH client options: this set's key and known_hosts, strict checking.

        ``mux`` reuses one connection per host (ControlMaster), which takes an SSH
        command from ~200 ms to ~10 ms; the masters die with the hosts."""
        extra = []
        if mux:
            extra = [
                "-o", "ControlMaster=auto",
                "-o", f"ControlPath=/tmp/.mk8scm-{_short_hash(str(self.workdir))}-%C",
                "-o", "ControlPersist=30",
            ]  # fmt: skip
        return [
            *extra,
            "-F", "/dev/null",
            "-i", str(self.identity_file),
            "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=5",
            "-o", "LogLevel=ERROR",
        ]  # fmt: skip

    def ssh_argv(self, host: Host, *, user: str = "root", mux: bool = True) -> list[str]:
        return ["ssh", *self.ssh_options(mux=mux), f"{user}@{host.address}"]

    def summary(self) -> dict[str, Any]:
        return {
            "prefix": self.prefix,
            "bridge": self.bridge,
            "subnet": self.subnet,
            "gateway": self.gateway,
            "workdir": str(self.workdir),
            "known_hosts": str(self.known_hosts),
            "identity_file": str(self.identity_file),
            "user": self.user,
            "sudo_user": self.sudo_user,
            "nosudo_user": self.nosudo_user,
            "hosts": [
                {
                    "name": h.name,
                    "address": h.address,
                    "ns": h.ns,
                    "root": str(h.root),
                    "usr_local": h.usr_local,
                }
                for h in self.hosts
            ],
        }

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        pids: list[int] = []
        for h in self.hosts:  # kill every node at once, then wait
            pids += [p for p in (h.init_pid, h.proc.pid if h.proc else None) if p]
            pids += _netns_pids(h.ns)
        _kill(pids)
        _wait_gone(pids)
        for h in self.hosts:
            h.init_pid = None
            if h.proc is not None:
                with contextlib.suppress(Exception):
                    h.proc.wait(timeout=5)
        cleanup(self.prefix, self.bridge)
        for sock in Path("/tmp").glob(f".mk8scm-{_short_hash(str(self.workdir))}-*"):
            sock.unlink(missing_ok=True)


def _users_files(real_etc: Path) -> dict[str, str]:
    passwd = (real_etc / "passwd").read_text()
    group = (real_etc / "group").read_text()
    shadow = (real_etc / "shadow").read_text() if (real_etc / "shadow").exists() else ""
    for user, uid in _USERS.items():
        passwd += f"{user}:x:{uid}:{uid}::/home/{user}:/bin/bash\n"
        group += f"{user}:x:{uid}:\n"
        # '*': no password; with UsePAM no, sshd refuses '!'-locked accounts.
        shadow += f"{user}:*:19000:0:99999:7:::\n"
    return {"passwd": passwd, "group": group, "shadow": shadow}


def _sshd_config(ns: str) -> str:
    return (
        f"# {MARKER}\n"
        "Port 22\nListenAddress 0.0.0.0\n"
        f"HostKey /etc/ssh/{MARKER}-{ns}-host_ed25519_key\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
        "AuthorizedKeysFile .ssh/authorized_keys\n"
        "UsePAM no\nUseDNS no\nPrintMotd no\nPrintLastLog no\nPidFile none\n"
        "Subsystem sftp internal-sftp\n"
        "MaxStartups 100:30:200\nMaxSessions 50\n"
        "LogLevel INFO\n"
    )


def start_hosts(
    n: int,
    *,
    workdir: Path | str,
    subnet: str = DEFAULT_SUBNET,
    prefix: str = DEFAULT_PREFIX,
    bridge: str | None = None,
    names: Sequence[str] | None = None,
    first_host: int = 11,
    usr_local: str | Mapping[str, str] | None = None,
) -> HostSet:
    """Bring up ``n`` hosts named node1..nodeN (or ``names``) at .11, .12, ... of ``subnet``.

    ``usr_local`` opts nodes into another /usr/local (USR_LOCAL_MODES): one mode for
    every node, or ``{node name: mode}``; nodes not named keep ``"plain"``.

    Leftovers of an earlier run with the same prefix are removed first.  On any
    failure everything is torn down again."""
    if os.geteuid() != 0:
        raise HostError("test hosts need root (network namespaces, mounts)")
    bridge = bridge or (prefix + "br0")
    if len(bridge) > 15 or len(prefix) + 4 > 15:
        raise HostError("bridge/prefix too long for an interface name")
    names = list(names) if names else [f"node{i + 1}" for i in range(n)]
    if len(names) != n or len(set(names)) != n:
        raise HostError("need n unique names")
    if isinstance(usr_local, str):
        modes = dict.fromkeys(names, usr_local)
    else:
        modes = dict(usr_local or {})
        if set(modes) - set(names):
            raise HostError(f"usr_local names unknown nodes: {sorted(set(modes) - set(names))}")
    for mode in modes.values():
        if mode not in USR_LOCAL_MODES:
            raise HostError(f"usr_local mode {mode!r} is not one of {USR_LOCAL_MODES}")
    net = ipaddress.ip_network(subnet)
    gateway = str(net.network_address + 1)
    workdir = Path(workdir).resolve()
    for o in OVERLAYS + CLEAN:
        if str(workdir) == o or str(workdir).startswith(o + "/"):
            raise HostError(f"workdir {workdir} must not be under {o} (it is overlaid per node)")
    workdir.mkdir(parents=True, exist_ok=True)

    cleanup(prefix, bridge)
    from tests.support import standin  # late: keeps `hosts` importable on its own

    systemctl = standin.systemctl_script()
    journalctl = standin.journalctl_script()

    hs = HostSet(
        hosts=[],
        workdir=workdir,
        known_hosts=workdir / "known_hosts",
        identity_file=workdir / "id_ed25519",
        prefix=prefix,
        bridge=bridge,
        subnet=str(net),
        gateway=gateway,
    )
    try:
        client_pub = _keygen(hs.identity_file, f"{MARKER}-{prefix}")
        _sh("ip", "link", "add", bridge, "type", "bridge")
        _sh("ip", "addr", "add", f"{gateway}/{net.prefixlen}", "dev", bridge)
        _sh("ip", "link", "set", bridge, "up")
        users = _users_files(Path("/etc"))
        hosts_lines = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        addrs = [str(net.network_address + first_host + i) for i in range(n)]
        hosts_lines += "".join(f"{a}\t{nm}\n" for a, nm in zip(addrs, names, strict=True))
        known = []
        for i, (name, addr) in enumerate(zip(names, addrs, strict=True)):
            ns = f"{prefix}-{name}"
            root = workdir / name
            shutil.rmtree(root, ignore_errors=True)
            h = Host(name, addr, ns, root, f"{prefix}v{first_host + i}", hs)
            h.usr_local = modes.get(name, "plain")
            hs.hosts.append(h)
            for o in OVERLAYS:
                for sub in ("upper", "work"):
                    (root / o.strip("/") / sub).mkdir(parents=True, exist_ok=True)
            for c in CLEAN:
                (root / c.strip("/") / "upper").mkdir(parents=True, mode=0o755)
            etc = root / "etc" / "upper"
            _write(etc / "hostname", name + "\n")
            _write(etc / "hosts", hosts_lines)
            _write(etc / "passwd", users["passwd"])
            _write(etc / "group", users["group"])
            _write(etc / "shadow", users["shadow"], 0o640, gid=_gid("shadow"))
            _write(etc / "sudoers.d" / SUDO_USER, f"{SUDO_USER} ALL=(ALL) NOPASSWD:ALL\n", 0o440)
            _write(etc / "ssh" / f"{MARKER}-{ns}-.conf", _sshd_config(ns))
            host_pub = _keygen(etc / "ssh" / f"{MARKER}-{ns}-host_ed25519_key", name)
            known.append(f"{addr} {' '.join(host_pub.split()[:2])}\n")
            rootdir = root / "root" / "upper"
            os.chmod(rootdir, 0o700)
            _skel(rootdir, 0)
            _write(rootdir / ".ssh" / "authorized_keys", client_pub + "\n", 0o600)
            os.chmod(rootdir / ".ssh", 0o700)
            for user, uid in _USERS.items():
                home = root / "home" / "upper" / user
                home.mkdir(mode=0o755)
                os.chown(home, uid, uid)
                _skel(home, uid)
                _write(home / ".ssh" / "authorized_keys", client_pub + "\n", 0o600, uid, uid)
                os.chown(home / ".ssh", uid, uid)
                os.chmod(home / ".ssh", 0o700)
            # /usr/local starts empty: an opaque dir in the /usr overlay (not a mount point).
            local = root / "usr" / "upper" / "local"
            local.mkdir(mode=0o755)
            os.setxattr(local, "trusted.overlay.opaque", b"y")
            for sub in ("bin", "sbin", "lib", "share", "etc", "include", "src"):
                (local / sub).mkdir(mode=0o755)
            _write(local / "sbin" / "systemctl", systemctl, 0o755)
            _write(local / "bin" / "journalctl", journalctl, 0o755)
            _sh("ip", "netns", "add", ns)
            _sh("ip", "link", "add", h.veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _sh("ip", "link", "set", h.veth, "master", bridge, "up")
            nsx = ("ip", "netns", "exec", ns)
            _sh(*nsx, "ip", "addr", "add", f"{addr}/{net.prefixlen}", "dev", "eth0")
            _sh(*nsx, "ip", "link", "set", "eth0", "up")
            _sh(*nsx, "ip", "link", "set", "lo", "up")
            _sh(*nsx, "ip", "route", "add", "default", "via", gateway)
        hs.known_hosts.write_text("".join(known))
        for h in hs.hosts:  # launch all, then wait for all
            h._launch()
        for h in hs.hosts:
            h._wait_up(10.0, boot_units=False)
        return hs
    except BaseException:
        hs.close()
        raise


def _skel(home: Path, uid: int) -> None:
    skel = Path("/etc/skel")
    for f in skel.iterdir() if skel.is_dir() else []:
        if f.is_file():
            _write(home / f.name, f.read_bytes(), 0o644, uid, uid)


def _gid(group: str) -> int:
    import grp

    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        return 0


# ---- pytest glue (the fixture in tests/conftest.py is a thin wrapper) ---------------
def require_root_or_skip() -> None:
    """Skip when not root, or fail when MK8S_REQUIRE_HOSTS=1 (CI)."""
    import pytest

    if os.geteuid() != 0:
        reason = "test hosts need root (network namespaces, overlay mounts, sshd)"
        if os.environ.get("MK8S_REQUIRE_HOSTS") == "1":
            pytest.fail(f"MK8S_REQUIRE_HOSTS=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    missing = [t for t in ("sshd", "ssh", "ip", "unshare", "nsenter", "sudo") if not _which(t)]
    if missing:
        msg = f"test hosts need {', '.join(missing)} (apt-get install openssh-server sudo iproute2)"
        if os.environ.get("MK8S_REQUIRE_HOSTS") == "1":
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)


def _which(tool: str) -> bool:
    return shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is not None


_test_sets = 0
_session_lock: Any = None
SESSION_LOCK = "/run/mk8s-testhosts.lock"


def cleanup_test_leftovers() -> None:
    """Remove what killed test sessions left (every prefix hostset_for_tests uses)."""
    for i in range(_MAX_TEST_SETS):
        cleanup(f"{TEST_PREFIX}{i}", f"{TEST_PREFIX}{i}br")


@contextlib.contextmanager
def hostset_for_tests(n: int, workdir: Path, **kw: Any) -> Iterator[HostSet]:
    """A HostSet for one test or module: skips (or fails under MK8S_REQUIRE_HOSTS=1)
    when not root; each call gets its own prefix, bridge and subnet
    (mk8stN, mk8stNbr, 10.77.(100+N).0/24) so sets used at once do not collide."""
    global _test_sets, _session_lock
    require_root_or_skip()
    if _test_sets == 0:
        # One test session at a time owns the test prefixes: a second session (another
        # pytest, a benchmark) waits here instead of tearing down the first one's hosts.
        import fcntl

        _session_lock = open(SESSION_LOCK, "w")  # noqa: SIM115  (held for the process)
        fcntl.flock(_session_lock, fcntl.LOCK_EX)
        cleanup_test_leftovers()
    i = _test_sets % _MAX_TEST_SETS
    _test_sets += 1
    kw.setdefault("prefix", f"{TEST_PREFIX}{i}")
    kw.setdefault("bridge", f"{TEST_PREFIX}{i}br")
    kw.setdefault("subnet", f"10.77.{TEST_SUBNET_BASE + i}.0/24")
    hs = start_hosts(n, workdir=workdir, **kw)
    try:
        yield hs
    finally:
        hs.close()


# ---- CLI: scripts/testhosts ---------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="testhosts", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="bring up N hosts; they keep running after this exits")
    up.add_argument("n", type=int)
    up.add_argument("--dir", required=True, type=Path)
    up.add_argument("--subnet", default=DEFAULT_SUBNET)
    up.add_argument("--prefix", default=DEFAULT_PREFIX)
    up.add_argument("--bridge", default=None)
    up.add_argument("--names", default=None, help="comma-separated node names")
    up.add_argument(
        "--usr-local",
        default=None,
        metavar="MODE|NAME=MODE,...",
        help=f"/usr/local of the nodes: {', '.join(USR_LOCAL_MODES)} (default plain)",
    )
    down = sub.add_parser("down", help="tear down what `up --dir DIR` started")
    down.add_argument("--dir", required=True, type=Path)
    st = sub.add_parser("status", help="print the summary of `up --dir DIR`")
    st.add_argument("--dir", required=True, type=Path)
    a = ap.parse_args(argv)
    if a.cmd == "up":
        names = a.names.split(",") if a.names else None
        usr_local: str | dict[str, str] | None = a.usr_local
        if a.usr_local and "=" in a.usr_local:
            usr_local = dict(kv.split("=", 1) for kv in a.usr_local.split(","))
        hs = start_hosts(
            a.n,
            workdir=a.dir,
            subnet=a.subnet,
            prefix=a.prefix,
            bridge=a.bridge,
            names=names,
            usr_local=usr_local,
        )
        summary = hs.summary()
        (hs.workdir / STATE_FILE).write_text(json.dumps(summary, indent=2) + "\n")
        print(json.dumps(summary, indent=2))
        return 0
    state = a.dir / STATE_FILE
    if not state.exists():
        print(f"testhosts: no {STATE_FILE} in {a.dir}", file=sys.stderr)
        return 1
    summary = json.loads(state.read_text())
    if a.cmd == "status":
        print(json.dumps(summary, indent=2))
        return 0
    cleanup(summary["prefix"], summary["bridge"])
    state.unlink()
    print(f"testhosts: {len(summary['hosts'])} hosts down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
