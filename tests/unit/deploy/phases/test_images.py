"""mk8s/deploy/phases/images.py: the agents' port check passes the servers' addresses as data."""

from __future__ import annotations

import subprocess
from pathlib import Path

from mk8s.deploy.phases.images import port_check
from tests.support.clusters import (
    images_cluster,
)


def test_port_check_passes_addresses_as_data(tmp_path: Path) -> None:
    c = images_cluster(tmp_path, "{distribution: servers}")
    cmd = port_check(c.servers)
    assert "10.0.0.1:9345" in cmd.display() and "10.0.0.1:5001" in cmd.display()
    # Run the script itself against loopback ports nothing listens on: both reported.
    script = cmd.pieces[4]
    assert isinstance(script, str)
    r = subprocess.run(
        ["sh", "-c", script, "x", "127.0.0.1:1", "127.0.0.1:2"], capture_output=True, text=True
    )
    assert r.stdout.split() == ["unreachable", "127.0.0.1:1", "unreachable", "127.0.0.1:2"]
