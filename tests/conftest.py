"""Shared test configuration: Hypothesis profiles and Trio's virtual clock."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

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


@pytest.fixture
def binary(tmp_path: Path) -> str:
    """An executable shell script."""
    path = tmp_path / "bin" / "agent"
    path.parent.mkdir()
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short directory under /tmp (socket paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="hv-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
