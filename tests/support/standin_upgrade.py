"""The stand-in upgrade tests' cluster (tests/hosts/standin/test_upgrade.py and
test_rollback.py; their fixtures are in that folder's conftest.py): the tags the example
upstream serves, and a cluster of cp1, cp2 (servers) and w1 (agent) at one tag, driven by
hand with the release's own install.sh and systemctl, as RKE2's air-gap docs do."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.support.hosts import Host
from tests.support.standin_nodes import (
    KUBECTL,
    configure,
    install,
    ready_nodes,
    ssh,
    start,
    wait_ready,
)
from tests.support.upstream import NEW, OLD, R2, R3, SKIP

TAGS = (OLD, NEW, SKIP, R2, R3)
SNAPSHOTS = "/var/lib/rancher/rke2/server/db/snapshots"


def url(h: Host) -> str:
    return f"https://{h.address}:9345"


def versions(h: Host) -> dict[str, str]:
    out = json.loads(ssh(h, f"{KUBECTL} get nodes -o json").stdout)
    return {i["metadata"]["name"]: i["status"]["nodeInfo"]["kubeletVersion"] for i in out["items"]}


def table(h: Host) -> dict[str, list[str]]:
    lines = ssh(h, f"{KUBECTL} get nodes").stdout.splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    return {r.split()[0]: r.split() for r in lines[1:]}


def wait_version(h: Host, name: str, tag: str, timeout: float = 20) -> None:
    """Until ``name`` is Ready at ``tag`` (as kubectl on ``h`` sees it)."""
    deadline = time.monotonic() + timeout
    while not (versions(h).get(name) == tag and ready_nodes(h).get(name)):
        assert time.monotonic() < deadline, f"{name} not Ready at {tag}: {versions(h)}"
        time.sleep(0.3)


def cluster(nodes: dict[str, Host], releases: dict[str, Path], tag: str) -> None:
    """cp1 and cp2 servers, w1 agent, all at ``tag``, Ready."""
    cp1, cp2, w1 = nodes["cp1"], nodes["cp2"], nodes["w1"]
    for h in (cp1, cp2, w1):
        install(h, releases[tag])
    configure(cp1, "server", token="t")
    start(cp1, "server")
    configure(cp2, "server", server=url(cp1), token="t")
    start(cp2, "server")
    configure(w1, "agent", server=url(cp1), token="t")
    start(w1, "agent")
    assert wait_ready(cp1, {"cp1", "cp2", "w1"}) == {"cp1": True, "cp2": True, "w1": True}


__all__ = ["SNAPSHOTS", "TAGS", "cluster", "table", "url", "versions", "wait_version"]
