"""Shared test configuration: Hypothesis profiles and Trio's virtual clock."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings
from trio.testing import MockClock

# CI machines are shared and noisy: no per-example deadline; fixed seed on CI so a red
# build can be reproduced.
settings.register_profile(
    "default",
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.register_profile(
    "ci",
    parent=settings.get_profile("default"),
    derandomize=True,
    print_blob=True,
)
settings.load_profile("ci" if os.environ.get("CI") else "default")


@pytest.fixture
def autojump_clock() -> MockClock:
    """Virtual time that jumps ahead whenever every task is blocked."""
    return MockClock(autojump_threshold=0)
