"""Run commands and move files on one node: over SSH (paramiko) or on this machine.

A :class:`Transport` executes :class:`~mk8s.deploy.command.Command` values and knows
nothing of RKE2. :class:`SSHTransport` keeps one SSH connection and one SFTP session
per node for all its commands and transfers, checks host keys strictly by default,
and turns every failure into a one-line :mod:`mk8s.errors` message naming the node
and the fix. :class:`LocalTransport` runs on this machine (tests, local runs).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import getpass
import hashlib
import os
import re
import select
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import paramiko

from mk8s.deploy.cluster import Node, SSHSettings
from mk8s.deploy.command import Command, as_user
from mk8s.errors import ConnectError, HostKeyError, RemoteCommandError
from mk8s.files import read_regular

PASSPHRASE_ENV = "MK8S_SSH_PASSPHRASE"  # noqa: S105  (a variable name, not a secret)
DEFAULT_CONNECT_TIMEOUT = 15.0
# OpenSSH's sftp-server refuses messages over 256 KiB (SFTP_MAX_MSG_LENGTH); a write
# request carries ~30 bytes of header, so 255 KiB of data per request is the most.
SFTP_CHUNK = 255 * 1024
# GCM first: one AEAD pass instead of AES-CTR + HMAC (roughly 2x upload throughput).
PREFERRED_CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-ctr",
    "aes256-ctr",
)
WINDOW_SIZE = 16 * 1024 * 1024
_SUDO_PASSWORD = ("sudo: a password is required", "sudo: a terminal is required")

Progress = Callable[[int], None]
"""Called with the number of bytes just sent (an increment, not a total)."""

PassphrasePrompt = Callable[[str], str]
"""Asked for an identity file's passphrase; gets the prompt text, returns the answer."""


@dataclass(frozen=True)
class Result:
    """What a command did. ``stdout``/``stderr`` are decoded UTF-8 (errors replaced)."""

    exit_code: int
    stdout: str
    stderr: str
    duration: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


@dataclass(frozen=True)
class RemoteStat:
    size: int
    mode: int  # permission bits only
    mtime: float
    is_dir: bool


class Transport(ABC):
    """Commands and files on one node. Use as a context manager or call close().

    ``name`` is the node's name in messages; ``user`` the login user (commands with
    ``sudo=True`` get ``sudo -n`` in front when it is not root).
    """

    def __init__(self, name: str, user: str) -> None:
        self.name = name
        self.user = user

    def __enter__(self) -> Transport:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abstractmethod
    def connect(self) -> None:
        """Open the connection (idempotent). Raises ConnectError / HostKeyError."""

    @abstractmethod
    def close(self) -> None:
        """Close the connection; never raises. connect() may be called again."""

    def run(self, cmd: Command) -> Result:
        """Run ``cmd`` (with ``sudo -n`` added for a non-root user) and return its Result.

        Raises RemoteCommandError when it times out (the channel is killed), when sudo
        needs a password, or when ``cmd.check`` is set and it exits non-zero; messages
        show the command masked and the last line of its stderr with secrets masked.
        Raises ConnectError when the connection is lost.
        """
        real = as_user(cmd, self.user)
        result = self._execute(real)
        if (
            cmd.sudo
            and self.user != "root"
            and result.exit_code == 1
            and any(s in result.stderr for s in _SUDO_PASSWORD)
        ):
            raise RemoteCommandError(
                f"user {self.user} cannot sudo without a password on {self.name}",
                f"add a NOPASSWD sudoers rule for {self.user}, or connect as root",
            )
        if cmd.check and result.exit_code != 0:
            tail = cmd.mask(result.stderr.strip() or result.stdout.strip()).splitlines()
            last = tail[-1] if tail else "(no output)"
            raise RemoteCommandError(
                f"{self.name}: `{real.display()}` exited {result.exit_code}: {last}",
                None,
            )
        return result

    def _timed_out(self, cmd: Command) -> RemoteCommandError:
        return RemoteCommandError(
            f"{self.name}: `{cmd.display()}` timed out after {cmd.timeout:g}s and was stopped",
            "check the node (load, disk, a hung service) and run again",
        )

    @abstractmethod
    def _execute(self, cmd: Command) -> Result:
        """Run the already user-adjusted command; raise only for timeout/connection."""

    @abstractmethod
    def put(
        self,
        source: Path | bytes,
        remote_path: str,
        *,
        mode: int = 0o644,
        progress: Progress | None = None,
        offset: int = 0,
    ) -> int:
        """Write ``source`` (a local file or bytes) to ``remote_path`` as the login user.

        The file gets ``mode`` before any byte is written. With ``offset`` > 0 the
        remote file is kept up to ``offset`` (cut there if longer) and the source's
        bytes from ``offset`` on are appended: resume after a cut transfer. Returns
        the number of bytes sent. Raises RemoteCommandError when the remote file
        cannot be written (directory missing, permission) or is shorter than
        ``offset``; OSError when the local file cannot be read.
        """

    @abstractmethod
    def get(self, remote_path: str, *, sudo: bool = False) -> bytes:
        """The content of ``remote_path``. ``sudo``: read it as root (``sudo -n cat``)
        when the login user is not root. Raises RemoteCommandError when it is missing
        or unreadable."""

    @abstractmethod
    def stat(self, remote_path: str) -> RemoteStat | None:
        """Size, mode and mtime of ``remote_path``, or None when it does not exist.
        Raises RemoteCommandError for any other failure (e.g. permission)."""

    def size(self, remote_path: str) -> int | None:
        """Size in bytes of ``remote_path``, or None when it does not exist."""
        st = self.stat(remote_path)
        return None if st is None else st.size


