"""Fixtures shared by the supervisor tests."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


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
