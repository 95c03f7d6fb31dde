"""The shared time grid on which collectors run: properties of the pure schedule."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, strategies as st

from collectors._schedule import Schedule

intervals = st.sampled_from([0.1, 0.3, 1.0, 5.0, 10.0, 60.0, 300.0, 7.3])
jobs = st.dictionaries(st.sampled_from("abcdef"), intervals, min_size=1, max_size=6)
starts = st.floats(min_value=0, max_value=1e6, allow_nan=False)


@given(jobs, starts, st.integers(1, 200))
def test_punctual_wakeups_run_every_tick_once(
    intervals: dict[str, float], start: float, wakeups: int
) -> None:
    """Waking at each next deadline runs every job on each of its grid points, exactly once."""
    schedule = Schedule(intervals, start=start)
    runs: dict[str, list[float]] = {name: [] for name in intervals}
    for _ in range(wakeups):
        now = schedule.next_deadline()
        due = schedule.pop_due(now)
        assert due.names, "a wake-up at the next deadline always finds work"
        assert not due.missed
        for name in due.names:
            runs[name].append(now)
    for name, times in runs.items():
        for k, at in enumerate(times):
            assert math.isclose(at, start + k * intervals[name], rel_tol=0, abs_tol=2e-3)


@given(jobs, starts, st.integers(1, 100))
def test_equal_intervals_share_every_wakeup(
    intervals: dict[str, float], start: float, wakeups: int
) -> None:
    """Jobs with the same interval are always due in the same wake-up."""
    schedule = Schedule(intervals, start=start)
    for _ in range(wakeups):
        due = set(schedule.pop_due(schedule.next_deadline()).names)
        for a in due:
            for b, interval in intervals.items():
                if interval == intervals[a]:
                    assert b in due


@given(jobs, starts, st.lists(st.floats(0, 1000), min_size=1, max_size=50))
def test_late_wakeups_skip_but_never_repeat(
    intervals: dict[str, float], start: float, delays: list[float]
) -> None:
    """However late the wake-ups, runs plus missed ticks account for every grid point once."""
    schedule = Schedule(intervals, start=start, tolerance_s=0)
    served = dict.fromkeys(intervals, 0)
    now = start
    for delay in delays:
        now = max(now, schedule.next_deadline()) + delay
        due = schedule.pop_due(now)
        for name in due.names:
            served[name] += 1 + due.missed.get(name, 0)
            assert schedule.deadline(name) > now
    for name, interval in intervals.items():
        grid_points = math.floor((now - start) / interval) + 1
        assert abs(served[name] - grid_points) <= 1  # float rounding at the boundary


def test_multiples_meet_on_common_deadlines() -> None:
    """A 60 s and a 300 s job wake the process once every 300 s, not twice."""
    schedule = Schedule({"cpu": 60.0, "disk": 300.0}, start=1000.0)
    wakeups = []
    while (deadline := schedule.next_deadline()) <= 1600.0:
        wakeups.append((deadline, schedule.pop_due(deadline).names))
    assert wakeups == [
        (1000.0, ("cpu", "disk")),
        (1060.0, ("cpu",)),
        (1120.0, ("cpu",)),
        (1180.0, ("cpu",)),
        (1240.0, ("cpu",)),
        (1300.0, ("cpu", "disk")),
        (1360.0, ("cpu",)),
        (1420.0, ("cpu",)),
        (1480.0, ("cpu",)),
        (1540.0, ("cpu",)),
        (1600.0, ("cpu", "disk")),
    ]


def test_tolerance_merges_rounding_differences() -> None:
    """Grid points that differ only by float rounding are served in one wake-up."""
    schedule = Schedule({"a": 0.1, "b": 0.3}, start=0.0)
    assert schedule.pop_due(0.0).names == ("a", "b")
    assert schedule.pop_due(schedule.next_deadline()).names == ("a",)
    assert schedule.pop_due(schedule.next_deadline()).names == ("a",)
    assert 3 * 0.1 != 0.3
    assert schedule.pop_due(schedule.next_deadline()).names == ("a", "b")


def test_empty_schedule_never_wakes() -> None:
    """With no jobs the next deadline is infinity."""
    assert Schedule({}, start=0.0).next_deadline() == math.inf


def test_bad_intervals_are_rejected() -> None:
    """Zero, negative and infinite intervals raise ValueError naming the job."""
    with pytest.raises(ValueError, match="'x'"):
        Schedule({"x": 0.0}, start=0.0)
    with pytest.raises(ValueError, match="'y'"):
        Schedule({"y": math.inf}, start=0.0)