def _chunks(source: Path | bytes, offset: int, size: int) -> Iterator[bytes | memoryview]:
    """Yield the source's bytes from ``offset`` in pieces of at most ``size``."""
    if isinstance(source, bytes | bytearray | memoryview):
        view = memoryview(source)[offset:]
        for i in range(0, len(view), size):
            yield view[i : i + size]
        return
    with Path(source).open("rb") as f:
        f.seek(offset)
        while chunk := f.read(size):
            yield chunk


# ------------------------------------------------------------------------------ local


class LocalTransport(Transport):
    """Runs commands with ``sh -c`` on this machine and copies files locally."""

    def __init__(self, name: str = "localhost", user: str | None = None) -> None:
        if user is None:
            user = "root" if os.geteuid() == 0 else getpass.getuser()
        super().__init__(name, user)

    def connect(self) -> None:
        pass

    def close(self) -> None:
        pass

    def _execute(self, cmd: Command) -> Result:
        start = time.monotonic()
        proc = subprocess.Popen(
            ["/bin/sh", "-c", cmd.render()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # so a timeout can kill the whole process group
        )
        try:
            out, err = proc.communicate(cmd.stdin_bytes() or b"", timeout=cmd.timeout)
        except subprocess.TimeoutExpired as e:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            proc.communicate()
            raise self._timed_out(cmd) from e
        return Result(
            proc.returncode,
            out.decode("utf-8", "replace"),
            err.decode("utf-8", "replace"),
            time.monotonic() - start,
        )

    def put(
        self,
        source: Path | bytes,
        remote_path: str,
        *,
        mode: int = 0o644,
        progress: Progress | None = None,
        offset: int = 0,
    ) -> int:
        target = Path(remote_path)
        try:
            f: IO[bytes]
            if offset:
                have = target.stat().st_size
                if have < offset:
                    raise RemoteCommandError(
                        f"{self.name}: cannot resume {remote_path} at byte {offset}:"
                        f" it has only {have}",
                        "upload it again from the start",
                    )
                f = target.open("r+b")
                f.truncate(offset)
                f.seek(offset)
            else:
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
                f = os.fdopen(fd, "wb")
            with f:
                os.chmod(target, mode)
                sent = 0
                for chunk in _chunks(source, offset, 1 << 20):
                    f.write(chunk)
                    sent += len(chunk)
                    if progress:
                        progress(len(chunk))
            return sent
        except OSError as e:
            raise RemoteCommandError(
                f"{self.name}: cannot write {remote_path}: {e.strerror or e}",
                "check that the directory exists and is writable",
            ) from e

    def get(self, remote_path: str, *, sudo: bool = False) -> bytes:
        if sudo and self.user != "root":
            return _get_with_sudo(self, remote_path)
        try:
            return Path(remote_path).read_bytes()
        except OSError as e:
            raise RemoteCommandError(
                f"{self.name}: cannot read {remote_path}: {e.strerror or e}", None
            ) from e

    def stat(self, remote_path: str) -> RemoteStat | None:
        try:
            st = os.stat(remote_path)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise RemoteCommandError(
                f"{self.name}: cannot stat {remote_path}: {e.strerror or e}", None
            ) from e
        return RemoteStat(
            st.st_size, stat.S_IMODE(st.st_mode), st.st_mtime, stat.S_ISDIR(st.st_mode)
        )


def _get_with_sudo(t: Transport, remote_path: str) -> bytes:
    # `base64` keeps arbitrary bytes intact through the text Result.
    r = t.run(Command.argv("base64", "-w0", remote_path, sudo=True, timeout=120.0))
    return base64.b64decode(r.stdout)


# -------------------------------------------------------------------------- host keys


def known_hosts_name(address: str, port: int) -> str:
    """How OpenSSH names a host in known_hosts: ``addr`` or ``[addr]:port``."""
    return address if port == 22 else f"[{address}]:{port}"


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style ``SHA256:...`` fingerprint of a public key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


MAX_KNOWN_HOSTS = 64 << 20


def _glob(pattern: str, hostname: str) -> bool:
    """OpenSSH's host pattern: ``*`` and ``?`` wildcards, case-insensitive (``[`` is
    literal: ``[host]:port`` names are not character classes)."""
    rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, hostname, re.IGNORECASE | re.DOTALL) is not None


