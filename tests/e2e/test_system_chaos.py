"""A short chaos run of the whole system in CI (the long one is
benchmarks/bench_system_chaos.py), a run whose spool is too small to show that the checks
find lost reports, and the checks' own pieces.

Random SIGKILLs to agents, their process groups and daemons, SIGSTOP/SIGCONT of daemons,
SIGTERM and SIGKILL of the Manager; afterwards every agent runs exactly once, the
Manager's view matches the hosts, and no metric report was lost (see tests/system_chaos.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.system_chaos import (
    ACTIONS,
    SpoolWatch,
    SystemChaosRun,
    dropped_lines,
    unexplained_gaps,
)
from transport import manager_pb2

#: Seconds of chaos; CI runs a short one, HOSTVISOR_CHAOS_S asks for more.
DURATION_S = float(os.environ.get("HOSTVISOR_CHAOS_S", "20"))


@pytest.mark.slow
def test_system_chaos_breaks_no_invariant(fleet_root: Path) -> None:
    """Whatever is killed or stopped, the fleet ends with one run per agent, the Manager
    shows what the hosts run, and every report made reached the Manager's database."""
    # The Manager is hit more often than in the long run, so that a short run restarts it.
    actions = {**ACTIONS, "stop manager": 0.05, "kill manager": 0.05}
    run = SystemChaosRun(fleet_root, nodes=2, agents_per_node=3, seed=3, actions=actions)
    report = run.run(DURATION_S)
    assert report.problems == [], (report.problems, dict(report.actions), report.phases_s)
    assert report.actions["kill agent"] + report.actions["kill agent group"] > 0
    assert report.actions["kill daemon"] > 0
    assert report.manager_starts > 1
    assert report.spawns > 6  # restarts happened, and were counted
    assert report.spooled_points > 0  # reports went through the spools and were found


@pytest.mark.slow
def test_a_spool_too_small_is_caught(fleet_root: Path) -> None:
    """With a spool that holds two reports and a Manager that keeps going down, reports are
    lost, and the run says so: points spooled but never stored, or a gap no daemon's kill
    explains, and the daemon's own D2003 lines."""
    run = SystemChaosRun(
        fleet_root,
        nodes=1,
        agents_per_node=1,
        seed=5,
        actions={"kill manager": 1.0},
        spool={"max_bytes": "8KiB", "max_age": "1h"},
    )
    report = run.run(4.0)
    problems = "\n".join(report.problems)
    assert "spooled points never stored" in problems or "no point stored" in problems, problems
    assert "D2003 the report spool is full" in problems, problems


def test_a_gap_needs_a_disruption() -> None:
    """A step longer than the limit is a loss unless the node's daemon was down or stopped
    around it (with a margin after it came back); short steps need nothing."""
    stamps = [100, 101, 103, 104, 110, 111, 120]
    assert unexplained_gaps(stamps, [], limit=3) == ([(104, 110), (111, 120)], 0)
    assert unexplained_gaps(stamps, [(105.5, 106.0)], limit=3, margin=2) == ([(111, 120)], 1)
    # A disruption that ended well before the gap, or began after it, explains nothing.
    assert unexplained_gaps(stamps, [(90.0, 101.0), (121.5, 125.0)], limit=3, margin=2)[1] == 0
    # The last point before the gap may come from just before the kill; the first after
    # it from the margin after the restart.
    assert unexplained_gaps([100, 110], [(100.9, 107.5)], limit=3, margin=2) == ([], 1)


def test_only_d2003_lines_count_as_dropped() -> None:
    log = (
        "12:00:00 WARNING hostvisor.manager: D2001 heartbeat to the Manager: UNAVAILABLE\n"
        "12:00:01 WARNING hostvisor.manager: D2003 the report spool is full (8192 bytes)\n"
        "12:00:02 INFO hostvisor.manager: registered as node node-1\n"
    )
    assert dropped_lines(log) == [
        "12:00:01 WARNING hostvisor.manager: D2003 the report spool is full (8192 bytes)"
    ]


def _report(*points: tuple[str, int]) -> bytes:
    request = manager_pb2.ReportMetricsRequest(
        node_id="node-1",
        metrics=[manager_pb2.MetricData(type=kind, timestamp=t) for kind, t in points],
    )
    return request.SerializeToString()


def test_spool_watch_reads_every_report_renamed_into_place(tmp_path: Path) -> None:
    """Reports land as the spool writes them (a temporary file renamed into place); the
    watch reads each one's points; other files are left alone."""
    spool = tmp_path / "spool"
    watch = SpoolWatch("node-1", spool)
    try:
        for seq, points in enumerate([[("cpu", 1), ("memory", 1)], [("cpu", 2)]], start=1):
            temporary = spool / f".tmp-{seq}"
            temporary.write_bytes(_report(*points))
            temporary.rename(spool / f"{seq:016d}-{seq * 1000}.metrics")
        (spool / ".tmp-x").write_bytes(b"not a report")
        (spool / ".tmp-x").rename(spool / f"{3:016d}-3000.states")
    finally:
        watch.close()
    assert watch.points() == {("cpu", 1), ("memory", 1), ("cpu", 2)}
    assert (watch.reports, watch.unread, watch.overflowed) == (2, 0, False)
    assert 0 < watch.peak_bytes <= watch.size()
    assert len(watch.waiting()) == 3
    assert watch.size() == sum(p.stat().st_size for p in spool.iterdir())
