"""Fixtures of the end-to-end tests: fleets of real processes (see :mod:`tests.e2e.harness`).

* ``fleet`` (module scope): one fleet shared by a module's functional tests, so CI pays
  its start-up once. A module changes it by overriding the module-scoped
  ``fleet_options`` fixture (keyword arguments of :class:`~tests.e2e.harness.Fleet`).
* ``fresh_fleet`` (function scope): a factory, ``fresh_fleet(**options)``, for tests that
  break what they run; every fleet it made is closed at the test's end.
* ``fleet_root``: a fresh short directory under /tmp, removed at the end with every
  process still working in it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.e2e.harness import SAFETY_S, Fleet, processes_under
from tests.supervisor.helpers import kill_all

FleetFactory = Callable[..., Fleet]


def _short_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="hvf-", dir="/tmp"))


def _remove(path: Path) -> None:
    """Kill every process still working under ``path``, check that none is left, and
    remove the directory."""
    left = processes_under(path)
    kill_all(process.pid for process in left)
    psutil.wait_procs(left, timeout=SAFETY_S)
    survivors = [process.pid for process in processes_under(path)]
    shutil.rmtree(path, ignore_errors=True)
    assert not survivors, f"processes still working under {path}: {survivors}"


@pytest.fixture
def fleet_root() -> Iterator[Path]:
    """A short, empty directory under /tmp."""
    path = _short_dir()
    yield path
    _remove(path)


@pytest.fixture(scope="module")
def fleet_options() -> dict[str, Any]:
    """Keyword arguments of the module's shared ``fleet`` (override in a module)."""
    return {}


@pytest.fixture(scope="module")
def fleet(fleet_options: dict[str, Any]) -> Iterator[Fleet]:
    """One running fleet for the whole module."""
    root = _short_dir()
    try:
        with Fleet(root, **fleet_options) as running:
            yield running
    finally:
        _remove(root)


@pytest.fixture
def fresh_fleet() -> Iterator[FleetFactory]:
    """``fresh_fleet(**options)``: a new running fleet, closed at the test's end."""
    made: list[tuple[Fleet, Path]] = []

    def make(**options: Any) -> Fleet:
        root = _short_dir()
        fleet = Fleet(root, **options)
        made.append((fleet, root))
        fleet.__enter__()
        return fleet

    yield make
    for fleet, root in reversed(made):
        try:
            fleet.close()
        finally:
            _remove(root)
