"""How mk8s drives RKE2's Type=notify units and names why a node does not come up
(mk8s/deploy/builders/units.py, the start step, preflight, facts): pure, no SSH."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mk8s.deploy.builders import facts, plan, units
from mk8s.deploy.engine import diagnose
from tests.support.clusters import FRESH, MANIFEST, TAG, prod_cluster, prod_context


def with_(f: facts.NodeFacts, **changes: object) -> facts.NodeFacts:
    return facts.NodeFacts(**{**f.__dict__, **changes})


def test_an_agent_start_does_not_block_and_a_server_start_is_bounded(tmp_path: Path) -> None:
    c = prod_context(prod_cluster(tmp_path))
    cp1, _, w1 = c.cluster.nodes
    pending = " && rm -f /var/lib/rancher/rke2/mk8s/restart-pending"
    agent = plan.start_step(c, w1, FRESH, installed_now=True, timeout=42).commands[-1]
    assert agent.display() == (
        "systemctl enable rke2-agent && systemctl start --no-block rke2-agent" + pending
    )
    assert agent.timeout == 60  # the wait step bounds the agent, not this command
    server = plan.start_step(c, cp1, FRESH, installed_now=True, timeout=42).commands[-1]
    assert server.display() == (
        "systemctl enable rke2-server && systemctl start rke2-server" + pending
    )
    assert server.timeout == 42  # Type=notify, TimeoutStartSec=0: mk8s stops it itself
    wait = plan.wait_step(w1, 42, paths=c.cluster.paths(w1)).actions[0]
    assert isinstance(wait, plan.WaitReady) and wait.explain is not None
    assert wait.explain.display() == "journalctl -u rke2-agent -n 80 --no-pager"


def test_an_activating_service_is_restarted_when_what_it_read_changed(tmp_path: Path) -> None:
    c = prod_context(prod_cluster(tmp_path))
    w1 = c.cluster.nodes[2]
    real, _ = plan.config_bytes(c, w1)
    same = {facts.CONFIG_PATH: hashlib.sha256(real).hexdigest()}
    retrying = with_(FRESH, agent_activating=True, rke2_version=f"rke2 version {TAG} (x)")

    def last(f: facts.NodeFacts) -> str:
        return plan.start_step(c, w1, f, installed_now=False).commands[-1].display()

    # unchanged: join the running start (a restart would throw away its retries)
    assert "systemctl start --no-block rke2-agent" in last(with_(retrying, hashes=same))
    # a new config (a fixed token, say) is read only at start: restart it
    assert "systemctl restart --no-block rke2-agent" in last(retrying)


def test_facts_name_a_foreign_binary_and_an_activating_unit() -> None:
    basic = "uname_m=x86_64\nos=x\nhostname=w1\nuid=0\nsudo=root\n"
    priv = (
        "rke2_prefix=/usr/local\n"
        "rke2_exec_error=exit 126: /usr/local/bin/rke2: cannot execute binary file: "
        "Exec format error\nserver_active=inactive\nagent_active=activating\n"
    )
    f = facts.parse(basic, priv)
    assert f.rke2_version is None and f.rke2_tag is None
    assert f.rke2_exec_error is not None and "Exec format error" in f.rke2_exec_error
    assert f.agent_activating and not f.agent_active and not f.server_activating
    script = facts.privileged("/var/lib/mk8s/b1d").render()
    # RKE2's own units ask systemctl's exit status (enabled, static, ... all refuse)
    assert "systemctl is-enabled --quiet nm-cloud-setup.service" in script


def test_preflight_refuses_a_foreign_binary_and_a_role_change(tmp_path: Path) -> None:
    c = prod_cluster(tmp_path)
    foreign = with_(
        FRESH, rke2_prefix="/usr/local", rke2_exec_error="exit 126: ...: Exec format error"
    )
    problems = plan.preflight(
        c,
        MANIFEST,
        {
            "cp1": foreign,
            "cp2": with_(FRESH, agent_active=True),
            "w1": with_(FRESH, server_activating=True),
        },
    )
    text = "\n".join(problems)
    assert "cp1: /usr/local/bin/rke2 is installed but does not run on this x86_64 node" in text
    assert "cp2: runs rke2-agent, but cluster.yaml makes it a server" in text
    assert "w1: runs rke2-server, but cluster.yaml makes it an agent" in text
    assert "mk8s reset --node w1 --yes" in text
    # the control: the node's own role running is fine
    ok = {
        "cp1": with_(FRESH, server_active=True),
        "cp2": FRESH,
        "w1": with_(FRESH, agent_activating=True),
    }
    assert plan.preflight(c, MANIFEST, ok) == []


STANDIN_LINE = 'time="2026-01-01T00:00:00Z" level={level} msg="{msg}"'


def journal(*msgs: str, level: str = "info") -> str:
    return "\n".join(STANDIN_LINE.format(level=level, msg=m) for m in msgs) + "\n"


@pytest.mark.parametrize(
    ("log", "cause", "fix"),
    [
        (
            journal(
                "Starting rke2 v1.28.15+rke2r1 (agent)",
                "Waiting to retrieve agent configuration; server is not ready: Node password "
                "rejected, duplicate hostname or contents of '/etc/rancher/node/password' may "
                "not match server node-passwd entry",
            ),
            "a node named w1 is already registered",
            "mk8s reset --node w1 --yes, or kubectl delete node w1",
        ),
        (
            journal(
                "Waiting to retrieve agent configuration; server is not ready: "
                "https://127.0.0.1:6444/v1-rke2/config: 401 Unauthorized"
            ),
            "the server refuses its join token",
            "spec.rke2.token",
        ),
        (
            journal("failed to join cluster: token CA hash does not match the Cluster CA"),
            "its token comes from another cluster",
            "spec.rke2.token",
        ),
        (
            journal(
                "Waiting to retrieve agent configuration; server is not ready: dial tcp "
                "10.0.0.11:9345: connect: connection refused"
            ),
            "cannot get its configuration from the server: dial tcp 10.0.0.11:9345",
            "port 9345",
        ),
        (
            journal("failed to validate server configuration: some new reason", level="fatal"),
            "RKE2 says: failed to validate server configuration: some new reason",
            "fix that on w1",
        ),
        ("Error: rke2-server is running!\n", "the service of the other role runs on it", "reset"),
    ],
)
def test_the_journal_names_the_likely_cause(log: str, cause: str, fix: str) -> None:
    found = units.likely_cause("w1", log)
    assert found is not None
    assert cause in found[0] and fix in found[1], found


def test_an_unknown_journal_names_no_cause_and_old_starts_do_not_count() -> None:
    assert units.likely_cause("w1", journal("Starting rke2", "still working")) is None
    old = journal(
        "Waiting to retrieve agent configuration; server is not ready: Node password rejected"
    )
    now = journal("Starting rke2 v1.28.15+rke2r1 (agent)", "Running kubelet")
    assert units.likely_cause("w1", diagnose.since_last_start(old + now)) is None
    assert units.likely_cause("w1", old + now) is not None  # the control
