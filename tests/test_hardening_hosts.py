"""Hostile values in every cluster.yaml field that reaches a node, deployed twice on
real test hosts: canary files prove that nothing the values say was ever run.

Fields a schema restricts to a safe alphabet (node names, addresses, users,
stagingDir, tlsSan) are refused before anything connects, which this test checks
too; the free-form ones (config keys and values, registries, the token) travel as
data (YAML on stdin) and must arrive verbatim.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.hosts import HostSet, hostset_for_tests
from tests.support.world import World, deploy

pytestmark = pytest.mark.hosts

CANARIES = [f"/tmp/mk8s-canary-{i}" for i in range(8)]


def _payloads() -> list[str]:
    c = CANARIES
    return [
        f"$(touch {c[0]})",
        f"`touch {c[1]}`",
        f"'; touch {c[2]}; '",
        f'"; touch {c[3]}; "',
        f"\n touch {c[4]}\n",
        f"$(touch${{IFS}}{c[5]})",
    ]


def _cluster(path: Path, hs: HostSet, token: Path, *, staging: str = "/var/lib/mk8s") -> Path:
    p = _payloads()
    doc = {
        "apiVersion": "mk8s/v1alpha1",
        "kind": "Cluster",
        "metadata": {"name": "evil"},
        "spec": {
            "rke2": {
                "tlsSan": ["k8s.example.internal"],
                "token": {"file": str(token)},
                "config": {
                    "node-label": [f"a={p[0]}", f"b={p[1]}"],
                    "kubelet-arg": [f"x={p[2]}", f"y={p[3]}"],
                },
                "serverConfig": {"etcd-s3-secret-key": p[4]},
                "agentConfig": {"node-taint": [f"k={p[5]}:NoSchedule"]},
                "registries": {
                    "mirrors": {"docker.io": {"endpoint": [f"https://r.example/{p[0]}"]}},
                    "configs": {"r.example": {"auth": {"username": p[1], "password": p[2]}}},
                },
            },
            "ssh": {
                "user": "root",
                "identityFile": str(hs.identity_file),
                "knownHosts": str(hs.known_hosts),
            },
            "nodes": [
                {"address": hs.hosts[0].address, "name": "s1", "role": "server"},
                {
                    "address": hs.hosts[1].address,
                    "name": "a1",
                    "role": "agent",
                    "config": {"node-label": [f"c={p[3]}"]},
                },
            ],
            "options": {"stagingDir": staging},
        },
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _no_canary(hs: HostSet) -> None:
    for c in CANARIES:
        assert not Path(c).exists(), c
        for h in hs.hosts:
            assert not h.path(c).exists(), (h.name, c)


def test_hostile_values_are_data_on_real_hosts(tmp_path: Path, world: World) -> None:
    with hostset_for_tests(2, tmp_path / "hosts", names=["s1", "a1"]) as hs:
        token = tmp_path / "token"
        token.write_text(f"$(touch${{IFS}}{CANARIES[6]})`touch${{IFS}}{CANARIES[7]}`\nignored\n")
        _cluster(tmp_path / "cluster.yaml", hs, token)
        for attempt in (1, 2):  # the re-run reads back what the first run placed
            r = deploy(tmp_path, world.bundle, world.pub)
            assert r.returncode == 0, f"run {attempt}: {r.stdout}\n{r.stderr}"
            _no_canary(hs)
        # The values arrived verbatim, as data.
        placed = yaml.safe_load(hs.hosts[0].path("/etc/rancher/rke2/config.yaml").read_text())
        assert placed["node-label"] == [f"a={_payloads()[0]}", f"b={_payloads()[1]}"]
        assert placed["etcd-s3-secret-key"] == _payloads()[4]
        assert placed["token"] == token.read_text().splitlines()[0]
        regs = yaml.safe_load(hs.hosts[1].path("/etc/rancher/rke2/registries.yaml").read_text())
        assert regs["configs"]["r.example"]["auth"]["password"] == _payloads()[2]
        # Secrets never reached the audit log.
        audit = (tmp_path / ".mk8s" / "evil" / "audit.jsonl").read_text()
        assert _payloads()[2] not in audit and token.read_text().splitlines()[0] not in audit

        # A hostile stagingDir is refused before anything connects (exit 2).
        _cluster(tmp_path / "bad.yaml", hs, token, staging=f"/var/lib/$(touch {CANARIES[0]})")
        r = deploy(tmp_path, world.bundle, world.pub, file="bad.yaml")
        assert r.returncode == 2, r.stderr
        assert "stagingDir" in r.stderr
        _no_canary(hs)
        out = subprocess.run(["ls", "/tmp"], capture_output=True, text=True).stdout
        assert "mk8s-canary" not in out
