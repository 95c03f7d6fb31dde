"""Properties of the history downsampling and the summary (pure)."""

from __future__ import annotations

import math

from hypothesis import given, strategies as st

from transport.manager._downsample import bucket_seconds, history, summary
from transport.manager._model import MetricRow

START = 1_764_720_000
KEYS = st.sampled_from(["usage_percent", "rx_bytes", "tx_bytes", "cores"])
VALUES = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False)
SPANS = st.sampled_from([0, 59, 3600, 3601, 86_400, 86_401, 7 * 86_400, 30 * 86_400, 40 * 86_400])


@st.composite
def windows(draw: st.DrawFn) -> tuple[int, int, list[MetricRow]]:
    """A window [start, end] and rows around it (some outside), ids unique."""
    start = START + draw(st.integers(0, 86_400))
    span = draw(st.one_of(SPANS, st.integers(0, 31 * 86_400)))
    end = start + span
    stamps = draw(st.lists(st.integers(start - 600, end + 600), max_size=60))
    rows = [
        MetricRow(
            id=index + 1,
            node_id="n",
            type="cpu",
            timestamp=stamp,
            values=draw(st.dictionaries(KEYS, VALUES, min_size=1)),
            created_at=float(index),
        )
        for index, stamp in enumerate(stamps)
    ]
    return start, end, rows


def test_bucket_sizes_by_span() -> None:
    assert [bucket_seconds(0, span) for span in (0, 3600, 3601, 86_400, 86_401)] == [
        0,
        0,
        300,
        300,
        1800,
    ]
    assert bucket_seconds(0, 7 * 86_400) == 1800
    assert bucket_seconds(0, 7 * 86_400 + 1) == 7200
    assert bucket_seconds(0, 30 * 86_400) == 7200
    assert bucket_seconds(0, 30 * 86_400 + 1) == 86_400


@given(windows())
def test_history_points_lie_in_the_window_in_order(
    window: tuple[int, int, list[MetricRow]],
) -> None:
    start, end, rows = window
    result = history(rows, start=start, end=end)
    stamps = [row.timestamp for row in result]
    assert all(start <= stamp <= end for stamp in stamps)
    assert stamps == sorted(stamps)
    inside = [row for row in rows if start <= row.timestamp <= end]
    size = bucket_seconds(start, end)
    if size == 0:  # raw rows, each once
        assert sorted(r.id for r in result) == sorted(r.id for r in inside)
    else:  # one point per non-empty bucket
        assert len(stamps) == len(set(stamps))
        assert len(result) == len({row.timestamp // size for row in inside})


@given(windows())
def test_buckets_average_every_key(window: tuple[int, int, list[MetricRow]]) -> None:
    start, end, rows = window
    size = bucket_seconds(start, end)
    if size == 0:
        return
    for point in history(rows, start=start, end=end):
        bucket = point.timestamp // size * size  # its start, or the window's
        members = [
            row
            for row in rows
            if start <= row.timestamp <= end and row.timestamp // size * size == bucket
        ]
        assert members
        keys = {key for row in members for key in row.values}
        assert set(point.values) == keys
        for key in keys:
            found = [row.values[key] for row in members if key in row.values]
            assert min(found) <= point.values[key] <= max(found)
            assert math.isclose(
                point.values[key], math.fsum(found) / len(found), rel_tol=1e-9, abs_tol=1e-6
            )
        newest = max(members, key=lambda row: (row.timestamp, row.id))
        assert (point.id, point.created_at) == (newest.id, newest.created_at)


@given(windows())
def test_summary_bounds(window: tuple[int, int, list[MetricRow]]) -> None:
    _, _, rows = window
    found = summary(rows)
    with_key = [row for row in rows if "usage_percent" in row.values]
    if not with_key:
        assert found is None
        return
    assert found is not None
    assert found["min"] <= found["avg"] <= found["max"]
    assert found["min"] == min(row.values["usage_percent"] for row in with_key)
    assert found["max"] == max(row.values["usage_percent"] for row in with_key)
    newest = max(with_key, key=lambda row: (row.timestamp, row.id))
    assert found["latest"] == newest.values["usage_percent"]


def test_a_day_in_five_minute_buckets() -> None:
    rows = [
        MetricRow(i + 1, "n", "network", START + i * 60, {"rx_bytes": float(i), "tx_bytes": 1.0})
        for i in range(24 * 60)
    ]
    points = history(rows, start=START, end=START + 86_400)
    assert len(points) == 288
    assert points[0].timestamp == START and points[1].timestamp == START + 300
    assert dict(points[0].values) == {"rx_bytes": 2.0, "tx_bytes": 1.0}
    assert summary(rows) is None
