"""etcd quorum arithmetic for taking a server out of the cluster (pure).

RKE2 runs one etcd member per server (rancher/rke2-docs docs/install/ha.md); a server's
Node carries the label ``node-role.kubernetes.io/etcd=true`` (k3s-io/k3s pkg/etcd/etcd.go
``EtcdRoleLabel``, which the member controller, pkg/etcd/member_controller.go, keys on).
etcd commits a change (the member removal itself included) only with a majority of its
members up, and refuses a removal that would leave the started members without one
(etcd-io/etcd server/etcdserver/server.go ``mayRemoveMember``, strict reconfig check).
So a server may go only when, after it went, the servers left up still hold a majority
of the members left.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

ETCD_ROLE = "node-role.kubernetes.io/etcd"


def majority(members: int) -> int:
    """How many members etcd needs up to commit anything."""
    return members // 2 + 1


def etcd_members(nodes_json: str) -> dict[str, bool]:
    """name -> listed Ready, of the nodes that are etcd members (``kubectl get nodes -o
    json``); {} for anything unreadable."""
    try:
        data = json.loads(nodes_json)
    except ValueError:
        return {}
    items = data.get("items", []) if isinstance(data, dict) else []
    out: dict[str, bool] = {}
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        meta = item.get("metadata") or {}
        labels = meta.get("labels") or {} if isinstance(meta, dict) else {}
        if not isinstance(labels, dict) or labels.get(ETCD_ROLE) != "true":
            continue
        conds = (item.get("status") or {}).get("conditions") or []
        ready = any(
            isinstance(c, dict) and c.get("type") == "Ready" and c.get("status") == "True"
            for c in conds
        )
        out[str(meta.get("name", ""))] = ready
    return out


def removal_problem(target: str, up: Mapping[str, bool]) -> str:
    """Why removing ``target`` would break etcd ("" when it would not). ``up``: every
    etcd member -> whether its server is up (Ready and its service running)."""
    if target not in up:
        return ""  # not a member: its removal does not touch etcd
    members, running = len(up), sum(up.values())
    down = sorted(n for n, ok in up.items() if not ok)
    if running < majority(members):
        return (
            f"etcd has lost quorum: {running} of its {members} members are up (down:"
            f" {', '.join(down)}), so no member can be removed"
        )
    left, left_up = members - 1, running - int(up[target])
    if left == 0:
        return ""  # the only member: the whole cluster goes (as a full reset does)
    if left_up < majority(left):
        return (
            f"removing {target} would leave {left_up} of {left} etcd members up (down:"
            f" {', '.join(down)}), short of the {majority(left)} etcd needs for quorum"
        )
    return ""


__all__ = ["ETCD_ROLE", "etcd_members", "majority", "removal_problem"]
