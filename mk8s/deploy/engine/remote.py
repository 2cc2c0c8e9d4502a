"""The nodes of one run: their connections, and audited commands on them.

:class:`Remote` opens a connection per node with an injectable connect function (so
orchestration runs against any :class:`~mk8s.deploy.transport.Transport`), runs
commands there, and writes every command (secrets masked) with its exit code to the
audit log. It knows nothing of phases, steps or what the run knows: the session
(:mod:`mk8s.deploy.engine.session`), the uploads and the readiness waits work through it.
"""

from __future__ import annotations

import contextlib
import resource
import threading
import time
from collections.abc import Callable
from typing import Any

from mk8s.deploy.cluster import Node
from mk8s.deploy.command import Command, as_user
from mk8s.deploy.state import StateDir
from mk8s.deploy.transport import Result, SSHTransport, Transport
from mk8s.errors import RemoteCommandError

Connect = Callable[[Node], Transport]


def connect_ssh(node: Node) -> Transport:
    """An open SSH connection to ``node``; ConnectError / HostKeyError otherwise."""
    t = SSHTransport.for_node(node)
    t.connect()
    return t


# Open files one connection holds (its socket), with room for the SFTP channel's local
# files, the audit log, the journal and the bundle.
FILES_PER_NODE = 2
FILES_SPARE = 256


def allow_open_files(nodes: int) -> None:
    """Raise this process's soft limit of open files towards its hard limit when a run
    of ``nodes`` connections could reach it (a common soft limit is 1024: a thousand
    nodes would otherwise fail to connect with "Too many open files"; docs/scale.md)."""
    want = nodes * FILES_PER_NODE + FILES_SPARE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= want:
        return
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


class Remote:
    """The open connections of one run, by node name. Thread-safe."""

    def __init__(self, state: StateDir, connect: Connect = connect_ssh) -> None:
        self.state = state
        self.connect = connect
        self._conns: dict[str, Transport] = {}
        self._lock = threading.Lock()

    def open(self, node: Node) -> None:
        """Connect to ``node`` unless connected; raises what ``connect`` raises
        (ConnectError, HostKeyError)."""
        if self.connected(node):
            return
        t = self.connect(node)
        with self._lock:
            self._conns[node.name] = t

    def connected(self, node: Node) -> bool:
        return node.name in self._conns

    def transport(self, node: Node) -> Transport:
        """The node's open connection (KeyError if it has none)."""
        return self._conns[node.name]

    def run(self, node: Node, step: str, cmd: Command) -> Result:
        """Run ``cmd`` on ``node`` and write it (masked) and its exit code to the audit
        log. Raises RemoteCommandError / ConnectError as the transport does."""
        t = self._conns[node.name]
        shown = as_user(cmd, node.ssh.user).display()  # what the node really runs, masked
        start = time.monotonic()
        try:
            result = t.run(cmd)
        except RemoteCommandError as e:
            self.audit(node, step, command=shown, exit=None, error=cmd.mask(str(e)), start=start)
            raise
        self.audit(node, step, command=shown, exit=result.exit_code, start=start)
        return result

    def audit(self, node: Node, step: str, *, start: float | None = None, **record: Any) -> None:
        """One audit record for ``node``'s ``step`` (every value already masked);
        ``start`` adds the seconds since then."""
        if start is not None:
            record["seconds"] = round(time.monotonic() - start, 3)
        self.state.audit(node=node.name, step=step, **record)

    def close(self) -> None:
        """Close every connection (work in flight on one fails at once); never raises."""
        for t in list(self._conns.values()):
            with contextlib.suppress(Exception):
                t.close()


__all__ = ["Connect", "Remote", "allow_open_files", "connect_ssh"]
