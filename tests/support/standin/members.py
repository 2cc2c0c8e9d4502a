"""etcd membership of the RKE2 stand-in, managed the way k3s manages it
(k3s-io/k3s pkg/etcd/etcd.go ``join``, ``manageLearners``, ``RemovePeer``): a joining
server adds itself as a learner, the leader promotes it, a deleted server's member is
removed.

Shipped in the stand-in's release tarball as ``share/rke2/mk8s_standin/members.py``; it
runs on the test nodes (Python 3 stdlib).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from .etcd import Client, EtcdError


# upstream: k3s-io/k3s pkg/etcd/etcd.go (join: learner, duplicate node name) [CONTRACT ET2 ET3]
def join_cluster(client: Client, name: str, node: str, peer_url: str) -> str:
    """Add this server as a learner unless the cluster has it already; the
    ``--initial-cluster`` it must start with.  Refuses a second member of the same node."""
    cluster, add = [], True
    host = peer_url.split("://", 1)[1].rsplit(":", 1)[0]
    for m in client.members():
        mname = m.get("name", "")
        for peer in m.get("peerURLs", []):
            same_host = peer.split("://", 1)[1].rsplit(":", 1)[0] == host
            if not mname and same_host:
                mname = name  # an unstarted member with our address is us
            if mname == name and same_host:
                add = False
            cluster.append(f"{mname}={peer}")
        node_of = mname[: mname.rfind("-")] if mname.rfind("-") > 1 else mname
        if mname != name and node_of == node:
            raise EtcdError(
                f"duplicate node name found, please use a unique name for this node "
                f"(etcd member {mname} of node {node} is still in the cluster)"
            )
    if add:
        add_learner(client, peer_url)
        cluster.append(f"{name}={peer_url}")
    return ",".join(cluster)


# upstream: etcd-io/etcd server/etcdserver/api/membership/errors.go (ErrTooManyLearners), k3s-io/k3s pkg/etcd/etcd.go (Start: join retried) [CONTRACT JN3]
def add_learner(client: Client, peer_url: str, patience: float = 10) -> None:
    """``MemberAddAsLearner``.  etcd refuses any member add until every voting member has
    been connected for 5 s ("unhealthy cluster", etcdserver ``mayAddMember``), right after
    a promotion; k3s retries that every second ("Waiting for other members to finish
    joining etcd cluster"), the stand-in for ``patience`` seconds.  k3s retries "too many
    learner members in cluster" too; the stand-in does not: the start fails (stricter)."""
    deadline = time.monotonic() + patience
    while True:
        try:
            client.call("cluster/member/add", {"peerURLs": [peer_url], "isLearner": True})
            return
        except EtcdError as e:
            if "unhealthy cluster" not in str(e) or time.monotonic() > deadline:
                raise
        time.sleep(0.5)


# upstream: k3s-io/k3s pkg/etcd/etcd.go (manageLearners, trackLearnerProgress) [CONTRACT ET2]
def manage_learners(
    client: Client, local: str, promote_after: float, stale: float, log: Callable[[str], None]
) -> None:
    """One round of the leader's learner management: promote a learner that has been one
    for ``promote_after`` seconds (etcd refuses until it caught up), remove one that never
    started within ``stale`` seconds."""
    st = client.status(local)
    if str(st.get("header", {}).get("member_id")) != str(st.get("leader")):
        return
    now = time.monotonic()
    seen = _LEARNERS_SEEN
    for m in client.members():
        if not m.get("isLearner"):
            continue
        first = seen.setdefault(m["ID"], now)
        if not m.get("name") and now - first > stale:
            client.call("cluster/member/remove", {"ID": m["ID"]})
            log(f"Removed learner {m['peerURLs']} from etcd cluster: it never started")
        elif now - first >= promote_after:
            with contextlib.suppress(EtcdError):  # not in sync with the leader yet
                client.call("cluster/member/promote", {"ID": m["ID"]})
                log(f"Promoted learner {m.get('name')}")
        break  # etcd allows one learner at a time


_LEARNERS_SEEN: dict[str, float] = {}


def remove_peer(client: Client, name: str, address: str) -> bool:
    """Remove the member with this name and peer address (k3s ``RemovePeer``), asking
    another member (the removed one stops as soon as it learns it is removed; k3s runs
    the member controller away from the node being removed for the same reason)."""
    found = client.members()
    for m in found:
        if m.get("name") != name:
            continue
        for peer in m.get("peerURLs", []):
            if peer.split("://", 1)[1].rsplit(":", 1)[0].strip("[]") == address:
                others = [u for o in found if o["ID"] != m["ID"] for u in o.get("clientURLs", [])]
                last: EtcdError | None = None
                for ep in [*others, ""]:  # "": the client's own endpoints
                    try:
                        client.call("cluster/member/remove", {"ID": m["ID"]}, endpoint=ep)
                        return True
                    except EtcdError as e:
                        if "member not found" in str(e):
                            return True
                        last = e
                assert last is not None
                raise last
    return False
