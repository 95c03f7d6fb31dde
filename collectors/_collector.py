"""The seed's Collector interface, as a Protocol, and the wall clock.

The seed (section 3.2.1) defines::

    type Collector interface {
        Name() string
        Collect(ctx context.Context) (*Metrics, error)
        Interval() time.Duration
    }

Here a collector is any object with a ``name``, an ``interval_s`` (seconds, as Trio counts
time) and an ``async collect()`` returning :class:`~collectors.Metrics`. Cancellation
replaces the seed's ``ctx``: the manager runs ``collect()`` inside a cancel scope with a
deadline. Plugins implement this Protocol; nothing needs to subclass anything.
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

from ._metrics import Metrics

__all__ = ["Collector", "wall_time"]


@runtime_checkable
class Collector(Protocol):
    """Something that produces :class:`~collectors.Metrics` every ``interval_s`` seconds.

    ``collect()`` must not block the event loop: blocking calls belong in
    ``trio.to_thread.run_sync(..., abandon_on_cancel=True)``. It may raise any
    ``Exception``; the manager logs and counts it, and calls again next interval.
    """

    @property
    def name(self) -> str:
        """The collector's name; also ``Metrics.name`` and ``MetricData.type``."""
        ...

    @property
    def interval_s(self) -> float:
        """Seconds between two collections (positive)."""
        ...

    async def collect(self) -> Metrics:
        """Read the values now.

        Returns:
            The result, named ``self.name``.
        """
        ...


def wall_time() -> float:
    """Unix time now, for ``Metrics.timestamp``.

    Monotonic time (``trio.current_time()``) drives scheduling and rates; the wall clock is
    read only to stamp results, because the Manager lines up hosts by it. This is the one
    place the package reads it.

    Returns:
        Seconds since the Unix epoch.
    """
    return time.time()
