"""The readiness poll schedule: soon after a wait starts, then backing off to the
session's poll interval (never above it, and never faster than asked); an agent the
cluster lists Ready counts only once its own rke2-agent is active (a restarted agent's
Node object stays Ready before it has joined again)."""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import pytest

from mk8s.deploy.builders import plan
from mk8s.deploy.command import Command
from mk8s.deploy.engine import readiness
from mk8s.deploy.steps import WaitReady
from mk8s.deploy.transport.base import Result
from mk8s.errors import DeployError
from tests.support.clusters import prod_cluster


@pytest.mark.parametrize(
    ("interval", "expected"),
    [
        (0.5, [0.1, 0.2, 0.4, 0.5, 0.5, 0.5]),
        (2.0, [0.1, 0.2, 0.4, 0.8, 1.6, 2.0]),
        (0.1, [0.1] * 6),
        (0.05, [0.05] * 6),  # a faster interval is never slowed down
    ],
)
def test_poll_delays_back_off_to_the_interval(interval: float, expected: list[float]) -> None:
    assert list(islice(readiness._delays(interval), 6)) == pytest.approx(expected)


class _Scripted:
    """Answers the wait's commands by what they ask: the node list (w1 listed Ready the
    whole time, as a Node object is for a grace period after its kubelet is gone) and
    the agent's unit state, which goes activating -> active after ``joins_after`` polls."""

    def __init__(self, joins_after: int) -> None:
        self.joins_after = joins_after
        self.asked: list[str] = []

    def run(self, node: object, step: str, cmd: Command) -> Result:
        text = cmd.display()
        self.asked.append(text)
        if "is-active" in text:
            n = sum("is-active" in a for a in self.asked)
            return Result(0 if n > self.joins_after else 3,
                          "active\n" if n > self.joins_after else "activating\n", "", 0)  # fmt: skip
        nodes = {"items": [{
            "metadata": {"name": "w1"},
            "status": {"nodeInfo": {"kubeletVersion": "v1.28.15+rke2r1"},
                       "conditions": [{"type": "Ready", "status": "True"}]},
        }]}  # fmt: skip
        return Result(0, json.dumps(nodes), "", 0)


@pytest.mark.parametrize("joins_after", [0, 2])
def test_an_agent_listed_ready_counts_only_once_its_unit_is_active(
    tmp_path: Path, joins_after: int
) -> None:
    c = prod_cluster(tmp_path)
    w1 = c.node("w1")
    remote = _Scripted(joins_after)
    poller = readiness.NodesPoller(remote, c, c.node("cp1"), 0.01)  # type: ignore[arg-type]
    wait = plan.wait_step(w1, 5, paths=c.paths(w1)).actions[0]
    assert isinstance(wait, WaitReady) and wait.active is not None
    assert readiness.wait_ready(poller, w1, wait) == "v1.28.15+rke2r1"
    assert sum("is-active" in a for a in remote.asked) == joins_after + 1


def test_an_agent_whose_unit_never_becomes_active_times_out_naming_it(tmp_path: Path) -> None:
    c = prod_cluster(tmp_path)
    w1 = c.node("w1")
    poller = readiness.NodesPoller(_Scripted(10**6), c, c.node("cp1"), 0.01)  # type: ignore[arg-type]
    wait = plan.wait_step(w1, 0.3, paths=c.paths(w1)).actions[0]
    assert isinstance(wait, WaitReady)
    with pytest.raises(
        DeployError,
        match=r"w1 was not Ready within 0s \(the cluster lists w1 Ready, but its rke2-agent is activating",
    ):
        readiness.wait_ready(poller, w1, wait)
