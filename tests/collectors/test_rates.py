"""Counter deltas, rates and CPU percentages: properties of the pure code."""

from __future__ import annotations

import dataclasses
import math
from itertools import accumulate, pairwise

import pytest
from hypothesis import assume, given, strategies as st

from collectors import CpuTimes, RateTracker, counter_delta, counter_rate, cpu_percent
from tests.collectors.strategies import cpu_times

counters = st.integers(min_value=0, max_value=2**64)
widths = st.sampled_from([None, 8, 32, 64])


@given(counters, counters, widths)
def test_delta_is_never_negative(previous: int, current: int, width: int | None) -> None:
    """Whatever two readings come in, the delta is at least zero."""
    if width is not None:
        previous %= 1 << width
        current %= 1 << width
    assert counter_delta(previous, current, width_bits=width) >= 0


@given(counters, counters, st.floats(allow_nan=False), widths)
def test_rate_is_never_negative(
    previous: int, current: int, elapsed: float, width: int | None
) -> None:
    """A rate is non-negative, or None when no time has passed."""
    if width is not None:
        previous %= 1 << width
        current %= 1 << width
    rate = counter_rate(previous, current, elapsed, width_bits=width)
    if elapsed > 0:
        assert rate is not None
        assert rate >= 0
    else:
        assert rate is None


@given(st.integers(0, 2**50), st.lists(st.integers(0, 2**40), min_size=2, max_size=20), st.data())
def test_splitting_a_window_keeps_the_delta(
    start: int, steps: list[int], data: st.DataObject
) -> None:
    """For a counter that only grows, the delta over a window equals the sum over any split."""
    readings = list(accumulate(steps, initial=start))
    cut = data.draw(st.integers(1, len(readings) - 2)) if len(readings) > 2 else 1
    whole = counter_delta(readings[0], readings[-1])
    assert whole == counter_delta(readings[0], readings[cut]) + counter_delta(
        readings[cut], readings[-1]
    )
    assert whole == sum(counter_delta(a, b) for a, b in pairwise(readings))


@given(
    st.integers(0, 2**32 - 1),
    st.lists(st.integers(0, 2**31 - 1), min_size=1, max_size=30),
)
def test_wraps_are_unwrapped(start: int, steps: list[int]) -> None:
    """A 32-bit counter that wraps (less than half its range per reading) loses nothing."""
    true = list(accumulate(steps, initial=start))
    wrapped = [value % 2**32 for value in true]
    assert sum(counter_delta(a, b, width_bits=32) for a, b in pairwise(wrapped)) == (
        true[-1] - true[0]
    )


@given(st.integers(1, 2**62), st.integers(0, 2**62))
def test_a_reset_counts_from_zero(previous: int, current: int) -> None:
    """A counter that went down was reset: what it counted since is the delta."""
    assume(current < previous)
    assert counter_delta(previous, current) == current


@given(st.lists(st.tuples(st.integers(0, 2**40), st.floats(0.001, 1e4)), min_size=2, max_size=10))
def test_rate_of_a_split_window_is_the_time_weighted_mean(steps: list[tuple[int, float]]) -> None:
    """The rate over a window is the time-weighted mean of the rates over its parts."""
    readings = list(accumulate((c for c, _ in steps), initial=0))
    times = list(accumulate((t for _, t in steps), initial=0.0))
    whole = counter_rate(readings[0], readings[-1], times[-1] - times[0])
    weighted = 0.0
    for (a, b), (ta, tb) in zip(pairwise(readings), pairwise(times), strict=True):
        part = counter_rate(a, b, tb - ta)
        assert part is not None
        weighted += part * (tb - ta)
    assert whole is not None
    assert math.isclose(whole * (times[-1] - times[0]), weighted, rel_tol=1e-9, abs_tol=1e-6)


def test_wrap_or_reset_is_decided_by_distance() -> None:
    """Near the top, a small drop is a wrap; from the middle, a drop is a reset."""
    assert counter_delta(2**32 - 10, 5, width_bits=32) == 15
    assert counter_delta(2**31, 5, width_bits=32) == 5
    with pytest.raises(ValueError, match="does not fit"):
        counter_delta(2**32, 5, width_bits=32)
    with pytest.raises(ValueError, match="non-negative"):
        counter_delta(-1, 5)