def _host_matches(patterns: Sequence[str], hostname: str) -> bool:
    """Whether a known_hosts line's comma-separated patterns name ``hostname``.

    As in OpenSSH: a hashed entry matches its one host; otherwise some pattern must
    match and no negated (``!pattern``) one may: ``!host`` alone never matches.
    """
    positive = False
    for pattern in patterns:
        if pattern.startswith("|1|"):
            positive = positive or paramiko.HostKeys.hash_host(hostname, pattern) == pattern
        elif pattern.startswith("!"):
            if _glob(pattern[1:], hostname):
                return False
        elif _glob(pattern, hostname):
            positive = True
    return positive


@dataclass(frozen=True)
class KnownHost:
    """One known_hosts line that names the host: its key, and whether it is revoked."""

    line: int
    key: paramiko.PKey
    revoked: bool = False


def _known_keys(path: Path, hostname: str) -> list[KnownHost]:
    """Every known_hosts entry for ``hostname`` (plain, hashed, wildcard, ``@revoked``).

    ``@cert-authority`` lines and lines paramiko cannot parse (unknown key types) are
    skipped, as OpenSSH skips what it does not understand."""
    found: list[KnownHost] = []
    try:
        data = read_regular(
            path, what="known_hosts file", max_size=MAX_KNOWN_HOSTS, error=HostKeyError
        )
    except HostKeyError as e:
        if isinstance(e.__cause__, FileNotFoundError):
            return found
        raise
    for lineno, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        line = line.strip()
        revoked = False
        if line.startswith("@revoked"):
            revoked, line = True, line[len("@revoked") :].strip()
        if not line or line.startswith(("#", "@")):
            continue
        fields = line.split()
        if len(fields) < 3 or not _host_matches(fields[0].split(","), hostname):
            continue
        try:
            entry = paramiko.hostkeys.HostKeyEntry.from_line(line, lineno)
        except (paramiko.SSHException, ValueError, TypeError, IndexError, binascii.Error):
            continue
        if entry is None or entry.key is None:
            continue
        found.append(KnownHost(lineno, entry.key, revoked))
    return found


_append_lock = threading.Lock()


def _append_known_host(path: Path, hostname: str, key: paramiko.PKey) -> None:
    line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
    with _append_lock:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as f:
            f.write(line)


