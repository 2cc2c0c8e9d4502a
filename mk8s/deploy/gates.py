"""What an RKE2 version can do, by release (pure).

Another table of version gates grows beside this one (the embedded registry mirror
and friends); the two belong in one table.
"""

from __future__ import annotations

from mk8s.bundle.versions import parse_tag

# Image archives placed in agent/images while RKE2 runs are imported by a watcher only
# from the January 2025 releases on: v1.29.13, v1.30.9, v1.31.5 and every v1.32 (k3s
# pkg/agent/containerd/watcher.go; the gate is in k3s-io/docs docs/import-images.md
# and rancher/rke2-docs docs/add-ons/import-images.md, which misprints the v1.29 entry
# as "v1.30.13"; RKE2 v1.29.13+rke2r1, released on 27 Jan 2025, carries the k3s
# "Backports for 2025-01", docs/release-notes-old/v1.29.X.md). Before, RKE2 imported
# them only when it started.
IMPORTS_WHILE_RUNNING_SINCE = {29: 13, 30: 9, 31: 5}


def imports_while_running(version: str) -> bool:
    """Whether RKE2 ``version`` (a tag such as ``v1.29.13+rke2r1``) imports image
    archives that appear in agent/images while it runs. False for anything that is not
    a tag: then only a restart is sure to import them."""
    v = parse_tag(version)
    if v is None or v.major != 1:
        return v is not None and v.major > 1
    since = IMPORTS_WHILE_RUNNING_SINCE.get(v.minor)
    if since is None:
        return v.minor > max(IMPORTS_WHILE_RUNNING_SINCE)
    return v.patch >= since


__all__ = ["IMPORTS_WHILE_RUNNING_SINCE", "imports_while_running"]
