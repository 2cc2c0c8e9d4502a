"""Helpers of the backup and restore tests: the real kubectl against a test cluster,
the CLI's backup and restore, what the snapshot index and the nodes say."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.hosts import HostSet

KC = "/var/lib/rancher/rke2/bin/kubectl --kubeconfig /etc/rancher/rke2/rke2.yaml"
ETCDCTL = (
    "etcdctl --endpoints https://127.0.0.1:2379"
    " --cacert /var/lib/rancher/rke2/server/tls/etcd/server-ca.crt"
    " --cert /var/lib/rancher/rke2/server/tls/etcd/client.crt"
    " --key /var/lib/rancher/rke2/server/tls/etcd/client.key"
    " --dial-timeout=3s --command-timeout=5s"
)


def kubectl_bin() -> str:
    found = shutil.which("kubectl")
    if not found:
        pytest.fail("a real kubectl is needed (apt-get install kubernetes-client)", pytrace=False)
    return found


def kubectl(kc: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    """The real kubectl with the kubeconfig mk8s wrote."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(kc.parent), "LANG": "C.UTF-8"}
    p = subprocess.run(
        [kubectl_bin(), "--kubeconfig", str(kc), "--request-timeout=10s", *args],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    if ok and p.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: exit {p.returncode}\n{p.stdout}{p.stderr}")
    return p


def set_configmap(kc: Path, name: str, value: str) -> None:
    """Create the ConfigMap ``name`` with ``k=value``, or change it to that."""
    doc = json.dumps(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": value}}
    )
    p = subprocess.run(
        [kubectl_bin(), "--kubeconfig", str(kc), "--request-timeout=10s", "get", "configmap",
         name],
        capture_output=True, text=True, timeout=60,
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(kc.parent)},
    )  # fmt: skip
    verb = "replace" if p.returncode == 0 else "create"
    q = subprocess.run(
        [kubectl_bin(), "--kubeconfig", str(kc), "--request-timeout=10s", verb,
         "--validate=false", "-f", "-"],
        input=doc, capture_output=True, text=True, timeout=60,
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(kc.parent)},
    )  # fmt: skip
    assert q.returncode == 0, q.stdout + q.stderr


def configmap(kc: Path, name: str) -> str | None:
    p = kubectl(kc, "get", "configmap", name, "-o", "json", ok=False)
    if p.returncode != 0:
        assert "NotFound" in p.stderr, p.stderr
        return None
    return str(json.loads(p.stdout)["data"]["k"])


def mk8s(
    *args: str, cwd: Path, timeout: float = 600, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mk8s", *args],
        cwd=cwd,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL if stdin is None else None,
        input=stdin,
    )


def restore_argv(snapshot: Path, bundle: Path, pub: Path, *extra: str) -> list[str]:
    return [
        *("restore", "-f", "cluster.yaml", "--snapshot", str(snapshot)),
        *("--bundle", str(bundle), "--key", str(pub), *extra),
    ]


def records(d: Path, cluster: str = "demo") -> list[dict]:
    path = d / ".mk8s" / cluster / "snapshots" / "index.json"
    return list(json.loads(path.read_text())["snapshots"])


def ready_versions(hs: HostSet, server: str) -> dict[str, tuple[bool, str]]:
    """name -> (Ready, kubelet version) as a server lists them."""
    r = hs.by_name(server).run(f"{KC} get nodes -o json", timeout=60)
    assert r.returncode == 0, r.stderr
    out = {}
    for item in json.loads(r.stdout)["items"]:
        conds = {c["type"]: c["status"] for c in item["status"]["conditions"]}
        out[item["metadata"]["name"]] = (
            conds.get("Ready") == "True",
            item["status"]["nodeInfo"]["kubeletVersion"],
        )
    return out


def etcd_members(hs: HostSet, server: str) -> list[dict]:
    r = hs.by_name(server).run(f"{ETCDCTL} member list -w json", timeout=60)
    assert r.returncode == 0, r.stderr
    return list(json.loads(r.stdout).get("members", []))


def audit_commands(d: Path, cluster: str = "demo") -> list[tuple[str, str]]:
    p = d / ".mk8s" / cluster / "audit.jsonl"
    if not p.exists():
        return []
    recs = [json.loads(line) for line in p.read_text().splitlines()]
    return [(str(r["node"]), str(r["command"])) for r in recs if "command" in r]
