"""A real etcd member under each stand-in RKE2 server (Debian's etcd-server, etcd-client).

Shipped in the stand-in's release tarball as ``share/rke2/mk8s_standin/etcd.py``; it runs
on the test nodes (Python 3 stdlib, the ``etcd`` and ``etcdctl`` binaries on PATH).  It
does what RKE2's embedded etcd does (k3s-io/k3s pkg/etcd/etcd.go unless noted):

* data in ``<data-dir>/server/db/etcd`` (``DBDir``); a member that has a WAL there
  restarts as itself (``IsInitialized``); its member name, ``<node>-<8 hex>``, is in
  ``db/etcd/name`` (``setName``);
* client 2379 and peer 2380 on the node's address and loopback, mutual TLS with the
  cluster's etcd server CA and peer CA (``server/tls/etcd``: server-ca, peer-ca,
  server-client, peer-server-client, client);
* the first server starts a new cluster; a joining server asks a live server's
  supervisor for the member list (``/db/info``), adds itself as a **learner**
  (``MemberAddAsLearner``; etcd itself allows one learner at a time: "too many learner
  members in cluster"), starts with ``initial-cluster-state=existing`` and waits until the
  etcd leader promotes it (``manageLearners``, which k3s runs every 15 s: here once the
  learner has been one for ``learner_seconds``); a learner that never starts is evicted;
* ``RemovePeer`` removes a member by name and address (k3s pkg/etcd/member_controller.go
  calls it when a server's Node is deleted); the removed member's etcd exits ("the member
  has been permanently removed from the cluster") and will not come back with that data;
* snapshots are ``etcdctl snapshot save`` files named ``<name>-<node>-<unix time>``
  (pkg/etcd/snapshot.go), restored with ``etcdctl snapshot restore`` into a new
  one-member cluster (``Restore``, ``Reset``).

This module runs the member and talks to it; ``members.py`` manages membership,
``snapshots.py`` the snapshots.

Deviations: the stand-in uses etcd's default heartbeat and election timeouts (100 ms /
1 s; k3s sets 500 ms / 5 s) and a small backend quota and snapshot count, so that
elections and memory stay small on test hosts.  RKE2 runs etcd as a static pod, and
rke2-server.service has ``KillMode=process``: ``systemctl stop rke2-server`` leaves
etcd running until ``rke2-killall.sh``; the stand-in's etcd stops with the service (its
systemctl stops the unit's whole process group).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import re
import secrets
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Callable

CLIENT_PORT = 2379
PEER_PORT = 2380
METRICS_PORT = 2381
QUOTA_BYTES = 64 << 20
SNAPSHOT_COUNT = 1000
# etcd's answers that say "try again": an election is under way
TRANSIENT = ("leader changed", "no leader", "timed out", "unhealthy cluster", "not started")


class EtcdError(Exception):
    pass


class Paths:
    """Where RKE2 keeps etcd's files under ``<data-dir>/server``."""

    def __init__(self, server_dir: str, log_dir: str) -> None:
        self.server = server_dir
        self.db = os.path.join(server_dir, "db")
        self.etcd = os.path.join(self.db, "etcd")
        self.wal = os.path.join(self.etcd, "member", "wal")
        self.name = os.path.join(self.etcd, "name")
        self.reset_flag = os.path.join(self.db, "reset-flag")
        self.snapshots = os.path.join(self.db, "snapshots")
        self.tls = os.path.join(server_dir, "tls", "etcd")
        self.log = os.path.join(log_dir, "etcd.log")

    def tls_file(self, name: str) -> str:
        return os.path.join(self.tls, name)

    def initialized(self) -> bool:
        return os.path.isdir(self.wal)


def url(host: str, port: int) -> str:
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