def check_host_key(
    address: str, port: int, key: paramiko.PKey, known_hosts: Path, policy: str
) -> None:
    """Accept ``key`` for ``address:port`` or raise HostKeyError (nothing was sent yet).

    A key equal to a known one passes. A different key of a type known for the host
    is CHANGED: always refused, naming the file and line and the ``ssh-keygen -R``
    fix. An unknown host is refused under ``strict`` and appended to ``known_hosts``
    under ``accept-new``. A host known only under other key types is refused too.
    """
    hostname = known_hosts_name(address, port)
    entries = _known_keys(known_hosts, hostname)
    for e in entries:
        if e.revoked and e.key == key:
            raise HostKeyError(
                f"host key for {hostname} ({key.get_name()} {fingerprint(key)}) is REVOKED"
                f" in {known_hosts}:{e.line}; not connecting",
                "the host offers a key marked @revoked: reinstall its host keys, or remove"
                " the marker if it was a mistake",
            )
    known = [(e.line, e.key) for e in entries if not e.revoked]
    if any(k == key for _, k in known):
        return
    same_type = [(n, k) for n, k in known if k.get_name() == key.get_name()]
    if same_type:
        lineno, old = same_type[0]
        raise HostKeyError(
            f"host key for {hostname} CHANGED: {known_hosts}:{lineno} has"
            f" {old.get_name()} {fingerprint(old)} but the host offers {fingerprint(key)};"
            " not connecting",
            f"if the host was reinstalled, run `ssh-keygen -R {hostname} -f {known_hosts}`"
            " and check the new fingerprint; otherwise someone may be intercepting"
            " the connection",
        )
    if known:
        types = ", ".join(sorted({k.get_name() for _, k in known}))
        raise HostKeyError(
            f"{hostname} offers a {key.get_name()} host key ({fingerprint(key)}) but"
            f" {known_hosts}:{known[0][0]} knows it only by {types}; not connecting",
            f"check the host, then add its key with `ssh-keyscan -p {port} {address}"
            f" >> {known_hosts}`",
        )
    if policy == "accept-new":
        _append_known_host(known_hosts, hostname, key)
        return
    raise HostKeyError(
        f"host key for {hostname} ({key.get_name()} {fingerprint(key)}) is not in {known_hosts}",
        f"add it with `ssh-keyscan -p {port} {address} >> {known_hosts}` after checking"
        " its fingerprint, or set ssh.hostKeyPolicy: accept-new",
    )


# ------------------------------------------------------------------------ identities

_identity_cache: dict[tuple[str, float], paramiko.PKey] = {}
_identity_lock = threading.Lock()


def _tty_prompt(text: str) -> str:
    return getpass.getpass(text)


def load_identity(path: Path, prompt: PassphrasePrompt | None = None) -> paramiko.PKey:
    """Load a private key, decrypting it with ``MK8S_SSH_PASSPHRASE`` or ``prompt``.

    Without a prompt, a terminal is asked; with no terminal either, ConnectError says
    to set the variable. Decrypted keys are cached per file (and mtime) for this
    process, so many nodes ask once. Raises ConnectError for an unreadable or
    malformed file and for a wrong passphrase.
    """
    with _identity_lock:
        try:
            cache_key = (str(path), path.stat().st_mtime)
        except OSError as e:
            raise ConnectError(
                f"cannot read identity file {path}: {e.strerror or e}",
                "fix ssh.identityFile, or remove it to use the ssh-agent",
            ) from e
        if cache_key in _identity_cache:
            return _identity_cache[cache_key]
        passphrase = os.environ.get(PASSPHRASE_ENV)
        try:
            key = _load_key(path, passphrase)
        except paramiko.PasswordRequiredException as e:
            if prompt is None:
                if not (sys.stdin.isatty() and sys.stderr.isatty()):
                    raise ConnectError(
                        f"identity file {path} is encrypted and there is no terminal to ask"
                        " for its passphrase",
                        f"set {PASSPHRASE_ENV}, or load the key into ssh-agent and remove"
                        " ssh.identityFile",
                    ) from e
                prompt = _tty_prompt
            key = _load_key(path, prompt(f"Passphrase for {path}: "))
        _identity_cache[cache_key] = key
        return key


def _load_key(path: Path, passphrase: str | None) -> paramiko.PKey:
    try:
        # from_path wants bytes (cryptography does the decryption).
        secret = None if passphrase is None else passphrase.encode()
        return paramiko.PKey.from_path(path, cast(Any, secret))
    except paramiko.PasswordRequiredException:
        raise
    except (paramiko.SSHException, ValueError, TypeError) as e:
        # PKey.from_path reports an encrypted OpenSSH-format key as a plain
        # SSHException ("Key is password-protected, but password was not provided").
        if passphrase is None and "password-protected" in str(e):
            raise paramiko.PasswordRequiredException(str(e)) from e
        if passphrase is not None:
            raise ConnectError(
                f"cannot load identity file {path}: {e}",
                f"check the passphrase ({PASSPHRASE_ENV} or the prompt) and the file",
            ) from e
        raise ConnectError(
            f"identity file {path} is not a usable private key: {e}",
            "point ssh.identityFile at an OpenSSH or PEM private key",
        ) from e
    except OSError as e:
        raise ConnectError(f"cannot read identity file {path}: {e.strerror or e}", None) from e


