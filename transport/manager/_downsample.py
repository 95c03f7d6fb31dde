"""Metric history as the REST API answers it: raw or averaged in time buckets. PURE.

Theory of operation: the original API answers a history query with raw rows for spans up
to an hour and with averages over time buckets for longer spans, so that a chart never
gets more than a few hundred points (:func:`bucket_seconds`):

=================  ==============
span (end-start)   bucket
=================  ==============
<= 1 h             raw rows
<= 24 h            5 min
<= 7 d             30 min
<= 30 d            2 h
longer             1 day (the API refuses spans over 30 days; this keeps the answer small)
=================  ==============

Buckets are aligned on the epoch (a bucket of 5 minutes starts at a multiple of 300 s),
so the points of a chart stay put as its window slides; a bucket's timestamp is its start,
or ``start`` for the first bucket when that starts before the window. Every value key is
averaged over the rows of the bucket that have it (the original keeps only
``usage_percent``, so its network chart reads 0 beyond an hour). A bucket carries the id
and ``created_at`` of its newest row.

:func:`summary` is the ``/summary`` endpoint's ``{min, max, avg, latest}`` of
``usage_percent``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from types import MappingProxyType

from transport.manager._model import MetricRow

__all__ = ["SUMMARY_KEY", "bucket_seconds", "history", "summary"]

HOUR_S = 3600
DAY_S = 86_400
SUMMARY_KEY = "usage_percent"
"""The value :func:`summary` summarises."""

_STEPS = ((HOUR_S, 0), (DAY_S, 300), (7 * DAY_S, 1800), (30 * DAY_S, 7200))


def bucket_seconds(start: int, end: int) -> int:
    """The bucket size for a query from ``start`` to ``end`` (0: raw rows).

    Args:
        start: The first second of the window (unix seconds).
        end: The last second of the window.

    Returns:
        The bucket length in seconds, or 0 for raw rows.
    """
    span = end - start
    for longest, size in _STEPS:
        if span <= longest:
            return size
    return DAY_S


def _average(rows: Sequence[MetricRow], timestamp: int) -> MetricRow:
    by_key: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.values.items():
            by_key.setdefault(key, []).append(value)
    newest = max(rows, key=lambda row: (row.timestamp, row.id))
    return MetricRow(
        id=newest.id,
        node_id=newest.node_id,
        type=newest.type,
        timestamp=timestamp,
        values=MappingProxyType(
            {key: _mean(found, min(found), max(found)) for key, found in by_key.items()}
        ),
        created_at=newest.created_at,
    )


def history(rows: Iterable[MetricRow], *, start: int, end: int) -> list[MetricRow]:
    """A node's history of one metric type over ``[start, end]``, downsampled by span.

    Args:
        rows: The raw rows of one node and type (any order); rows outside the window are
            left out.
        start: The window's first second (unix seconds).
        end: The window's last second.

    Returns:
        Raw rows (spans up to an hour) or one averaged row per non-empty bucket, oldest
        first.
    """
    inside = sorted(
        (row for row in rows if start <= row.timestamp <= end),
        key=lambda row: (row.timestamp, row.id),
    )
    size = bucket_seconds(start, end)
    if size == 0:
        return inside
    buckets: dict[int, list[MetricRow]] = {}
    for row in inside:
        buckets.setdefault(row.timestamp // size * size, []).append(row)
    return [_average(found, max(bucket, start)) for bucket, found in sorted(buckets.items())]


def summary(rows: Iterable[MetricRow]) -> dict[str, float] | None:
    """``{min, max, avg, latest}`` of ``usage_percent`` over ``rows``.

    Args:
        rows: Rows of one node and type (any order).

    Returns:
        The summary (``latest`` from the newest row that has the value), or None when no
        row has ``usage_percent``.
    """
    found = [
        (row.timestamp, row.id, row.values[SUMMARY_KEY])
        for row in rows
        if SUMMARY_KEY in row.values
    ]
    if not found:
        return None
    values = [value for _, _, value in found]
    low, high = min(values), max(values)
    return {
        "min": low,
        "max": high,
        "avg": _mean(values, low, high),
        "latest": max(found)[2],
    }


def _mean(values: Sequence[float], low: float, high: float) -> float:
    """The mean, kept within ``[low, high]`` despite rounding."""
    return min(max(math.fsum(values) / len(values), low), high)
