"""Scale rows (docs/scale.md): real deploys of 3 servers + N agents (default 97) on
test hosts, ``images: {distribution: servers}``, each ``mk8s deploy`` a subprocess.

* ``scale-first``: the first deploy of 3 + N vs the first deploy of 3 + B (default 12):
  flat in agents (<= 1.3);
* ``scale-rerun``: a re-run on the converged 3 + N vs its first deploy (<= 0.1, zero
  bytes uploaded);
* ``scale-add``: adding one agent to the converged 3 + N vs adding one agent to a
  converged 3 + 1 (<= 1.5);
* ``uplink``: the bytes the operator's link carried for the first deploy of 3 + N, vs
  the same cluster with ``distribution: all``, both measured at that size (<= 0.1);
* ``scale-rss``: mk8s's peak RSS over the 3 + N runs, vs its budget (150 MiB);
* ``scale-cpu``: mk8s's CPU seconds (user + system) per node of the first deploy of
  3 + N, vs its budget (0.1 s).

Every row is one round: the runs take minutes at full size, and both sides of each
ratio run in this one invocation. The machine's load average is noted beside the rows.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.data import Dataset, mk8s_bin
from bench.deploy import cluster_yaml, deploy_bundle, uploaded_bytes
from bench.measure import BenchError, Sample, run
from bench.rows import Row
from bench.upload import Net, hosts, hosts_unavailable

SERVERS = 3
MIB = 1 << 20
RSS_BUDGET = 150 * MIB
CPU_BUDGET = 0.1  # seconds per node (docs/scale.md)
ROWS = ("scale-first", "scale-rerun", "scale-add", "uplink", "scale-rss", "scale-cpu")


@dataclass
class Runs:
    """What the deploys measured, by name."""

    samples: dict[str, Sample] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)  # bytes uploaded
    load: list[str] = field(default_factory=list)
    peaks: dict[str, tuple[int, int]] = field(default_factory=dict)  # threads, open files
    listing: int = 0  # bytes of `kubectl get nodes -o json` on the big cluster


class Watch:
    """Samples the ``mk8s deploy`` process running in ``work`` (found under /proc) for
    its peak thread count and open files, twice a second."""

    def __init__(self, work: Path) -> None:
        self.work = str(work)
        self.threads = self.files = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        pid = None
        while not self._stop.wait(0.5):
            pid = pid if pid and Path(f"/proc/{pid}").exists() else self._find()
            if pid is None:
                continue
            with contextlib.suppress(OSError, ValueError):
                status = Path(f"/proc/{pid}/status").read_text()
                line = next(x for x in status.splitlines() if x.startswith("Threads:"))
                self.threads = max(self.threads, int(line.split()[1]))
                self.files = max(self.files, len(os.listdir(f"/proc/{pid}/fd")))

    def _find(self) -> int | None:
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                argv = (d / "cmdline").read_bytes().split(b"\0")
                ours = any(a.endswith(b"mk8s") for a in argv[:2]) and b"deploy" in argv
                if ours and os.readlink(d / "cwd") == self.work:
                    return int(d.name)
        return None


def _names(agents: int) -> list[str]:
    return [f"s{i + 1}" for i in range(SERVERS)] + [f"a{i + 1}" for i in range(agents)]


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


class Cluster:
    """A fresh cluster of test hosts; ``deploy`` runs ``mk8s deploy`` on the first
    ``3 + agents`` of them (the others wait to be added)."""

    def __init__(self, ds: Dataset, work: Path, hosts_set: object, mode: str) -> None:
        self.ds, self.work, self.hs, self.mode = ds, work, hosts_set, mode
        self.peaks = (0, 0)

    def deploy(self, bundle: Path, agents: int) -> tuple[Sample, int]:
        text = cluster_yaml(self.hs, _names(agents), SERVERS)
        (self.work / "cluster.yaml").write_text(text + f"  images: {{distribution: {self.mode}}}\n")
        audit = self.work / ".mk8s" / "bench" / "audit.jsonl"
        seen = len(audit.read_text().splitlines()) if audit.exists() else 0
        argv = [mk8s_bin(), "deploy", "-f", "cluster.yaml", "--bundle", str(bundle)]
        with Watch(self.work) as w:
            sample = run([*argv, "--key", str(self.ds.pub)], cwd=self.work, timeout=3600)
        self.peaks = (w.threads, w.files)
        return sample, uploaded_bytes(sample.out, audit, seen)

    def listing_bytes(self) -> int:
        """The size of the node list the first server answers with now."""
        kubectl = "/var/lib/rancher/rke2/bin/kubectl --kubeconfig /etc/rancher/rke2/rke2.yaml"
        r = self.hs.hosts[0].run(f"{kubectl} get nodes -o json")  # type: ignore[attr-defined]
        return len(r.stdout.encode())


def _with_cluster(
    ds: Dataset, net: Net, name: str, n_hosts: int, mode: str, fn: Callable[[Cluster], None]
) -> None:
    work = ds.work / "scale" / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        with hosts(n_hosts, work / "hosts", net, names=_names(n_hosts - SERVERS)) as hs:
            fn(Cluster(ds, work, hs, mode))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(ds: Dataset, net: Net, agents: int, base_agents: int, wanted: set[str]) -> Runs:
    """Run the deploys the ``wanted`` rows need; BenchError when one fails."""
    bundle = deploy_bundle(ds)
    r = Runs()

    def note(what: str, c: Cluster, sample: Sample, sent: int) -> None:
        r.samples[what], r.sent[what] = sample, sent
        r.load.append(f"{what}: load {_load()}")
        r.peaks[what] = c.peaks

    if wanted & {"scale-add"}:

        def small(c: Cluster) -> None:
            c.deploy(bundle, 1)
            note("add-small", c, *c.deploy(bundle, 2))

        _with_cluster(ds, net, "small", SERVERS + 2, "servers", small)
    if wanted & {"scale-first", "scale-cpu"}:

        def base(c: Cluster) -> None:
            note("first-base", c, *c.deploy(bundle, base_agents))

        _with_cluster(ds, net, "base", SERVERS + base_agents, "servers", base)

    def big(c: Cluster) -> None:
        note("first", c, *c.deploy(bundle, agents))
        r.listing = c.listing_bytes()
        if wanted & {"scale-rerun", "scale-rss"}:
            note("rerun", c, *c.deploy(bundle, agents))
        if wanted & {"scale-add", "scale-rss"}:
            note("add", c, *c.deploy(bundle, agents + 1))

    _with_cluster(ds, net, "big", SERVERS + agents + 1, "servers", big)
    if "uplink" in wanted:

        def everything(c: Cluster) -> None:
            note("first-all", c, *c.deploy(bundle, agents))

        _with_cluster(ds, net, "all", SERVERS + agents, "all", everything)
    return r


def _rows(agents: int, base_agents: int) -> dict[str, Row]:
    n = f"3 + {agents}"
    return {
        "scale-first": Row(
            "scale-first",
            f"first deploy {n} (servers images) vs 3 + {base_agents}",
            "s",
            "ratio <= 1.3",
            lambda x: x <= 1.3,
        ),
        "scale-rerun": Row(
            "scale-rerun",
            f"re-run on the converged {n} vs its first deploy",
            "s",
            "<= 0.1, 0 bytes uploaded",
            lambda x: x <= 0.1,
        ),
        "scale-add": Row(
            "scale-add",
            f"add one agent to the converged {n} vs to a converged 3 + 1",
            "s",
            "ratio <= 1.5",
            lambda x: x <= 1.5,
        ),
        "uplink": Row(
            "uplink",
            f"uplink bytes, first deploy of {n}, servers vs all (both measured)",
            "B",
            "ratio <= 0.1",
            lambda x: x <= 0.1,
        ),
        "scale-rss": Row(
            "scale-rss",
            f"mk8s peak RSS over the {n} runs vs the budget",
            "B",
            "<= 150 MiB",
            lambda x: x <= 1.0,
        ),
        "scale-cpu": Row(
            "scale-cpu",
            f"mk8s CPU seconds per node, first deploy of {n}, vs the budget",
            "s",
            "<= 0.1 s per node",
            lambda x: x <= 1.0,
        ),
    }


def _fill(rows: dict[str, Row], r: Runs, agents: int) -> None:
    s, nodes = r.samples, SERVERS + agents
    if "first" in s and "first-base" in s:
        rows["scale-first"].ours.append(s["first"].seconds)
        rows["scale-first"].base.append(s["first-base"].seconds)
        rows["scale-first"].ours_rss.append(s["first"].max_rss)
        rows["scale-first"].base_rss.append(s["first-base"].max_rss)
    if "rerun" in s:
        row = rows["scale-rerun"]
        row.ours.append(s["rerun"].seconds)
        row.base.append(s["first"].seconds)
        row.ours_rss.append(s["rerun"].max_rss)
        row.extra_checks["0 bytes uploaded"] = r.sent["rerun"] == 0
        row.notes.append(f"re-run uploaded {r.sent['rerun']} bytes")
    if "add" in s and "add-small" in s:
        rows["scale-add"].ours.append(s["add"].seconds)
        rows["scale-add"].base.append(s["add-small"].seconds)
        rows["scale-add"].ours_rss.append(s["add"].max_rss)
    if "first-all" in s:
        row = rows["uplink"]
        row.ours.append(float(r.sent["first"]))
        row.base.append(float(r.sent["first-all"]))
        row.notes.append(f"servers {r.sent['first']} B, all {r.sent['first-all']} B")
    big = [s[k] for k in ("first", "rerun", "add") if k in s]
    rows["scale-rss"].ours.append(float(max(x.max_rss for x in big)))
    rows["scale-rss"].base.append(float(RSS_BUDGET))
    rows["scale-rss"].ours_rss.append(max(x.max_rss for x in big))
    rows["scale-cpu"].ours.append(s["first"].cpu / nodes)
    rows["scale-cpu"].base.append(CPU_BUDGET)
    rows["scale-cpu"].notes.append(
        "; ".join(f"{k} {v.cpu:.1f} s CPU in {v.seconds:.1f} s" for k, v in s.items())
    )
    rows["scale-rss"].notes.append("baseline column: the budget")
    rows["scale-rss"].notes.append(
        "peak threads / open files of mk8s: "
        + "; ".join(f"{k} {th} / {fd}" for k, (th, fd) in r.peaks.items())
        + f"; RSS {', '.join(f'{k} {v.max_rss / MIB:.1f} MiB' for k, v in s.items())}"
        + f"; node list on the first server at {nodes} nodes: {r.listing} bytes"
    )
    rows["scale-cpu"].notes.append("baseline column: the budget")


def scale_rows(
    ds: Dataset, net: Net, wanted: set[str], agents: int = 97, base_agents: int = 12
) -> dict[str, Row]:
    """The ``wanted`` scale rows (names in :data:`ROWS`), measured in one round."""
    rows = {k: v for k, v in _rows(agents, base_agents).items() if k in wanted}
    reason = hosts_unavailable()
    try:
        if reason:
            raise BenchError(reason)
        runs = measure(ds, net, agents, base_agents, wanted)
    except BenchError as e:
        for row in rows.values():
            row.skipped = f"not run: {str(e)[:300]}"
        return rows
    full = _rows(agents, base_agents)
    _fill(full, runs, agents)
    rows = {name: full[name] for name in rows}
    first = next(iter(rows.values()), None)
    if first is not None:
        first.notes.append("machine load (1, 5, 15 min) after each run: " + "; ".join(runs.load))
    return rows
