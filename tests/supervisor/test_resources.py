"""Process-tree resource sampling from /proc, and the CPU-percent meter."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from hypothesis import given, strategies as st

from supervisor._health._resources import CpuMeter, tree_usage

samples = st.lists(
    st.tuples(st.floats(min_value=0.001, max_value=100), st.integers(min_value=0, max_value=10**6)),
    min_size=1,
    max_size=50,
)


@given(samples)
def test_cpu_percent_is_never_negative(steps: list[tuple[float, int]]) -> None:
    """Whatever the totals do (a process of the tree may take its ticks away), 0 <= %."""
    meter = CpuMeter(ticks_per_second=100)
    now, total = 0.0, 0
    assert meter.update(now, total) is None
    for dt, ticks in steps:
        now += dt
        percent = meter.update(now, ticks)
        assert percent is not None and percent >= 0


@given(
    st.lists(
        st.tuples(
            st.floats(min_value=0.01, max_value=10), st.integers(min_value=0, max_value=1000)
        ),
        min_size=1,
        max_size=30,
    )
)
def test_cpu_percent_over_split_intervals_averages_to_the_whole(
    steps: list[tuple[float, int]],
) -> None:
    """With growing totals, the time-weighted average of the pieces equals the whole."""
    meter, whole = CpuMeter(ticks_per_second=100), CpuMeter(ticks_per_second=100)
    now, total = 0.0, 0
    meter.update(now, total)
    whole.update(now, total)
    weighted = 0.0
    for dt, used in steps:
        now += dt
        total += used
        percent = meter.update(now, total)
        assert percent is not None
        weighted += percent * dt
    overall = whole.update(now, total)
    assert overall is not None
    assert weighted / now == pytest.approx(overall, rel=1e-9, abs=1e-9)


def test_first_sample_and_no_elapsed_time_give_none() -> None:
    """The first sample, and a sample at the same instant, report nothing."""
    meter = CpuMeter(ticks_per_second=100)
    assert meter.update(5.0, 10) is None
    assert meter.update(5.0, 20) is None
    assert meter.update(6.0, 120) == pytest.approx(100.0)
    meter.reset()
    assert meter.update(7.0, 500) is None


def test_tree_usage_counts_descendants_and_their_memory() -> None:
    """A child holding 64 MiB and a busy grandchild are both counted in the leader's tree."""
    hog = (
        "b = bytearray(64 << 20); import sys; sys.stdout.write('ok\\n'); sys.stdout.flush(); "
        "import time; time.sleep(1000)"
    )
    script = f'{sys.executable} -c "{hog}" & while :; do :; done'
    proc = subprocess.Popen(
        ["/bin/sh", "-c", script], stdout=subprocess.PIPE, start_new_session=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ok\n"
        usage = tree_usage(proc.pid)
        assert usage is not None
        assert usage.processes == 2
        assert usage.rss_bytes > 64 << 20
        before = usage.cpu_ticks
        deadline = time.monotonic() + 30
        while (now := tree_usage(proc.pid)) is not None and now.cpu_ticks <= before:
            assert time.monotonic() < deadline, "the busy shell never used a tick"
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
    assert tree_usage(proc.pid) is None
