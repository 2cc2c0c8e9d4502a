"""What grows with nodes and has a limit of its own (docs/scale.md): open files, one
socket per node's connection."""

from __future__ import annotations

import resource
import subprocess
import sys

from tests.support.paths import ROOT

REPO = ROOT

CHILD = """
import resource, sys
from mk8s.deploy.engine.remote import allow_open_files
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[2]), hard))
allow_open_files(int(sys.argv[1]))
print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""
HARD = resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def _soft_after(nodes: int, soft: int) -> int:
    p = subprocess.run(
        [sys.executable, "-c", CHILD, str(nodes), str(soft)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return int(p.stdout)


def test_a_thousand_nodes_raise_a_low_soft_limit() -> None:
    want = 1000 * 2 + 256
    expected = want if HARD == resource.RLIM_INFINITY else min(want, HARD)
    assert _soft_after(1000, 1024) == expected


def test_a_limit_already_high_enough_is_left_alone() -> None:
    assert _soft_after(10, 1024) == 1024
    assert _soft_after(10, 64) == 10 * 2 + 256  # raised only as far as the run needs
