"""Which RKE2 releases can do what: the release gates the stand-in enforces.

Runs on the test nodes inside the stand-in program (Python 3 stdlib only; embedded
by ``rke2_program``). Transcribed from upstream on its own, not imported from mk8s
(``tests/unit/test_rke2gates.py`` checks the two tables agree): the stand-in must refuse what
the real release refuses even when mk8s's table is wrong.
"""

from __future__ import annotations

import re

# upstream: see each entry; the rules using them carry their own ids [CONTRACT IP4 IP5 RG5 UN3 UN4]
# feature -> the first patch of each minor that has it; a minor above the last listed
# has it from .0, a minor below the first listed never does.
SINCE: dict[str, tuple[tuple[int, int, int], ...]] = {
    # rancher/rke2-docs docs/install/registry_mirror.md, Version Gate (experimental
    # from the January 2024 releases; dropped from the page when they went EOL).
    "embedded-mirror": ((1, 26, 13), (1, 27, 10), (1, 28, 6), (1, 29, 1)),
    # rancher/rke2-docs docs/add-ons/import-images.md, Version Gate: files placed in
    # agent/images while RKE2 runs are imported from the January 2025 releases
    # (k3s-io/k3s pkg/agent/containerd/watcher.go); before, at start only.
    "import-while-running": ((1, 29, 13), (1, 30, 9), (1, 31, 5)),
    # k3s-io/k3s pkg/agent/containerd/containerd.go preloadFile: client.Import with
    # WithAllPlatforms(true) and, from k3s-io/k3s#10136 (rancher/rke2#5944 and its
    # backports #5977-#5979), WithSkipMissing(); before, an index whose other platforms
    # are absent fails the file: "content digest sha256:...: not found".
    "import-partial-index": ((1, 27, 15), (1, 28, 11), (1, 29, 6), (1, 30, 2)),
    # rancher/rke2 bundle/lib/systemd/system/rke2-*.service at each tag: ExecCondition=
    # skips starting one unit while the other role's is active (commit "Prevent a node
    # transform from agent/server to server/agent"); Conflicts= before (units.py).
    "units-exec-condition": ((1, 32, 13), (1, 33, 9), (1, 34, 5), (1, 35, 2)),
    # the same files: the ExecStartPre refusing to start while nm-cloud-setup.service is
    # enabled is gone from these releases and every 1.35 (units.py).
    "nm-cloud-setup-allowed": ((1, 32, 11), (1, 33, 7), (1, 34, 3)),
}
# feature -> releases on which it is broken.
BROKEN: dict[str, tuple[tuple[int, int, int], ...]] = {
    # rancher/rke2#9197: agents cannot bootstrap from the embedded registry mirror;
    # the 1.31 backport (#9228) was never released (1.31 end of life).
    "embedded-mirror-agents": ((1, 31, 13), (1, 31, 14)),
}

_TAG = re.compile(r"v?(\d+)\.(\d+)\.(\d+)")


def has(feature: str, tag: str) -> bool:
    """Whether release ``tag`` (``v1.31.5+rke2r1``) has ``feature`` and is not broken."""
    m = _TAG.match(tag)
    if m is None:
        return True
    v = (int(m[1]), int(m[2]), int(m[3]))
    if v in BROKEN.get(feature, ()):
        return False
    firsts = SINCE.get(feature)
    if not firsts:
        return True
    by_minor = {(a, b): c for a, b, c in firsts}
    first = by_minor.get(v[:2])
    return v[2] >= first if first is not None else v[:2] > max(by_minor)
