"""SSHTransport: one node over SSH (paramiko): connection, bastion hop, commands.

One connection and one SFTP session per node serve all its commands and transfers.
Host keys are checked (:mod:`.hostkeys`) before any credential is sent; identities
come from :mod:`.identity` or the ssh-agent; file transfers are in :mod:`.sftp`.
Every failure is a one-line :mod:`mk8s.errors` message naming the node and the fix.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from typing import Any

import paramiko

from mk8s.callbacks import PassphrasePrompt
from mk8s.deploy.cluster import Node, SSHSettings
from mk8s.deploy.command import Command
from mk8s.deploy.transport.base import Result, Transport
from mk8s.deploy.transport.hostkeys import check_host_key, known_hosts_name, known_keys
from mk8s.deploy.transport.identity import load_identity
from mk8s.deploy.transport.sftp import SFTPFiles
from mk8s.errors import ConnectError, HostKeyError

DEFAULT_CONNECT_TIMEOUT = 15.0
# GCM first: one AEAD pass instead of AES-CTR + HMAC (roughly 2x upload throughput).
PREFERRED_CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-ctr",
    "aes256-ctr",
)
WINDOW_SIZE = 16 * 1024 * 1024


class SSHTransport(SFTPFiles, Transport):
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
            e.key.get_name() for e in known_keys(s.known_hosts, hostname) if not e.revoked
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


def _feed(chan: paramiko.Channel, data: bytes) -> None:
    with contextlib.suppress(Exception):
        chan.sendall(data)
        chan.shutdown_write()
