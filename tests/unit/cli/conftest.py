"""Fixtures of the lifecycle commands' hostile-input tests (tests/support/hostile_lifecycle.py)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.hostile_lifecycle import make_world


@pytest.fixture(scope="module")
def lifecycle_node() -> Iterator[socket.socket]:
    """The cluster's one node: a socket listening on loopback, never accepting."""
    with socket.create_server(("127.0.0.1", 0), backlog=16) as sock:
        sock.setblocking(False)
        yield sock


@pytest.fixture
def no_connection(lifecycle_node: socket.socket) -> Iterator[None]:
    """Fails the test when anything connected to the node while it ran."""
    yield
    try:
        conn, _ = lifecycle_node.accept()
    except BlockingIOError:
        return
    conn.close()
    pytest.fail("mk8s connected to the node before refusing")


@pytest.fixture(scope="module")
def lifecycle_world(
    tmp_path_factory: pytest.TempPathFactory, lifecycle_node: socket.socket
) -> Path:
    return make_world(tmp_path_factory.mktemp("world"), lifecycle_node.getsockname()[1])