# ------------------------------------------------------------------------------- ssh


class SSHTransport(Transport):
    """One node over SSH: one connection, one SFTP session, many channels.

    ``settings`` carries user, port, identity, known_hosts, policy and bastion (see
    :class:`~mk8s.deploy.cluster.SSHSettings`). Thread-safe for ``run`` (each call is
    its own channel); transfers share one SFTP session and are serialised.
    """

    def __init__(
        self,
        name: str,
        address: str,
        settings: SSHSettings,
        *,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        passphrase_prompt: PassphrasePrompt | None = None,
    ) -> None:
        super().__init__(name, settings.user)
        self.address = address
        self.settings = settings
        self.connect_timeout = connect_timeout
        self.passphrase_prompt = passphrase_prompt
        self._transport: paramiko.Transport | None = None
        self._bastion: SSHTransport | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._lock = threading.Lock()
        self._sftp_lock = threading.Lock()

    @classmethod
    def for_node(cls, node: Node, **kw: Any) -> SSHTransport:
        """The transport for a cluster.yaml node (its merged ssh settings)."""
        return cls(node.name, node.address, node.ssh, **kw)

    @property
    def where(self) -> str:
        return f"{self.address}:{self.settings.port}"

    @property
    def cipher(self) -> str | None:
        """The negotiated cipher (for benchmarks and debug logs)."""
        t = self._transport
        return None if t is None else getattr(t, "remote_cipher", None)

    # ------------------------------------------------------------ connection
    def connect(self) -> None:
        """Connect, check the host key, authenticate (idempotent).

        Raises ConnectError (unreachable, handshake, authentication, identity file)
        or HostKeyError (unknown or changed key: no credentials are sent then).
        """
        with self._lock:
            if self._transport is not None and self._transport.is_active():
                return
            self._close_locked()
            sock = self._open_socket()
            try:
                self._transport = self._handshake(sock)
                self._authenticate(self._transport)
            except BaseException:
                self._close_locked()
                with contextlib.suppress(Exception):
                    sock.close()
                raise

    def _open_socket(self) -> socket.socket | paramiko.Channel:
        s = self.settings
        if s.bastion is None:
            try:
                sock = socket.create_connection(
                    (self.address, s.port), timeout=self.connect_timeout
                )
            except OSError as e:
                reason = e.strerror or str(e) or type(e).__name__
                if isinstance(e, TimeoutError | socket.timeout):
                    reason = f"timed out after {self.connect_timeout:g}s"
                raise ConnectError(
                    f"cannot connect to {self.where} ({self.name}): {reason}",
                    "check the address and that sshd runs",
                ) from e
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        b = s.bastion
        jump = SSHTransport(
            f"bastion {b.address}",
            b.address,
            SSHSettings(
                user=b.user,
                port=b.port,
                identity_file=s.identity_file,
                known_hosts=s.known_hosts,
                host_key_policy=s.host_key_policy,
            ),
            connect_timeout=self.connect_timeout,
            passphrase_prompt=self.passphrase_prompt,
        )
        jump.connect()
        self._bastion = jump
        assert jump._transport is not None
        try:
            return jump._transport.open_channel(
                "direct-tcpip",
                (self.address, s.port),
                ("127.0.0.1", 0),
                timeout=self.connect_timeout,
            )
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise ConnectError(
                f"cannot connect to {self.where} ({self.name}) through bastion"
                f" {b.address}:{b.port}: {e}",
                "check the address, that sshd runs, and that the bastion may reach it",
            ) from e

    def _handshake(self, sock: socket.socket | paramiko.Channel) -> paramiko.Transport:
        s = self.settings
        t = paramiko.Transport(sock, default_window_size=WINDOW_SIZE, default_max_packet_size=32768)
        opts = t.get_security_options()
        supported = set(opts.ciphers)
        opts.ciphers = tuple(
            [c for c in PREFERRED_CIPHERS if c in supported]
            + [c for c in opts.ciphers if c not in PREFERRED_CIPHERS]
        )
        # Ask for the key types known_hosts has for this host first, like OpenSSH,
        # so a host with several keys is checked against the one we know.
        hostname = known_hosts_name(self.address, s.port)
        known_types = [
            e.key.get_name() for e in _known_keys(s.known_hosts, hostname) if not e.revoked
        ]
        if known_types:
            types = list(opts.key_types)
            opts.key_types = tuple(
                [k for k in types if k in known_types] + [k for k in types if k not in known_types]
            )
        try:
            t.start_client(timeout=self.connect_timeout)
        except (paramiko.SSHException, OSError, EOFError) as e:
            t.close()
            raise ConnectError(
                f"SSH handshake with {self.where} ({self.name}) failed: {e or type(e).__name__}",
                "check that the port is sshd's and that it accepts modern algorithms",
            ) from e
        key = t.get_remote_server_key()
        try:
            check_host_key(self.address, s.port, key, s.known_hosts, s.host_key_policy)
        except HostKeyError:
            t.close()
            raise
        return t

    def _keys(self) -> list[paramiko.PKey]:
        if self.settings.identity_file is not None:
            return [load_identity(self.settings.identity_file, self.passphrase_prompt)]
        try:
            agent_keys: list[paramiko.PKey] = list(paramiko.Agent().get_keys())
        except paramiko.SSHException as e:
            raise ConnectError(
                f"cannot use ssh-agent for {self.name}: {e}",
                "set ssh.identityFile, or start ssh-agent and ssh-add a key",
            ) from e
        if not agent_keys:
            raise ConnectError(
                f"no ssh.identityFile for {self.name} and ssh-agent has no keys",
                "set ssh.identityFile, or ssh-add a key (is SSH_AUTH_SOCK set?)",
            )
        return agent_keys

    def _authenticate(self, t: paramiko.Transport) -> None:
        user = self.settings.user
        last: Exception | None = None
        for key in self._keys():
            try:
                t.auth_publickey(user, key)
            except paramiko.AuthenticationException as e:
                last = e
                continue
            except (paramiko.SSHException, OSError, EOFError) as e:
                raise ConnectError(
                    f"connection to {self.where} ({self.name}) dropped during login: {e}",
                    "check sshd's log on the node",
                ) from e
            if t.is_authenticated():
                t.set_keepalive(30)
                return
        source = self.settings.identity_file or "ssh-agent"
        raise ConnectError(
            f"{user}@{self.where} ({self.name}) refused the key from {source}",
            f"add its public key to ~{user}/.ssh/authorized_keys on the node",
        ) from last

    def close(self) -> None:
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if self._sftp is not None:
            with contextlib.suppress(Exception):
                self._sftp.close()
            self._sftp = None
        if self._transport is not None:
            with contextlib.suppress(Exception):
                self._transport.close()
            self._transport = None
        if self._bastion is not None:
            self._bastion.close()
            self._bastion = None

    def _active(self) -> paramiko.Transport:
        self.connect()
        assert self._transport is not None
        return self._transport

    def _lost(self, what: str, e: BaseException) -> ConnectError:
        return ConnectError(
            f"connection to {self.where} ({self.name}) lost while {what}: {e or type(e).__name__}",
            "check the node and the network, then run again",
        )

    # --------------------------------------------------------------- commands
    def _execute(self, cmd: Command) -> Result:
        t = self._active()
        start = time.monotonic()
        deadline = start + cmd.timeout
        try:
            chan = t.open_session(timeout=self.connect_timeout)
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise self._lost(f"opening a channel for `{cmd.display()}`", e) from e
        out: list[bytes] = []
        err: list[bytes] = []
        try:
            # sshd runs the command's shell as a session and process-group leader; its
            # PID (first line of stdout) lets a timeout kill the whole group, because
            # closing the channel alone leaves the command running on the node.
            chan.exec_command("echo $$; " + cmd.render())
            data = cmd.stdin_bytes()
            if data:
                # A thread, so a command that writes a lot before reading all its stdin
                # cannot deadlock against us.
                writer = threading.Thread(target=_feed, args=(chan, data), daemon=True)
                writer.start()
            else:
                chan.shutdown_write()
            fd = chan.fileno()  # a pipe paramiko makes readable on stdout/stderr data or EOF
            while True:
                while chan.recv_ready():
                    out.append(chan.recv(1 << 16))
                while chan.recv_stderr_ready():
                    err.append(chan.recv_stderr(1 << 16))
                remaining = deadline - time.monotonic()
                if chan.eof_received or chan.exit_status_ready():
                    # Output is complete once EOF is in; wait for the exit status only.
                    if not chan.status_event.wait(max(remaining, 0)):
                        self._kill_group(out)
                        raise self._timed_out(cmd)
                    while chan.recv_ready():
                        out.append(chan.recv(1 << 16))
                    while chan.recv_stderr_ready():
                        err.append(chan.recv_stderr(1 << 16))
                    break
                if remaining <= 0:
                    self._kill_group(out)
                    raise self._timed_out(cmd)
                select.select([fd], [], [], min(remaining, 1.0))
            code = chan.recv_exit_status()
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise self._lost(f"running `{cmd.display()}`", e) from e
        finally:
            chan.close()
        if code == -1:  # no exit-status: killed by a signal or the connection dropped
            code = 255
        stdout = b"".join(out)
        _pid, _, stdout = stdout.partition(b"\n")
        return Result(
            code,
            stdout.decode("utf-8", "replace"),
            b"".join(err).decode("utf-8", "replace"),
            time.monotonic() - start,
        )

    def _kill_group(self, out: list[bytes]) -> None:
        """Stop a timed-out command's process group on the node (best effort).

        TERM first (sudo relays it to its command), KILL a second later; through sudo
        when the group runs as root and the login user is not root."""
        head = b"".join(out).partition(b"\n")[0].strip()
        if not head.isdigit():
            return
        pg = f"-{int(head)}"
        script = (
            f"kill -s TERM -- {pg} 2>/dev/null || sudo -n kill -s TERM -- {pg} 2>/dev/null;"
            f" sleep 1; kill -s KILL -- {pg} 2>/dev/null || sudo -n kill -s KILL -- {pg}"
            " 2>/dev/null; true"
        )
        with contextlib.suppress(Exception):
            self._execute(Command.argv("sh", "-c", script, timeout=10.0))

    # ------------------------------------------------------------------ files
    def _sftp_client(self) -> paramiko.SFTPClient:
        t = self._active()
        if self._sftp is None:
            try:
                self._sftp = paramiko.SFTPClient.from_transport(t, window_size=WINDOW_SIZE)
            except (paramiko.SSHException, OSError, EOFError) as e:
                raise self._lost("starting SFTP", e) from e
            if self._sftp is None:
                raise ConnectError(
                    f"{self.name}: the SFTP subsystem is not available",
                    "enable `Subsystem sftp` in the node's sshd_config",
                )
        return self._sftp

    def put(
        self,
        source: Path | bytes,
        remote_path: str,
        *,
        mode: int = 0o644,
        progress: Progress | None = None,
        offset: int = 0,
    ) -> int:
        with self._sftp_lock:
            sftp = self._sftp_client()
            try:
                if offset:
                    f = sftp.open(remote_path, "r+b")
                    have = f.stat().st_size or 0
                    if have < offset:
                        f.close()
                        raise RemoteCommandError(
                            f"{self.name}: cannot resume {remote_path} at byte {offset}:"
                            f" it has only {have}",
                            "upload it again from the start",
                        )
                    if have > offset:
                        f.truncate(offset)
                    f.seek(offset)
                else:
                    f = sftp.open(remote_path, "wb")
                with f:
                    f.chmod(mode)  # before any content: a secret is never world-readable
                    sent = _write_pipelined(
                        sftp, f, _chunks(source, offset, SFTP_CHUNK), offset, progress
                    )
                return sent
            except OSError as e:
                if self._transport is None or not self._transport.is_active():
                    raise self._lost(f"uploading {remote_path}", e) from e
                raise RemoteCommandError(
                    f"{self.name}: cannot write {remote_path} as {self.user}: {e.strerror or e}",
                    "check that the directory exists and that the user may write it",
                ) from e
            except (paramiko.SSHException, EOFError) as e:
                raise self._lost(f"uploading {remote_path}", e) from e

    def get(self, remote_path: str, *, sudo: bool = False) -> bytes:
        if sudo and self.user != "root":
            return _get_with_sudo(self, remote_path)
        with self._sftp_lock:
            sftp = self._sftp_client()
            try:
                with sftp.open(remote_path, "rb") as f:
                    f.prefetch()
                    return f.read()
            except OSError as e:
                raise RemoteCommandError(
                    f"{self.name}: cannot read {remote_path} as {self.user}: {e.strerror or e}",
                    None if e.errno == 2 else "pass sudo=True to read it as root",
                ) from e
            except (paramiko.SSHException, EOFError) as e:
                raise self._lost(f"downloading {remote_path}", e) from e

    def stat(self, remote_path: str) -> RemoteStat | None:
        with self._sftp_lock:
            sftp = self._sftp_client()
            try:
                st = sftp.stat(remote_path)
            except FileNotFoundError:
                return None
            except OSError as e:
                raise RemoteCommandError(
                    f"{self.name}: cannot stat {remote_path}: {e.strerror or e}", None
                ) from e
            except (paramiko.SSHException, EOFError) as e:
                raise self._lost(f"checking {remote_path}", e) from e
        m = st.st_mode or 0
        return RemoteStat(
            st.st_size or 0, stat.S_IMODE(m), float(st.st_mtime or 0), stat.S_ISDIR(m)
        )


