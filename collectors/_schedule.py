"""When each collector runs: periodic deadlines on a shared grid. Pure code.

Theory of operation
-------------------
Every job with interval ``i`` is due at ``start + k * i`` for k = 0, 1, 2... computed from
``start`` each time (never by adding ``i`` repeatedly, which drifts). Jobs with the same
interval therefore have bit-identical deadlines, and jobs whose intervals are multiples of
each other (60 s and 5 min) meet on common deadlines: the manager wakes once for all of
them. Waking up costs more than the work for most collectors (see runtime-facts: 300
staggered tickers cost ten times what one aligned tick does), hence the grid.

Deadlines closer than ``tolerance_s`` to the wake-up time are served in the same wake-up,
so intervals like 0.1 s and 0.3 s, whose grid points differ by float rounding, still share.

If the manager wakes late (the machine was suspended, the loop was starved), each overdue
job runs once and the ticks it missed are reported, not replayed: a burst of catch-up
collections would measure nothing useful.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Due", "Schedule"]


@dataclass(frozen=True, slots=True)
class Due:
    """What :meth:`Schedule.pop_due` found.

    Attributes:
        names: The jobs to run now, in the order they were given to the schedule.
        missed: For each due job that skipped grid points, how many it skipped.
    """

    names: tuple[str, ...]
    missed: Mapping[str, int]


class Schedule:
    """The deadlines of periodic jobs on one time grid.

    Args:
        intervals: Job names mapped to their periods in seconds (positive, finite).
        start: Monotonic time of tick 0, when every job is first due.
        tolerance_s: Deadlines within this much after a wake-up are served in it.

    Raises:
        ValueError: An interval is not positive and finite, or the tolerance is negative.
    """

    def __init__(
        self, intervals: Mapping[str, float], *, start: float, tolerance_s: float = 1e-3
    ) -> None:
        for name, interval in intervals.items():
            if not (math.isfinite(interval) and interval > 0):
                raise ValueError(f"interval of {name!r} must be positive; got {interval!r}")
        if not tolerance_s >= 0:
            raise ValueError(f"tolerance_s must be non-negative; got {tolerance_s!r}")
        self._start = start
        self._tolerance_s = tolerance_s
        self._intervals = dict(intervals)
        self._tick = dict.fromkeys(intervals, 0)

    @property
    def start(self) -> float:
        """Monotonic time of tick 0."""
        return self._start

    def deadline(self, name: str) -> float:
        """When a job is next due.

        Args:
            name: The job.

        Returns:
            Its next deadline in monotonic seconds.

        Raises:
            KeyError: No such job.
        """
        return self._start + self._tick[name] * self._intervals[name]

    def next_deadline(self) -> float:
        """The earliest deadline of any job.

        Returns:
            Monotonic seconds, or ``math.inf`` if there are no jobs.
        """
        return min((self.deadline(name) for name in self._intervals), default=math.inf)

    def pop_due(self, now: float) -> Due:
        """Take the jobs due at ``now`` and move each to its next grid point after ``now``.

        Args:
            now: The current monotonic time.

        Returns:
            The due jobs and the grid points they skipped.
        """
        horizon = now + self._tolerance_s
        names: list[str] = []
        missed: dict[str, int] = {}
        for name, interval in self._intervals.items():
            tick = self._tick[name]
            if self._start + tick * interval > horizon:
                continue
            following = max(tick + 1, math.floor((horizon - self._start) / interval) + 1)
            while self._start + (following - 1) * interval > horizon:  # float rounding
                following -= 1
            while self._start + following * interval <= horizon:
                following += 1
            names.append(name)
            if following - tick > 1:
                missed[name] = following - tick - 1
            self._tick[name] = following
        return Due(names=tuple(names), missed=missed)
