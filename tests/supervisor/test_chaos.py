"""A short chaos run of the real daemon in CI (the long one is benchmarks/bench_chaos.py).

Random SIGKILLs to agents, to their process groups and to the daemon, SIGSTOP/SIGCONT of
both, SIGHUP; afterwards every agent runs exactly once, nothing of an earlier run is left,
no zombie, and restart counts add up (see tests/chaos.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.chaos import ChaosRun

#: Seconds of chaos; CI runs a short one, HOSTVISOR_CHAOS_S asks for more.
DURATION_S = float(os.environ.get("HOSTVISOR_CHAOS_S", "12"))


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_chaos_leaves_every_agent_running_exactly_once(tmp_path: Path, seed: int) -> None:
    """Whatever is killed, stopped or reloaded, the daemon ends with one run per agent."""
    report = ChaosRun(tmp_path, agents=4, seed=seed).run(DURATION_S)
    assert report.problems == [], (report.problems, dict(report.actions))
    assert report.actions["kill agent"] + report.actions["kill agent group"] > 0
    assert report.spawns > 4  # restarts happened, and were counted
