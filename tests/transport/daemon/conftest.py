"""Fixtures of the daemon's end-to-end tests: a short work directory, a host running
`hostvisor run`, and cleanup of every process they leave."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.supervisor.helpers import kill_all
from tests.transport.daemon.daemon_helpers import Host
from tests.transport.daemon.update_world import http_server, signer, world

__all__ = ["host", "http_server", "signer", "work", "world"]


@pytest.fixture
def work() -> Iterator[Path]:
    """A short work directory (its control socket path must fit in 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="hv-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def host(tmp_path: Path, work: Path) -> Iterator[Host]:
    h = Host(tmp_path, work)
    seen: list[int] = []
    try:
        yield h
    finally:
        if h.daemon is not None and h.daemon.proc.poll() is None:
            seen += h.pids()
            h.daemon.proc.kill()
            h.daemon.proc.wait(timeout=60)
        kill_all(seen + h.pids())
