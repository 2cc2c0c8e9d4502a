"""Uplink row: the bytes the operator's link carries for 3 servers + N agents with
``spec.images.distribution: servers`` vs ``all`` (docs/testing.md, Benchmarks; budget at
3 + 97).

Both are real deploys (``mk8s deploy`` as a subprocess against fresh test hosts) of the
same bundle; the bytes come from each run's ``uploaded X in Ys`` line. This machine
runs 3 + N hosts (default N = 12); the 3 + 97 figure is extrapolated from the measured
bytes per server and per agent, which do not depend on the number of nodes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from bench.data import Dataset
from bench.deploy import _deploy, cluster_yaml, deploy_bundle, uploaded_bytes
from bench.measure import BenchError
from bench.rows import Row
from bench.upload import Net, hosts, hosts_unavailable

SERVERS = 3
TARGET_AGENTS = 97


def _one(ds: Dataset, net: Net, agents: int, mode: str, bundle: Path) -> int:
    names = [f"s{i + 1}" for i in range(SERVERS)] + [f"a{i + 1}" for i in range(agents)]
    work = ds.work / f"uplink-{mode}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        with hosts(SERVERS + agents, work / "hosts", net, names=names) as hs:
            text = cluster_yaml(hs, names, SERVERS) + f"  images: {{distribution: {mode}}}\n"
            (work / "cluster.yaml").write_text(text)
            sample = _deploy(work, bundle, ds.pub)
            return uploaded_bytes(sample.out, work / ".mk8s" / "bench" / "audit.jsonl", 0)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def uplink_row(ds: Dataset, net: Net, agents: int = 12) -> Row:
    row = Row(
        "uplink",
        f"uplink bytes, {SERVERS} servers + {TARGET_AGENTS} agents, servers vs all"
        f" (measured on {SERVERS} + {agents})",
        "B",
        "ratio <= 0.1",
        lambda r: r <= 0.1,
    )
    reason = hosts_unavailable()
    if reason:
        row.skipped = f"not run: {reason}"
        return row
    try:
        bundle = deploy_bundle(ds)
        all_bytes = _one(ds, net, agents, "all", bundle)
        servers_bytes = _one(ds, net, agents, "servers", bundle)
    except BenchError as e:
        row.skipped = f"not run: {str(e)[:300]}"
        return row
    per_node = all_bytes / (SERVERS + agents)  # every node gets the whole bundle
    per_agent = max(0.0, (servers_bytes - SERVERS * per_node) / agents)
    total_all = (SERVERS + TARGET_AGENTS) * per_node
    total_servers = SERVERS * per_node + TARGET_AGENTS * per_agent
    row.base.append(total_all)
    row.ours.append(total_servers)
    row.notes.append(
        f"measured {SERVERS}+{agents}: all {all_bytes} B, servers {servers_bytes} B"
        f" (ratio {servers_bytes / all_bytes:.3f}); per node {per_node:.0f} B, per agent in"
        f" servers mode {per_agent:.0f} B; {SERVERS}+{TARGET_AGENTS} extrapolated from these"
    )
    return row