# upstream: k3s-io/k3s pkg/etcd/etcd.go (setName, IsInitialized, newCluster) [CONTRACT ET1]
def member_name(paths: Paths, node: str, force: bool = False, value: str = "") -> str:
    """This server's etcd member name, kept in ``db/etcd/name`` (k3s ``setName``): the one
    there ('' if none), else (``force``) a new ``<node>-<8 hex>`` or ``value``."""
    if not force and not value:
        with contextlib.suppress(OSError), open(paths.name) as f:
            return f.read().strip()
        return ""
    name = value or f"{node}-{secrets.token_hex(4)}"
    os.makedirs(paths.etcd, mode=0o700, exist_ok=True)
    with open(os.open(paths.name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(name)
    return name


def _b64(s: str | bytes) -> str:
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def _range_end(prefix: str) -> str:
    raw = prefix.encode()
    return _b64(raw[:-1] + bytes([raw[-1] + 1]))


class Client:
    """etcd's v3 API through its JSON gateway (``/v3/kv/range`` etc.), mutual TLS."""

    def __init__(self, endpoints: list[str], paths: Paths, timeout: float = 5) -> None:
        self.endpoints = list(endpoints)
        self.timeout = timeout
        self.ctx = ssl.create_default_context(cafile=paths.tls_file("server-ca.crt"))
        self.ctx.load_cert_chain(paths.tls_file("client.crt"), paths.tls_file("client.key"))
        self._idle: dict[str, list[http.client.HTTPSConnection]] = {}
        self._lock = threading.Lock()

    def _conn(self, endpoint: str, timeout: float) -> http.client.HTTPSConnection:
        with self._lock:
            idle = self._idle.get(endpoint) or []
            conn = idle.pop() if idle else None
        if conn is None:
            host = endpoint.split("://", 1)[1].rsplit(":", 1)[0].strip("[]")
            port = int(endpoint.rsplit(":", 1)[1])
            conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=self.ctx)
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        return conn

    def call(self, path: str, body: dict, endpoint: str = "", timeout: float = 0) -> dict:
        """POST ``/v3/<path>`` to ``endpoint`` (else the first that answers); raises
        EtcdError with etcd's message, or naming the endpoints that did not answer."""
        errors = []
        for ep in [endpoint] if endpoint else self.endpoints:
            for attempt in (1, 2):  # a kept-alive connection the server closed: once more
                conn = self._conn(ep, timeout or self.timeout)
                try:
                    conn.request("POST", "/v3/" + path, json.dumps(body),
                                 {"Content-Type": "application/json"})  # fmt: skip
                    resp = conn.getresponse()
                    raw = resp.read()
                except TimeoutError:
                    conn.close()
                    raise EtcdError(
                        f"etcdserver: request timed out ({path} on {ep} after "
                        f"{timeout or self.timeout:g}s)"
                    ) from None
                except ssl.SSLCertVerificationError as e:  # e.g. an expired certificate
                    conn.close()
                    raise EtcdError(f"x509: {e.verify_message} ({ep})") from None
                except (OSError, http.client.HTTPException) as e:
                    conn.close()
                    if attempt == 1 and isinstance(e, http.client.RemoteDisconnected):
                        continue
                    errors.append(f"{ep}: {e}")
                    break
                with self._lock:
                    self._idle.setdefault(ep, []).append(conn)
                out = json.loads(raw or b"{}")
                if resp.status != 200:
                    raise EtcdError(str(out.get("error") or out.get("message") or raw[:200]))
                return out
        raise EtcdError("etcd is not reachable: " + "; ".join(errors))

    # -- keys --
    def range(self, key: str, prefix: bool = False, serializable: bool = False) -> list[dict]:
        body: dict = {"key": _b64(key), "serializable": serializable}
        if prefix:
            body["range_end"] = _range_end(key)
        out = self.call("kv/range", body)
        return [
            {
                "key": base64.b64decode(kv["key"]).decode(),
                "value": base64.b64decode(kv.get("value", "")),
                "mod_revision": int(kv.get("mod_revision", 0)),
                "create_revision": int(kv.get("create_revision", 0)),
            }
            for kv in out.get("kvs", [])
        ]

    def get(self, key: str) -> dict | None:
        kvs = self.range(key)
        return kvs[0] if kvs else None

    def put(self, key: str, value: bytes) -> int:
        out = self.call("kv/put", {"key": _b64(key), "value": _b64(value)})
        return int(out.get("header", {}).get("revision", 0))

    def txn_put(self, key: str, value: bytes, mod_revision: int) -> bool:
        """Put ``key`` only if its mod revision is ``mod_revision`` (0: only if absent)."""
        compare = {"key": _b64(key), "result": "EQUAL"}
        if mod_revision:
            compare |= {"target": "MOD", "mod_revision": str(mod_revision)}
        else:
            compare |= {"target": "CREATE", "create_revision": "0"}
        out = self.call(
            "kv/txn",
            {"compare": [compare],
             "success": [{"request_put": {"key": _b64(key), "value": _b64(value)}}]},
        )  # fmt: skip
        return bool(out.get("succeeded"))

    def delete(self, key: str, prefix: bool = False) -> int:
        body = {"key": _b64(key)}
        if prefix:
            body["range_end"] = _range_end(key)
        return int(self.call("kv/deleterange", body).get("deleted", 0))

    # -- cluster --
    def members(self, endpoint: str = "") -> list[dict]:
        out = self.call("cluster/member/list", {}, endpoint=endpoint)
        return [dict(m, ID=str(m["ID"])) for m in out.get("members", [])]

    def status(self, endpoint: str) -> dict:
        return self.call("maintenance/status", {}, endpoint=endpoint, timeout=2)


class Member:
    """This server's etcd process.  RKE2 runs etcd as a static pod; the stand-in runs it as
    its child (killed with it: ``setpriv --pdeathsig``), logging to ``paths.log``."""

    def __init__(self, paths: Paths, address: str) -> None:
        self.paths = paths
        self.address = address
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_start = 0
        self.stopping = False

    @property
    def peer_url(self) -> str:
        return url(self.address, PEER_PORT)

    @property
    def client_url(self) -> str:
        return url(self.address, CLIENT_PORT)

    def args(self, name: str, cluster: str, state: str, reset: bool) -> list[str]:
        t = self.paths.tls_file
        loop_peer, loop_client = url("127.0.0.1", PEER_PORT), url("127.0.0.1", CLIENT_PORT)
        # k3s listen*URLs: loopback only during a reset, so no peer joins mid-way
        args = [
            f"--name={name}", f"--data-dir={self.paths.etcd}",
            f"--listen-client-urls={loop_client}" + ("" if reset else f",{self.client_url}"),
            f"--advertise-client-urls={self.client_url}",
            f"--listen-peer-urls={loop_peer}" + ("" if reset else f",{self.peer_url}"),
            f"--listen-metrics-urls=http://127.0.0.1:{METRICS_PORT}",
            f"--cert-file={t('server-client.crt')}", f"--key-file={t('server-client.key')}",
            f"--trusted-ca-file={t('server-ca.crt')}", "--client-cert-auth",
            f"--peer-cert-file={t('peer-server-client.crt')}",
            f"--peer-key-file={t('peer-server-client.key')}",
            f"--peer-trusted-ca-file={t('peer-ca.crt')}", "--peer-client-cert-auth",
            f"--quota-backend-bytes={QUOTA_BYTES}", f"--snapshot-count={SNAPSHOT_COUNT}",
            "--logger=zap", "--log-outputs=stderr", "--experimental-initial-corrupt-check",
        ]  # fmt: skip
        if cluster:
            args += [f"--initial-cluster={cluster}", f"--initial-cluster-state={state}",
                     f"--initial-advertise-peer-urls={self.peer_url}"]  # fmt: skip
        if reset:
            args.append("--force-new-cluster")
        return args

    def start(self, name: str, cluster: str = "", state: str = "new", reset: bool = False) -> None:
        etcd = shutil.which("etcd")
        if not etcd:
            raise EtcdError("etcd not found on PATH (the stand-in runs Debian's etcd-server)")
        os.makedirs(self.paths.etcd, mode=0o700, exist_ok=True)
        os.chmod(self.paths.etcd, 0o700)  # k3s Start: the etcd dir is 0700
        os.makedirs(os.path.dirname(self.paths.log), exist_ok=True)
        wrap = ["setpriv", "--pdeathsig", "TERM", "--"] if shutil.which("setpriv") else []
        with open(self.paths.log, "ab") as log:
            self.log_start = log.tell()
            # not systemd's notify socket: etcd would say READY=1 for rke2 (k3s unsets it)
            env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
            self.proc = subprocess.Popen(
                [*wrap, etcd, *self.args(name, cluster, state, reset)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd="/", env=env,
            )  # fmt: skip

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # upstream: etcd-io/etcd server/etcdserver/server.go (removed member), rafthttp (failed to find local node) [CONTRACT ET5]
    def problem(self) -> str:
        """What etcd said that means this member cannot serve: removed from the cluster,
        or unknown to its peers (data from before a cluster reset); '' if nothing."""
        try:
            with open(self.paths.log, "rb") as f:
                f.seek(self.log_start)
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        for pattern, what in (
            ("permanently removed from the cluster", "the member has been permanently "
             "removed from the cluster; data-dir used by this member must be removed"),
            ("failed to find local node", "the cluster's members do not know this member "
             "(failed to find local node): its data is from before a cluster reset"),
        ):  # fmt: skip
            if pattern in text:
                return f"etcd: {what}"
        if not self.alive():
            fatal = re.findall(r'"level":"fatal".*?"msg":"([^"]*)"(?:,"error":"([^"]*)")?', text)
            if fatal:
                msg, err = fatal[-1]
                return f"etcd exited: {msg}{': ' + err if err else ''}"
            return f"etcd exited with status {self.proc.returncode if self.proc else '?'}"
        return ""

    def wait_ready(
        self, client: Client, timeout: float = 0, learner_ok: bool = False, tick: float = 0.05
    ) -> None:
        """Until the local member has a leader, is a voting member (unless ``learner_ok``)
        and a quorum read works; raises EtcdError when etcd says it cannot get there, or
        after ``timeout`` seconds (0: wait, as RKE2 does, for ever)."""
        deadline = time.monotonic() + timeout if timeout else None
        local = url("127.0.0.1", CLIENT_PORT)
        last = ""
        while True:
            problem = self.problem()
            if problem:
                raise EtcdError(problem)
            try:
                st = client.status(local)
                if st.get("isLearner") and not learner_ok:
                    last = "this server has not yet been promoted from learner to voting member"
                elif int(st.get("leader", 0)):
                    client.call("kv/range", {"key": _b64("/ready")}, endpoint=local, timeout=2)
                    return
                else:
                    last = "no leader (no quorum yet)"
            except EtcdError as e:
                if str(e).startswith("x509:"):
                    raise
                last = str(e)
            if deadline is not None and time.monotonic() > deadline:
                raise EtcdError(f"etcd did not become ready in {timeout:g}s: {last}")
            time.sleep(tick)

    def watch(self, on_exit: Callable[[str], None]) -> None:
        """Call ``on_exit(why)`` in a thread if etcd exits while we are not stopping it."""

        def run() -> None:
            assert self.proc is not None
            self.proc.wait()
            if not self.stopping:
                on_exit(self.problem() or f"etcd exited with status {self.proc.returncode}")

        threading.Thread(target=run, daemon=True).start()

    def stop(self, timeout: float = 10) -> None:
        self.stopping = True
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
