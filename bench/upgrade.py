"""Upgrade row: a rolling upgrade of 3 servers + N agents vs the first deploy of it.

Both run ``mk8s deploy`` as a subprocess against the same fresh test hosts: first the
benchmark release's bundle (``SPEC``), then a bundle of the next minor, which makes
deploy upgrade the running cluster (servers one at a time, agents in batches).
"""

from __future__ import annotations

import shutil

from bench.data import SPEC, Dataset, mk8s_bin
from bench.deploy import _deploy, cluster_yaml, deploy_bundle
from bench.measure import BenchError, run
from bench.rows import Row
from bench.upload import Net, hosts, hosts_unavailable


def next_minor(spec: str) -> str:
    major, minor = spec.lstrip("v").split(".")[:2]
    return f"v{major}.{int(minor) + 1}.x"


def upgrade_row(ds: Dataset, rounds: int, net: Net, agents: int = 12) -> Row:
    row = Row(
        "upgrade",
        f"rolling upgrade of 3 servers + {agents} agents vs their first deploy",
        "s",
        "ratio <= 2.0",
        lambda r: r <= 2.0,
    )
    reason = hosts_unavailable()
    if reason:
        row.skipped = f"not run: {reason}"
        return row
    try:
        old = deploy_bundle(ds)
        new = ds.work / "upgrade-bundle.tar.zst"
        d = ds.work / "upgrade-create"
        new.unlink(missing_ok=True)  # mk8s never replaces a bundle file without --force
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        run(
            [
                *(mk8s_bin(), "bundle", "create", "--rke2", next_minor(SPEC)),
                *("--key", str(ds.key), "--cache", str(d / "cache"), "-o", str(new)),
            ],
            env=ds.env,
            cwd=d,
        )
        for _ in range(rounds):
            n = 3 + agents
            names = [f"s{i + 1}" for i in range(3)] + [f"a{i + 1}" for i in range(agents)]
            work = ds.work / "upgrade"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            with hosts(n, work / "hosts", net, names=names) as hs:
                (work / "cluster.yaml").write_text(cluster_yaml(hs, names, 3))
                first = _deploy(work, old, ds.pub)
                again = _deploy(work, new, ds.pub)
                row.base.append(first.seconds)
                row.ours.append(again.seconds)
                row.ours_rss.append(again.max_rss)
            shutil.rmtree(work, ignore_errors=True)
    except BenchError as e:
        row.skipped = f"not run: {str(e)[:300]}"
    return row