def test_rate_tracker_feeds_counter_sequences() -> None:
    """The tracker gives no rate on first sight, then delta/elapsed, and survives resets."""
    tracker = RateTracker()
    assert tracker.update("eth0", {"bytes": 100}, now=10.0) == {}
    assert tracker.update("eth0", {"bytes": 300}, now=12.0) == {"bytes_per_s": 100.0}
    assert tracker.update("eth0", {"bytes": 50}, now=17.0) == {"bytes_per_s": 10.0}  # reset
    assert tracker.update("eth0", {"bytes": 50}, now=17.0) == {}  # no time passed
    tracker.retain(set())
    assert tracker.update("eth0", {"bytes": 60}, now=20.0) == {}  # forgotten


@given(st.lists(st.tuples(st.integers(0, 2**40), st.floats(0.001, 100)), min_size=1, max_size=20))
def test_rate_tracker_is_never_negative(sequence: list[tuple[int, float]]) -> None:
    """Fed any counter sequence, including resets, the tracker never reports a negative rate."""
    tracker = RateTracker()
    now = 0.0
    for value, step in sequence:
        now += step
        for rate in tracker.update("x", {"c": value}, now).values():
            assert rate >= 0


def _plus(a: CpuTimes, b: CpuTimes) -> CpuTimes:
    return CpuTimes(*(getattr(a, f.name) + getattr(b, f.name) for f in dataclasses.fields(a)))


@given(st.one_of(st.none(), cpu_times), cpu_times)
def test_cpu_percentages_are_in_range(previous: CpuTimes | None, current: CpuTimes) -> None:
    """Every CPU percentage is within 0..100, whatever two samples come in."""
    result = cpu_percent(previous, current)
    for value in dataclasses.astuple(result):
        assert 0.0 <= value <= 100.0


@given(cpu_times, cpu_times)
def test_cpu_usage_and_idle_make_the_whole(base: CpuTimes, step: CpuTimes) -> None:
    """Busy, idle and iowait time add up to all the time that passed."""
    assume(step.total > 0)
    result = cpu_percent(base, _plus(base, step))
    assert math.isclose(result.usage + result.idle + result.iowait, 100.0, abs_tol=1e-9)


@given(cpu_times, cpu_times, cpu_times)
def test_splitting_a_cpu_window_keeps_the_usage(a: CpuTimes, ab: CpuTimes, bc: CpuTimes) -> None:
    """Usage over a window is the CPU-time-weighted mean of the usage over its two halves."""
    b = _plus(a, ab)
    c = _plus(b, bc)
    assume(ab.total > 0 and bc.total > 0)
    whole = cpu_percent(a, c).usage
    first, second = cpu_percent(a, b).usage, cpu_percent(b, c).usage
    mean = (first * ab.total + second * bc.total) / (ab.total + bc.total)
    assert math.isclose(whole, mean, rel_tol=1e-9, abs_tol=1e-9)


@given(cpu_times, cpu_times)
def test_cpu_reset_falls_back_to_since_boot(previous: CpuTimes, current: CpuTimes) -> None:
    """A sample with less total time than the previous one is measured since boot."""
    assume(current.total < previous.total)
    assert cpu_percent(previous, current) == cpu_percent(None, current)


def test_cpu_percent_from_two_samples() -> None:
    """Usage is busy time over all time between the samples, iowait counting as idle."""
    before = CpuTimes(user=100, system=50, idle=800, iowait=50)
    after = CpuTimes(user=130, system=60, idle=850, iowait=60, guest=5)
    result = cpu_percent(before, after)
    assert result.usage == pytest.approx(40.0)  # (30 + 10) of 100 seconds
    assert result.user == pytest.approx(30.0)
    assert result.iowait == pytest.approx(10.0)
    assert cpu_percent(after, after).usage == 0.0
