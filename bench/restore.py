"""Restore row: ``mk8s restore`` of 3 servers + 3 agents vs the first deploy of them.

Per round, on fresh test hosts: ``mk8s deploy`` (the baseline), ``mk8s backup`` (not
timed), then ``mk8s restore`` of that snapshot with the same bundle (ours): every server
stopped, the first reset from the snapshot, the others rejoining one at a time, the
agents restarted, every node Ready. Budget: a restore costs no more than the deploy
it undoes (both wait for every node; a restore uploads only the snapshot).
"""

from __future__ import annotations

import json
import shutil

from bench.data import Dataset, mk8s_bin
from bench.deploy import _deploy, cluster_yaml, deploy_bundle
from bench.measure import BenchError, run
from bench.rows import Row
from bench.upload import Net, hosts, hosts_unavailable

SERVERS = 3


def restore_row(ds: Dataset, rounds: int, net: Net, agents: int = 3) -> Row:
    row = Row(
        "restore",
        f"restore of {SERVERS} servers + {agents} agents from a snapshot vs their first deploy",
        "s",
        "ratio <= 1.0",
        lambda r: r <= 1.0,
    )
    reason = hosts_unavailable()
    if reason:
        row.skipped = f"not run: {reason}"
        return row
    try:
        bundle = deploy_bundle(ds)
        names = [f"s{i + 1}" for i in range(SERVERS)] + [f"a{i + 1}" for i in range(agents)]
        for _ in range(rounds):
            work = ds.work / "restore"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            with hosts(len(names), work / "hosts", net, names=names) as hs:
                (work / "cluster.yaml").write_text(cluster_yaml(hs, names, SERVERS))
                first = _deploy(work, bundle, ds.pub)
                run([mk8s_bin(), "backup", "-f", "cluster.yaml"], cwd=work, timeout=600)
                home = work / ".mk8s" / "bench" / "snapshots"
                snap = home / json.loads((home / "index.json").read_text())["snapshots"][-1]["file"]
                again = run(
                    [
                        *(mk8s_bin(), "restore", "-f", "cluster.yaml", "--snapshot", str(snap)),
                        *("--bundle", str(bundle), "--key", str(ds.pub), "--yes"),
                    ],
                    cwd=work,
                    timeout=900,
                )
                row.base.append(first.seconds)
                row.ours.append(again.seconds)
                row.ours_rss.append(again.max_rss)
            shutil.rmtree(work, ignore_errors=True)
    except BenchError as e:
        row.skipped = f"not run: {str(e)[:300]}"
    return row
