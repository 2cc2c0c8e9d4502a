"""What a running server's API says, asked in the same round trip as the node's facts.

On a server whose ``rke2-server`` is active, the facts also carry its own ``/readyz``
answer and the sha256 of the admin kubeconfig RKE2 wrote; the server the cluster is
reached through (the first server) also lists the cluster's nodes. A converged
cluster is then judged from the facts alone (docs/scale.md): no second round trip to
any node. Read-only, like the rest of the facts.
"""

from __future__ import annotations

from mk8s.deploy.command import Command
from mk8s.deploy.rke2config import NodePaths

# The node list follows this line, to the end of the output (``kubectl get nodes -o
# json``); everything before it is the facts' ``key=value`` lines.
LISTING_MARK = "--- mk8s node list ---"
# Bounds each kubectl inside the facts (coreutils ``timeout``): an API that hangs
# slows the facts by this much at most, and the node is then simply not converged.
KUBECTL_SECONDS = 30


def probe(paths: NodePaths, *, list_nodes: bool) -> Command:
    """For a server: when ``rke2-server`` is active, ``readyz=<first line of
    /readyz>`` and ``sha256 <hex> <admin kubeconfig>``; with ``list_nodes``, then the
    mark and the node list (nothing after the mark when kubectl fails)."""
    text = (
        "kubectl={kubectl}; kc={kc}; t={t}; "
        'if systemctl is-active --quiet rke2-server 2>/dev/null && [ -f "$kc" ]; then '
        'echo "sha256 $(sha256sum "$kc" | cut -d" " -f1) $kc"; '
        'echo "readyz=$(timeout "$t" "$kubectl" --kubeconfig "$kc" get --raw /readyz'
        ' 2>/dev/null | head -n 1)"; '
    )
    if list_nodes:
        text += (
            "echo {mark}; "
            'timeout "$t" "$kubectl" --kubeconfig "$kc" get nodes -o json 2>/dev/null; '
        )
    text += "fi; true"
    return Command.script(
        text,
        {
            "kubectl": paths.kubectl,
            "kc": paths.kubeconfig,
            "t": KUBECTL_SECONDS,
            "mark": LISTING_MARK,
        },
        sudo=True,
        description="ask the running server's API",
        timeout=2 * KUBECTL_SECONDS + 30,
    )


def split_listing(out: str) -> tuple[str, str | None]:
    """(the facts' lines, the node list or None when none was asked or answered)."""
    head, mark, listing = out.partition(LISTING_MARK + "\n")
    if not mark:
        return out, None
    return head, listing if listing.strip() else None


__all__ = ["LISTING_MARK", "probe", "split_listing"]
