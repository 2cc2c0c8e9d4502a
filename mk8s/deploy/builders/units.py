"""RKE2's two systemd units as mk8s drives them (pure: commands as values, parsing).

* :func:`start_command`: both units are ``Type=notify`` with ``TimeoutStartSec=0``
  (rancher/rke2 ``bundle/lib/systemd/system/rke2-*.service``), so a blocking start can
  wait for ever: mk8s bounds every start itself.
* :func:`rke2_state_problems`: what RKE2 already on a node rules out (preflight).
* :func:`journal_command`, :func:`likely_cause`: when a node does not come up, the
  unit's last journal lines name the cause (a refused node password, a wrong token...).
"""

from __future__ import annotations

import re

from mk8s.deploy.builders.facts import NodeFacts
from mk8s.deploy.cluster import Node
from mk8s.deploy.command import Command

JOURNAL_LINES = 80


def unit_of(node: Node) -> str:
    return "rke2-server" if node.is_server else "rke2-agent"


def start_command(
    unit: str, verb: str, *, block: bool, timeout: float, pending: str | None = None
) -> Command:
    """``systemctl enable UNIT && systemctl VERB UNIT`` (then ``rm -f PENDING``, the
    node's pending-restart record, when given).

    A blocking start returns when RKE2 reports ready, fails when it exits first, and
    never returns while it retries: an agent whose join is refused (a wrong token, a
    node password the cluster does not know) retries for ever (k3s-io/k3s
    ``pkg/agent/config/config.go``). A server's start blocks (the next server joins
    only after it) and is stopped after ``timeout``; an agent's does not
    (``--no-block``): the agents start together and their wait step bounds them.
    """
    text = "systemctl enable {unit} && systemctl " + verb + ("" if block else " --no-block")
    text += " {unit}" + (" && rm -f {pending}" if pending else "")
    values = {"unit": unit, **({"pending": pending} if pending else {})}
    if block:
        return Command.script(
            text,
            values,
            sudo=True,
            description=f"enable and {verb} {unit} (blocks until it reports ready, "
            f"at most {timeout:.0f}s)",
            timeout=timeout,
        )
    return Command.script(
        text,
        values,
        sudo=True,
        description=f"enable and {verb} {unit} (returns at once; the wait step bounds it)",
        timeout=60,
    )


def rke2_state_problems(node: Node, f: NodeFacts) -> list[str]:
    """A binary that does not run here, or the other role's service running: RKE2 does
    not turn a server into an agent or back (its units skip starting next to each other,
    rke2gates.Feature.UNITS_REFUSE_OTHER_ROLE; before, starting one stops the other and
    leaves its data behind)."""
    problems = []
    if f.rke2_exec_error:
        foreign = "Exec format error" in f.rke2_exec_error
        problems.append(
            f"{node.name}: {f.rke2_prefix or ''}/bin/rke2 is installed but does not run on"
            f" this {f.uname_m} node ({f.rke2_exec_error})"
            + (": it is a binary for another architecture" if foreign else "")
            + f"; remove it (mk8s reset --node {node.name} --yes), then deploy again"
        )
    if node.is_server:
        other_up, other, role = f.agent_active or f.agent_activating, "rke2-agent", "a server"
    else:
        other_up, other, role = f.server_active or f.server_activating, "rke2-server", "an agent"
    if other_up:
        problems.append(
            f"{node.name}: runs {other}, but cluster.yaml makes it {role}; RKE2 does not"
            f" change a node's role in place: reset the node first (mk8s reset --node"
            f" {node.name} --yes), then deploy again"
        )
    return problems


def active_command(unit: str) -> Command:
    return Command.argv(
        "systemctl",
        "is-active",
        unit,
        sudo=True,
        check=False,
        timeout=30,
        description=f"{unit}'s state (active once RKE2 reported ready)",
    )


def journal_command(unit: str) -> Command:
    return Command.argv(
        "journalctl",
        "-u",
        unit,
        "-n",
        str(JOURNAL_LINES),
        "--no-pager",
        sudo=True,
        check=False,
        timeout=30,
        description=f"the last {JOURNAL_LINES} lines of {unit}'s journal (why it is not up)",
    )


# What RKE2 logs (k3s-io/k3s pkg/agent/config/config.go, pkg/clientaccess/token.go,
# pkg/cluster/bootstrap.go; the units' ExecCondition=/ExecStartPre=), what it means, the
# fix. "{name}" is the node's name.
CAUSES: tuple[tuple[str, str, str], ...] = (
    (
        "Node password rejected",
        "the cluster refuses its node password: a node named {name} is already registered"
        " (an earlier install: rke2-uninstall.sh does not remove a node from its cluster)",
        "delete it from the cluster (mk8s reset --node {name} --yes, or kubectl delete node"
        " {name} on a server), then deploy again",
    ),
    (
        "token CA hash does not match",
        "its token comes from another cluster (its CA hash is not this cluster's)",
        "set spec.rke2.token to this cluster's token (a server's"
        " /var/lib/rancher/rke2/server/token)",
    ),
    (
        "401 Unauthorized",
        "the server refuses its join token (401 Unauthorized)",
        "set spec.rke2.token to this cluster's token (a server's"
        " /var/lib/rancher/rke2/server/token)",
    ),
    (
        "only https:// URLs are supported",
        "its server: URL is not https://",
        "give spec.rke2.serverUrl as https://HOST:9345",
    ),
    (
        "critical configuration value mismatch",
        "its critical settings differ from the cluster's servers",
        "give every server the same values (spec.rke2.config or serverConfig)",
    ),
    (
        "is running!",
        "the service of the other role runs on it (RKE2 does not change a node's role)",
        "reset the node (mk8s reset --node {name} --yes), then deploy again",
    ),
    (
        "nm-cloud-setup.service",
        "nm-cloud-setup.service is enabled, which this RKE2 release refuses",
        "disable it (systemctl disable nm-cloud-setup.service nm-cloud-setup.timer),"
        " reboot, then deploy again",
    ),
)
_MSG = re.compile(r'msg="((?:[^"\\]|\\.)*)"')
_WAITING = "Waiting to retrieve agent configuration; server is not ready: "


def likely_cause(name: str, journal: str) -> tuple[str, str] | None:
    """(cause, fix) from a unit's journal, newest line first; None when nothing says."""
    lines = [ln.strip() for ln in journal.splitlines() if ln.strip()]
    for line in reversed(lines):
        for text, cause, fix in CAUSES:
            if text in line:
                return cause.format(name=name), fix.format(name=name)
    for line in reversed(lines):
        m = _MSG.search(line)
        said = m.group(1) if m else ""
        if _WAITING in said:
            reason = said.split(_WAITING, 1)[1]
            return (
                f"it cannot get its configuration from the server: {reason[:300]}",
                "check that the server is up and port 9345 reachable from the node",
            )
        if m and ("level=fatal" in line or "level=error" in line):
            return f"RKE2 says: {said[:300]}", f"fix that on {name}, then deploy again"
    return None


__all__ = [
    "CAUSES",
    "active_command",
    "journal_command",
    "likely_cause",
    "rke2_state_problems",
    "start_command",
    "unit_of",
]
