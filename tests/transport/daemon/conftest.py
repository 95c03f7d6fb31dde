"""Fixtures of the daemon's end-to-end tests: a short work directory, a host running
`hostvisor run`, and cleanup of every process they leave."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.supervisor.helpers import kill_all
from tests.transport.daemon.daemon_helpers import Host
from tests.transport.daemon.update_world import http_server, signer, world

__all__ = ["host", "http_server", "signer", "work", "world"]


@pytest.fixture
def work() -> Iterator[Path]:
    """A short work directory (its control socket path must fit in 107 bytes).

    A daemon leaves its agents running when it exits (``stop_agents_on_exit`` is false by
    default), so every process still working in this directory is killed at the end.
    """
    path = Path(tempfile.mkdtemp(prefix="hv-", dir="/tmp"))
    yield path
    kill_all(working_in(path))
    shutil.rmtree(path, ignore_errors=True)


def working_in(path: Path) -> list[int]:
    """The processes whose working directory is ``path`` or below it."""
    found = []
    for process in psutil.process_iter():
        try:
            cwd = process.cwd()
        except (psutil.Error, OSError):
            continue
        if cwd == str(path) or cwd.startswith(f"{path}/"):
            found.append(process.pid)
    return found


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