FAST_WRITES = True
_MAX_IN_FLIGHT = 64


def _write_pipelined(
    sftp: paramiko.SFTPClient,
    f: paramiko.SFTPFile,
    chunks: Iterator[bytes | memoryview],
    offset: int,
    progress: Progress | None,
) -> int:
    """Write ``chunks`` at ``offset`` as pipelined SFTP WRITE requests; return bytes sent.

    paramiko's own ``SFTPFile.write`` copies every request three times and re-slices
    the remainder after each 32 KiB channel send (quadratic in the request size), which
    costs ~30% of upload throughput. This builds each request once and hands the
    channel a memoryview. It relies on SFTPClient internals that have been stable
    since paramiko 1.x (``_lock``, ``request_number``, ``_expecting``,
    ``_read_response``) and falls back to ``SFTPFile.write`` when they are missing.
    Raises OSError (from the server's status) when a write fails.
    """
    sent = 0
    internals = all(
        hasattr(sftp, a) for a in ("_lock", "request_number", "_expecting", "_read_response")
    )
    if not (FAST_WRITES and internals):
        f.set_pipelined(True)
        f.MAX_REQUEST_SIZE = SFTP_CHUNK
        for chunk in chunks:
            f.write(chunk)
            sent += len(chunk)
            if progress:
                progress(len(chunk))
        return sent
    s: Any = sftp
    chan = s.sock
    handle = cast(bytes, f.handle)
    in_flight: deque[int] = deque()
    pos = offset
    try:
        for chunk in chunks:
            n = len(chunk)
            with s._lock:
                num = s.request_number
                s._expecting[num] = type(None)
                s.request_number += 1
            # uint32 length, byte WRITE, uint32 id, string handle, uint64 offset, string data
            head = struct.pack(
                ">IBII", 1 + 4 + 4 + len(handle) + 8 + 4 + n, _CMD_WRITE, num, len(handle)
            )
            packet = b"".join((head, handle, struct.pack(">QI", pos, n), chunk))
            chan.sendall(memoryview(packet))
            in_flight.append(num)
            pos += n
            sent += n
            if progress:
                progress(n)
            # Collect acknowledgements as they come, blocking only when far ahead.
            while in_flight and (len(in_flight) > _MAX_IN_FLIGHT or chan.recv_ready()):
                s._read_response(in_flight.popleft())
        while in_flight:
            s._read_response(in_flight.popleft())
    finally:
        # Keep SFTPFile's idea of the position right for whatever the caller does next.
        f.seek(pos)
    return sent


_CMD_WRITE = 6  # SSH_FXP_WRITE


def _feed(chan: paramiko.Channel, data: bytes) -> None:
    with contextlib.suppress(Exception):
        chan.sendall(data)
        chan.shutdown_write()


__all__ = [
    "LocalTransport",
    "Progress",
    "RemoteStat",
    "Result",
    "SSHTransport",
    "Transport",
    "check_host_key",
    "fingerprint",
    "known_hosts_name",
    "load_identity",
]
