"""Naming why a node did not come up: read its RKE2 unit's journal on the node and add
the likely cause (:func:`mk8s.deploy.builders.units.likely_cause`) to the error.

An agent whose join is refused (a wrong token, a node password the cluster does not
know) retries for ever and its unit stays "activating": all mk8s sees is a node that
is not Ready in time. The journal says why.
"""

from __future__ import annotations

from mk8s.deploy.builders.units import journal_command, likely_cause, unit_of
from mk8s.deploy.cluster import Node
from mk8s.deploy.engine.remote import Remote
from mk8s.errors import DeployError, Mk8sError

# RKE2 logs this line at each start: what came before is another start's story.
START_MARK = 'msg="Starting rke2 '


def since_last_start(journal: str) -> str:
    at = journal.rfind(START_MARK)
    return journal if at < 0 else journal[journal.rfind("\n", 0, at) + 1 :]


def explain(remote: Remote, node: Node, err: Mk8sError) -> Mk8sError:
    """``err`` (``node`` did not come up) with the likely cause its unit's journal
    names, or ``err`` itself when the journal names none or cannot be read."""
    if not remote.connected(node):
        return err
    try:
        r = remote.run(node, "diagnose", journal_command(unit_of(node)))
    except Mk8sError:
        return err
    cause = likely_cause(node.name, since_last_start(r.stdout))
    if cause is None:
        return err
    problem, fix = cause
    return DeployError(f"{err.problem}; likely cause: {problem}", fix)


__all__ = ["explain", "since_last_start"]
