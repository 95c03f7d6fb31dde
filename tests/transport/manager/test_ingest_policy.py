"""The spacing of the ingest's batches (``batch_delay``): pure, property-tested."""

from __future__ import annotations

import itertools

from hypothesis import given, strategies as st

from transport.manager._ingest_policy import batch_delay

times = st.floats(min_value=0, max_value=1e6, allow_nan=False)
intervals = st.floats(min_value=0, max_value=60, allow_nan=False)


@given(
    now=times,
    last=st.none() | times,
    queued=st.integers(min_value=1, max_value=2000),
    max_batch=st.integers(min_value=1, max_value=1000),
    interval=intervals,
)
def test_the_wait_is_bounded_and_spaces_batches(
    now: float, last: float | None, queued: int, max_batch: int, interval: float
) -> None:
    """Never negative, never longer than the interval; a whole batch, a first batch or a
    clock gone back never waits; otherwise the batch starts exactly one interval after
    the last (or at once when that is past)."""
    delay = batch_delay(
        now, last_start=last, queued=queued, max_batch=max_batch, interval_s=interval
    )
    assert 0 <= delay <= interval
    if queued >= max_batch or last is None or now < last:
        assert delay == 0
    else:
        assert delay == max(0.0, last + interval - now)


@given(
    arrivals=st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), min_size=1),
    interval=st.floats(min_value=0.001, max_value=10, allow_nan=False),
)
def test_a_writer_following_it_starts_batches_an_interval_apart(
    arrivals: list[float], interval: float
) -> None:
    """A writer (taking no time to write) that asks when an item arrives to an empty
    queue and takes every item queued when its wait ends: its batches start at least an
    interval apart, and every item is taken within an interval of its arrival."""
    items = sorted(arrivals)
    last: float | None = None
    starts: list[float] = []
    taken = 0
    while taken < len(items):
        first = items[taken]
        start = first + batch_delay(
            first, last_start=last, queued=1, max_batch=10**9, interval_s=interval
        )
        batch = [t for t in items[taken:] if t <= start]
        assert batch and all(start - t <= interval + 1e-9 for t in batch)
        taken += len(batch)
        starts.append(start)
        last = start
    assert all(b - a >= interval - 1e-6 for a, b in itertools.pairwise(starts))
