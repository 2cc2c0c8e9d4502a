"""Deploy rows: 3 servers + 12 agents vs 3 servers + 1 agent, and a converged re-run.

Every deploy runs ``mk8s deploy`` as a subprocess against fresh test hosts (real sshd
in network namespaces, the RKE2 stand-in). The bundle is the default (canal) one of
the benchmark release, small on purpose: these rows measure orchestration, not the
uplink (the upload row does that).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from bench.data import SPEC, Dataset, mk8s_bin
from bench.measure import BenchError, Sample, run
from bench.rows import Row
from bench.upload import Net, hosts, hosts_unavailable

_UPLOADED = re.compile(r"^uploaded (?P<n>[\d.]+) (?P<unit>B|KiB|MiB|GiB|TiB) in ", re.M)
_UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}


def deploy_bundle(ds: Dataset) -> Path:
    """The default-selection bundle (built once, not timed)."""
    out = ds.work / "deploy-bundle.tar.zst"
    d = ds.work / "deploy-create"
    out.unlink(missing_ok=True)  # mk8s never replaces a bundle file without --force
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    run(
        [
            *(mk8s_bin(), "bundle", "create", "--rke2", SPEC, "--key", str(ds.key)),
            *("--cache", str(d / "cache"), "-o", str(out)),
        ],
        env=ds.env,
        cwd=d,
    )
    shutil.rmtree(d, ignore_errors=True)
    return out


def cluster_yaml(hs: object, names: list[str], servers: int) -> str:
    nodes = []
    for i, h in enumerate(hs.hosts[: len(names)]):  # type: ignore[attr-defined]
        role = "server" if i < servers else "agent"
        nodes.append(f"    - {{name: {names[i]}, address: {h.address}, role: {role}}}")
    return "\n".join(
        [
            "apiVersion: mk8s/v1alpha1",
            "kind: Cluster",
            "metadata: {name: bench}",
            "spec:",
            "  ssh:",
            "    user: root",
            f"    identityFile: {hs.identity_file}",  # type: ignore[attr-defined]
            f"    knownHosts: {hs.known_hosts}",  # type: ignore[attr-defined]
            "    hostKeyPolicy: strict",
            "  nodes:",
            *nodes,
            "",
        ]
    )


def uploaded_bytes(out: str, audit: Path, skip_lines: int) -> int:
    """Bytes the deploy uploaded: its ``uploaded X in Ys`` line, else the audit log."""
    m = _UPLOADED.search(out)
    if m:
        return int(float(m["n"]) * _UNITS[m["unit"]])
    total = 0
    if audit.exists():
        for line in audit.read_text().splitlines()[skip_lines:]:
            rec = json.loads(line)
            if rec.get("step") == "upload" and isinstance(rec.get("bytes"), int):
                total += rec["bytes"]
    return total


def _lines(p: Path) -> int:
    return len(p.read_text().splitlines()) if p.exists() else 0


def _deploy(work: Path, bundle: Path, pub: Path) -> Sample:
    return run(
        [mk8s_bin(), "deploy", "-f", "cluster.yaml", "--bundle", str(bundle), "--key", str(pub)],
        cwd=work,
        timeout=900,
    )


def deploy_rows(
    ds: Dataset, rounds: int, net: Net, agents_big: int = 12, agents_small: int = 1
) -> tuple[Row, Row]:
    scale = Row(
        "deploy-scale",
        f"deploy 3 servers + {agents_big} agents vs 3 servers + {agents_small} agent",
        "s",
        "ratio <= 1.3",
        lambda r: r <= 1.3,
    )
    rerun = Row(
        "deploy-rerun",
        "re-run of deploy on a converged cluster (3+1) vs first deploy",
        "s",
        "<= 0.1, 0 bytes uploaded",
        lambda r: r <= 0.1,
    )
    reason = hosts_unavailable()
    if reason:
        scale.skipped = rerun.skipped = f"not run: {reason}"
        return scale, rerun
    try:
        bundle = deploy_bundle(ds)
    except BenchError as e:
        scale.skipped = rerun.skipped = f"not run: deploy bundle: {str(e)[:200]}"
        return scale, rerun
    base = ds.work / "deploy"

    def one(n_agents: int, with_rerun: bool) -> None:
        n = 3 + n_agents
        names = [f"s{i + 1}" for i in range(3)] + [f"a{i + 1}" for i in range(n_agents)]
        d = base / f"c{n}"
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        with hosts(n, d / "hosts", net, names=names) as hs:
            (d / "cluster.yaml").write_text(cluster_yaml(hs, names, 3))
            first = _deploy(d, bundle, ds.pub)
            if n_agents == agents_big:
                scale.ours.append(first.seconds)
                scale.ours_rss.append(first.max_rss)
            else:
                scale.base.append(first.seconds)
                scale.base_rss.append(first.max_rss)
            if with_rerun:
                audit = d / ".mk8s" / "bench" / "audit.jsonl"
                seen = _lines(audit)
                again = _deploy(d, bundle, ds.pub)
                rerun.base.append(first.seconds)
                rerun.ours.append(again.seconds)
                rerun.ours_rss.append(again.max_rss)
                sent = uploaded_bytes(again.out, audit, seen)
                ok = rerun.extra_checks.get("0 bytes uploaded", True)
                rerun.extra_checks["0 bytes uploaded"] = ok and sent == 0
                if sent:
                    rerun.notes.append(f"re-run uploaded {sent} bytes")
        shutil.rmtree(d, ignore_errors=True)

    try:
        for r in range(rounds):
            steps = [lambda: one(agents_small, True), lambda: one(agents_big, False)]
            for step in steps if r % 2 == 0 else steps[::-1]:
                step()
    except BenchError as e:
        msg = f"not run: deploy failed: {str(e)[:300]}"
        scale.skipped = rerun.skipped = msg
    scale.notes.append(f"bundle {bundle.stat().st_size} bytes (default canal selection)")
    return scale, rerun
