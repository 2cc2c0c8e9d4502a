"""SFTP upload row: OpenSSH ``sftp`` vs ``SSHTransport.put`` to one test host."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.data import REPO, python_bin
from bench.measure import run
from bench.rows import Row

MB = 1_000_000


@dataclass(frozen=True)
class Net:
    """Where the benchmark's test hosts live (apart from the test suite's and the demo's)."""

    prefix: str = "mk8sb"
    subnet: str = "10.77.8.0/24"

    @property
    def bridge(self) -> str:
        return self.prefix + "br0"


def hosts_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, sshd test hosts)"
    import shutil

    for tool in ("sshd", "ssh", "sftp", "ip", "unshare", "nsenter"):
        if not (shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")):
            return f"needs {tool}"
    return None


@contextlib.contextmanager
def hosts(n: int, work: Path, net: Net, names: list[str] | None = None) -> Iterator[object]:
    from tests.support.hosts import start_hosts

    hs = start_hosts(
        n, workdir=work, subnet=net.subnet, prefix=net.prefix, bridge=net.bridge, names=names
    )
    try:
        yield hs
    finally:
        hs.close()


def make_file(path: Path, size: int) -> Path:
    """Incompressible bytes (image tarballs are already compressed)."""
    if path.exists() and path.stat().st_size == size:
        return path
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        left = size
        while left:
            n = min(left, 8 << 20)
            f.write(os.urandom(n))
            left -= n
    os.replace(tmp, path)
    return path


def upload_row(work: Path, size: int, rounds: int, net: Net) -> Row:
    row = Row(
        "upload",
        f"SFTP upload of {size / (1 << 30):.2f} GiB to one test host vs OpenSSH sftp",
        "MB/s",
        "throughput >= 0.9",
        lambda r: r >= 0.9,
    )
    reason = hosts_unavailable()
    if reason:
        row.skipped = f"not run: {reason}"
        return row
    work.mkdir(parents=True, exist_ok=True)
    src = make_file(work / f"upload-{size}.bin", size)
    with hosts(1, work / "hosts-upload", net) as hs:
        h = hs.hosts[0]  # type: ignore[attr-defined]
        opts = hs.ssh_options()  # type: ignore[attr-defined]
        batch = work / "sftp.batch"
        batch.write_text(f"put {shlex.quote(str(src))} /root/base.bin\n")
        ciphers = set()

        def clean() -> None:
            for name in ("base.bin", "ours.bin"):
                h.path(f"/root/{name}").unlink(missing_ok=True)

        def base() -> None:
            clean()
            s = run(["sftp", "-q", "-b", str(batch), *opts, f"root@{h.address}"])
            got = h.path("/root/base.bin").stat().st_size
            assert got == size, f"sftp wrote {got} bytes, expected {size}"
            row.base.append(size / s.seconds / MB)
            row.base_rss.append(s.max_rss)

        def ours() -> None:
            clean()
            argv = [python_bin(), "-m", "bench.put_ours", "--address", h.address]
            argv += ["--identity", str(hs.identity_file), "--known-hosts", str(hs.known_hosts)]  # type: ignore[attr-defined]
            argv += ["--src", str(src), "--dst", "/root/ours.bin"]
            s = run(argv, cwd=REPO)
            info = json.loads(s.out.strip().splitlines()[-1])
            got = h.path("/root/ours.bin").stat().st_size
            assert got == size, f"put wrote {got} bytes, expected {size}"
            row.ours.append(size / info["seconds"] / MB)
            row.ours_rss.append(s.max_rss)
            ciphers.add(info.get("cipher"))

        for r in range(rounds):
            for step in (base, ours) if r % 2 == 0 else (ours, base):
                step()
        clean()
    row.notes.append(
        "ours: connect+auth+put+close timed inside its process (imports excluded);"
        f" cipher {', '.join(sorted(str(c) for c in ciphers))}; sftp: whole process,"
        " default cipher"
    )
    return row
