"""The world of the end-to-end deploy tests: one signed bundle from the example upstream
(tests/support/upstream.py) and the real CLI run against real sshd test hosts."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from mk8s.bundle import create
from mk8s.bundle import lock as locking
from mk8s.bundle.format import keys
from mk8s.bundle.upstream import releases as upstream
from tests.support.hosts import HostSet
from tests.support.upstream import ExampleUpstream


@dataclass
class World:
    dir: Path
    bundle: Path
    pub: Path
    key: keys.PrivateKey
    up: ExampleUpstream


def make_bundle(
    up: ExampleUpstream,
    d: Path,
    key: keys.PrivateKey,
    *,
    arches: tuple[str, ...] = ("amd64",),
    name: str = "bundle.tar.zst",
    spec: str = "v1.28.x",
) -> Path:
    settings = upstream.UpstreamSettings(
        api_url=up.api_url, release_url=up.release_url, raw_url=up.raw_url, backoff=0.05
    )
    lock = locking.lock_release(
        locking.LockSettings(spec=spec, upstream=settings, arches=arches, cache_dir=d / "cache")
    )
    created = create.create_bundle(
        lock,
        create.CreateSettings(
            upstream=settings,
            signature=lambda b: keys.sign(key, b),
            out=d / name,
            lock_out=d / f"{name}.lock",
            cache_dir=d / "cache",
        ),
    )
    return created.bundle.path


def bundle_for(up: ExampleUpstream, d: Path, key: keys.PrivateKey, spec: str) -> Path:
    """A signed bundle of the newest release matching ``spec`` (e.g. ``v1.29.x``), named
    after it in ``d``."""
    return make_bundle(up, d, key, spec=spec, name=f"{spec.replace('.', '-')}.tar.zst")


_PLAN_CMD = re.compile(
    r"^\s*(?:on a bad part: |then send it again and: |if it does not come up: )?\$ (.*)$"
)


def plan_commands(text: str) -> dict[str, set[str]]:
    """node -> commands of its sections in a dry-run plan."""
    out: dict[str, set[str]] = {}
    node = ""
    for line in text.splitlines():
        if line.startswith("["):
            node = line[1:].split()[0]
        elif line.startswith("## "):
            node = ""
        m = _PLAN_CMD.match(line)
        if m and node:
            out.setdefault(node, set()).add(m.group(1))
    return out


def write_cluster(
    path: Path,
    hs: HostSet,
    nodes: list[tuple[str, str]],
    *,
    user: str = "root",
    name: str = "demo",
    extra_rke2: str = "",
    staging: str = "/var/lib/mk8s",
) -> Path:
    """cluster.yaml for (name, role) pairs on the host set's hosts, in that order."""
    node_lines = "\n".join(
        f"    - {{address: {hs.by_name(n).address}, name: {n}, role: {r}}}" for n, r in nodes
    )
    path.write_text(f"""apiVersion: mk8s/v1alpha1
kind: Cluster
metadata: {{name: {name}}}
spec:
  rke2:
    tlsSan: [k8s.example.internal]
{extra_rke2}
  ssh:
    user: {user}
    identityFile: {hs.identity_file}
    knownHosts: {hs.known_hosts}
  nodes:
{node_lines}
  options: {{concurrency: 10, stagingDir: {staging}}}
""")
    return path


def mk8s(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mk8s", *args],
        cwd=cwd,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def deploy(
    cwd: Path, bundle: Path, pub: Path, *extra: str, file: str = "cluster.yaml"
) -> subprocess.CompletedProcess[str]:
    return mk8s("deploy", "-f", file, "--bundle", str(bundle), "--key", str(pub), *extra, cwd=cwd)


def kubectl_nodes(hs: HostSet, server: str) -> dict[str, bool]:
    r = hs.by_name(server).run(
        "/var/lib/rancher/rke2/bin/kubectl --kubeconfig /etc/rancher/rke2/rke2.yaml "
        "get nodes -o json"
    )
    assert r.returncode == 0, r.stderr
    out = {}
    for item in json.loads(r.stdout)["items"]:
        conds = {c["type"]: c["status"] for c in item["status"]["conditions"]}
        out[item["metadata"]["name"]] = conds.get("Ready") == "True"
    return out


def audit(cwd: Path, name: str = "demo") -> list[dict[str, object]]:
    p = cwd / ".mk8s" / name / "audit.jsonl"
    return [json.loads(line) for line in p.read_text().splitlines()]
