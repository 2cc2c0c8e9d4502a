"""mk8s/deploy/ops.py: the day-2 operations (status, reset of a node) without root: the
connect function is injected, so orchestration runs against this machine
(LocalTransport) or an unreachable node."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mk8s.deploy import ops
from mk8s.deploy.cluster import Node, load_cluster
from mk8s.deploy.transport import LocalTransport, Transport
from mk8s.errors import ConnectError, DeployError

CLUSTER = """apiVersion: mk8s/v1alpha1
kind: Cluster
metadata: {name: local}
spec:
  nodes:
    - {address: 10.0.0.1, name: cp1, role: server}
    - {address: 10.0.0.2, name: cp2, role: server}
    - {address: 10.0.0.3, name: w1, role: agent}
"""


def _connect(reachable: set[str]):  # type: ignore[no-untyped-def]
    def connect(node: Node) -> Transport:
        if node.name not in reachable:
            raise ConnectError(f"cannot connect to {node.address}:22 ({node.name}): refused")
        return LocalTransport(node.name)

    return connect


@pytest.fixture
def cluster(tmp_path: Path):  # type: ignore[no-untyped-def]
    p = tmp_path / "cluster.yaml"
    p.write_text(CLUSTER)
    return load_cluster(p, check_files=False)


def test_status_reports_unreachable_and_not_ready(cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    lines: list[str] = []
    rows = ops.status(cluster, state_base=tmp_path, log=lines.append, connect=_connect({"cp1"}))
    by = {r.node.name: r for r in rows}
    assert by["cp1"].reachable and not by["cp1"].ready
    assert by["cp1"].service == "rke2-server inactive"
    assert not by["cp2"].reachable and "refused" in by["cp2"].error
    table = ops.status_table(rows)
    assert "unreachable" in table and "NotReady" in table
    audit = [
        json.loads(x)
        for x in (tmp_path / ".mk8s" / "local" / "audit.jsonl").read_text().splitlines()
    ]
    assert {a["node"] for a in audit} == {"cp1"}


def test_reset_node_stops_when_no_server_can_remove_it(cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DeployError, match="could not remove w1 from the cluster") as e:
        ops.reset(cluster, "w1", state_base=tmp_path, connect=_connect({"w1"}))
    assert "--force" in str(e.value)
    audit = tmp_path / "local" / "audit.jsonl"
    assert not audit.exists() or "uninstall" not in audit.read_text()


def test_reset_node_of_an_unreachable_target_is_a_connect_error(cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConnectError):
        ops.reset(cluster, "w1", state_base=tmp_path, connect=_connect({"cp1"}))
