"""The readiness poll schedule: soon after a wait starts, then backing off to the
session's poll interval (never above it, and never faster than asked)."""

from __future__ import annotations

from itertools import islice

import pytest

from mk8s.deploy.engine import readiness


@pytest.mark.parametrize(
    ("interval", "expected"),
    [
        (0.5, [0.1, 0.2, 0.4, 0.5, 0.5, 0.5]),
        (2.0, [0.1, 0.2, 0.4, 0.8, 1.6, 2.0]),
        (0.1, [0.1] * 6),
        (0.05, [0.05] * 6),  # a faster interval is never slowed down
    ],
)
def test_poll_delays_back_off_to_the_interval(interval: float, expected: list[float]) -> None:
    assert list(islice(readiness._delays(interval), 6)) == pytest.approx(expected)
