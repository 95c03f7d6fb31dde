"""When the ingest's writer takes its next batch: the spacing of batches. Pure.

A SQLite transaction costs the writer a fixed part (about 0.6 ms of CPU: the lock, BEGIN,
a node lookup and a statement per kind of item, COMMIT) beside a part per item (about
0.1 ms). A writer that takes whatever is queued as soon as it is free writes batches of
one or two items while it keeps up, and spends most of its CPU on fixed parts; the CPU
it leaves the rest of the process is what the gRPC thread needs to answer. So the writer
starts a batch no sooner than ``interval_s`` after the previous one started, unless a
whole batch (``max_batch`` items) is queued: under load the items of ``interval_s``
share one transaction (at 10,000 nodes, about 3 per worker and 10 ms), and an item that
comes when no batch started within ``interval_s`` (a light load) is written at once.
"""

from __future__ import annotations

__all__ = ["batch_delay"]


def batch_delay(
    now: float, *, last_start: float | None, queued: int, max_batch: int, interval_s: float
) -> float:
    """How long the writer waits before it takes the next batch.

    Args:
        now: The time (monotonic seconds).
        last_start: When the previous batch was taken (same clock), or None: none yet.
        queued: Items waiting now (at least 1: the writer asks when something waits).
        max_batch: The most items in one batch.
        interval_s: The least time between the starts of two batches.

    Returns:
        Seconds to wait, at least 0 and at most ``interval_s``; 0 when a whole batch is
        queued, when no batch was taken yet, or when the last was taken ``interval_s`` or
        more ago (or, the clock having gone back, in the future).
    """
    if queued >= max_batch or last_start is None or now < last_start:
        return 0.0
    return max(0.0, last_start + interval_s - now)
