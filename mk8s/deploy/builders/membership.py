"""Which cluster the servers belong to, from the facts (pure).

[rancher/rke2-docs docs/install/ha.md: a server started without ``server:`` and
without a datastore bootstraps a *new* cluster; once a datastore exists (the server
initialised or joined one), ``server:`` is ignored.]

So the first server listed bootstraps only when no server has a datastore: the whole
cluster is new. Any server without a datastore joins a live member, the first one too
(after ``mk8s reset --node`` of the first server, it must rejoin the others, never
start a second cluster beside them). The server the cluster is reached through (the
*anchor*: the node list, the kubeconfig, the running cluster's token) is the first
server, unless it has no datastore while others do: then the first live server that
holds one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mk8s.deploy.builders.facts import NodeFacts
from mk8s.deploy.cluster import Cluster

# The full token form: K10<sha256 of the cluster CA>::<user>:<secret>.
_K10 = "K10"


@dataclass(frozen=True)
class Membership:
    """``new_cluster``: no server has a datastore, the first server bootstraps.
    ``anchor``: the server the cluster is reached through. ``rejoin``: the first server
    has no datastore but the cluster exists, so it joins ``anchor``."""

    new_cluster: bool
    anchor: str
    rejoin: bool = False


def membership(cluster: Cluster, facts: Mapping[str, NodeFacts]) -> Membership:
    """Where the cluster stands, from each server's datastore and service."""
    first = cluster.bootstrap
    holders = [n for n in cluster.servers if n.name in facts and facts[n.name].datastore]
    if not holders:
        return Membership(new_cluster=True, anchor=first.name)
    if facts[first.name].datastore:
        return Membership(new_cluster=False, anchor=first.name)
    live = [n for n in holders if facts[n.name].server_active]
    return Membership(new_cluster=False, anchor=(live or holders)[0].name, rejoin=True)


def problems(cluster: Cluster, facts: Mapping[str, NodeFacts], m: Membership) -> list[str]:
    """Why the cluster cannot be joined: the first server must rejoin and no server
    holding a datastore runs."""
    if not m.rejoin or facts[m.anchor].server_active:
        return []
    holders = ", ".join(n.name for n in cluster.servers if facts[n.name].datastore)
    return [
        f"{cluster.bootstrap.name}: has no datastore while {holders} hold the cluster's,"
        " so it must join them, but none of them runs rke2-server; start it on one of"
        " them (systemctl start rke2-server), then run the same deploy again"
    ]


def is_full_token(token: str) -> bool:
    """``K10<ca hash>::server:<secret>`` (rancher/rke2-docs docs/security/token.md)."""
    head, sep, rest = token.partition("::")
    return (
        bool(sep)
        and head.startswith(_K10)
        and len(head) == 67
        and all(c in "0123456789abcdef" for c in head[3:])
        and ":" in rest
    )


def token_secret(token: str) -> str:
    """The secret part of a full token, or the token itself."""
    return token.partition("::")[2].split(":", 1)[1] if is_full_token(token) else token
