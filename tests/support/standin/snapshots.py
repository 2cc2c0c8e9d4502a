"""etcd snapshots of the RKE2 stand-in: real ``etcdctl snapshot save`` files, named and
listed as RKE2 does (k3s-io/k3s pkg/etcd/snapshot.go, pkg/cli/etcdsnapshot), and
``etcdctl snapshot restore`` for a cluster reset (pkg/etcd/etcd.go ``Restore``).

Shipped in the stand-in's release tarball as ``share/rke2/mk8s_standin/snapshots.py``;
it runs on the test nodes (Python 3 stdlib and Debian's etcd-client).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time

from .etcd import CLIENT_PORT, EtcdError, Paths, url


def etcdctl(paths: Paths, args: list[str], timeout: float = 60) -> str:
    t = paths.tls_file
    tls = [
        f"--cacert={t('server-ca.crt')}",
        f"--cert={t('client.crt')}",
        f"--key={t('client.key')}",
    ]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "ETCDCTL_API": "3"}
    try:
        p = subprocess.run(
            ["etcdctl", *tls, *args], capture_output=True, text=True, timeout=timeout, env=env
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise EtcdError(f"etcdctl {args[0]}: {e}") from None
    if p.returncode != 0:
        lines = [ln for ln in p.stderr.splitlines() if ln.startswith(("Error", "error"))]
        raise EtcdError(f"etcdctl {' '.join(args[:2])}: {(lines or [p.stderr.strip()])[-1]}")
    return p.stdout


def snapshot_save(paths: Paths, path: str) -> None:
    etcdctl(paths, [f"--endpoints={url('127.0.0.1', CLIENT_PORT)}", "snapshot", "save", path])


def snapshot_restore(paths: Paths, snapshot: str, name: str, peer_url: str) -> None:
    """``etcdctl snapshot restore`` into ``db/etcd`` as a one-member cluster (its hash is
    checked); the old ``db/etcd`` is moved to ``db/etcd-old-<unix time>`` first."""
    if os.path.exists(paths.etcd):
        old = f"{paths.etcd}-old-{int(time.time())}"
        os.rename(paths.etcd, old)
    etcdctl(
        paths,
        ["snapshot", "restore", snapshot, f"--name={name}", f"--data-dir={paths.etcd}",
         f"--initial-cluster={name}={peer_url}", f"--initial-advertise-peer-urls={peer_url}"],
    )  # fmt: skip


def list_snapshots(snapdir: str) -> list[dict]:
    """The snapshot files in ``snapdir``: name, location, size, created (the unix time at
    the end of the name, else the file's mtime), oldest first (k3s listLocalSnapshots)."""
    out = []
    for f in sorted(os.listdir(snapdir)) if os.path.isdir(snapdir) else []:
        path = os.path.join(snapdir, f)
        if not os.path.isfile(path):
            continue
        st = os.stat(path)
        base = f.removesuffix(".zip")
        tail = base[base.rfind("-") + 1 :]
        created = int(tail) if tail.isdigit() else int(st.st_mtime)
        out.append({"name": f, "location": "file://" + path, "size": st.st_size,
                    "created": created})  # fmt: skip
    return sorted(out, key=lambda s: (s["created"], s["name"]))


def format_snapshots(items: list[dict]) -> str:
    """``Name Location Size Created`` as k3s prints it (Go tabwriter, padding 1)."""
    rows = [["Name", "Location", "Size", "Created"]]
    for s in items:
        ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(s["created"]))
        rows.append([s["name"], s["location"], str(s["size"]), ts])
    widths = [max(len(r[c]) for r in rows) + 1 for c in range(3)]
    return "".join("".join(r[c].ljust(widths[c]) for c in range(3)) + r[3] + "\n" for r in rows)


def delete_snapshots(snapdir: str, names: list[str]) -> list[str]:
    """Remove these snapshot files (and their ``../.metadata/NAME``); the names deleted."""
    deleted = []
    for n in names:
        if not n or "/" in n or n in (".", ".."):
            continue
        try:
            os.unlink(os.path.join(snapdir, n))
        except FileNotFoundError:
            continue
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(snapdir, "..", ".metadata", n))
        deleted.append(n)
    return deleted
