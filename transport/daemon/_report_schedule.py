"""When the Manager client sends heartbeats and agent-state syncs. PURE.

Theory of operation
-------------------
Two timetables, both on Trio's monotonic clock, passed in as ``now``:

* **Heartbeats** follow a fixed grid: one right after every registration (so the Manager
  sees the node online at once), then every ``heartbeat_interval``. A late wake-up (a
  suspended VM, a slow call) skips the ticks it missed instead of sending a burst:
  :func:`next_tick` returns the first grid point after ``now``.
* **State syncs** (:class:`SyncSchedule`) carry the full list of agents every
  ``sync_interval``, and also shortly after any agent changes state. A change arms a
  debounce deadline ``debounce_s`` after the *first* change of a burst; later changes in
  the same burst do not push it back, so a sync always follows a change within
  ``debounce_s``, and a burst of changes (a reload restarting ten agents) costs one sync.
  Every sync, whatever triggered it, restarts the periodic interval. After a registration
  a sync is due at once: a Manager that just met this node knows none of its agents.

Nothing here sleeps or reads a clock; the client's tasks sleep until the deadlines these
functions return.
"""

from __future__ import annotations

import math

__all__ = ["SyncSchedule", "next_tick"]


def _check(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name}: expected a positive number of seconds; got {value!r}")


def next_tick(deadline: float, interval_s: float, now: float) -> float:
    """The next point of the grid ``deadline + k * interval_s`` that lies after ``now``.

    Args:
        deadline: The tick just served (a grid point).
        interval_s: The grid's spacing (> 0).
        now: The current time.

    Returns:
        ``deadline + k * interval_s`` for the smallest ``k >= 1`` with a result greater
        than ``now``; ticks missed while late are skipped.

    Raises:
        ValueError: ``interval_s`` is not positive and finite.
    """
    _check("interval_s", interval_s)
    following = deadline + interval_s
    if following > now:
        return following
    missed = math.floor((now - deadline) / interval_s)
    tick = deadline + (missed + 1) * interval_s
    while tick <= now:  # floating-point rounding
        tick += interval_s
    return tick


class SyncSchedule:
    """When the next full agent-state sync is due.

    Args:
        interval_s: The periodic sync interval (``manager.sync_interval``).
        debounce_s: The longest a change waits before it is synced (> 0).
        now: The current time; the first periodic sync is due ``interval_s`` later
            (registration makes one due at once, see :meth:`registered`).

    Raises:
        ValueError: An interval that is not positive and finite.
    """

    def __init__(self, interval_s: float, debounce_s: float, *, now: float) -> None:
        _check("interval_s", interval_s)
        _check("debounce_s", debounce_s)
        self.interval_s = interval_s
        self.debounce_s = debounce_s
        self._periodic = now + interval_s
        self._change: float | None = None

    @property
    def pending_change(self) -> bool:
        """Whether a change waits to be synced."""
        return self._change is not None

    def due_at(self) -> float:
        """When the next sync is due: the debounce deadline or the periodic one."""
        return self._periodic if self._change is None else min(self._change, self._periodic)

    def changed(self, now: float) -> None:
        """An agent changed state at ``now``: a sync is due within ``debounce_s``."""
        if self._change is None:
            self._change = now + self.debounce_s

    def registered(self, now: float) -> None:
        """The node (re)registered at ``now``: the Manager needs the full list at once."""
        self._change = now if self._change is None else min(self._change, now)

    def synced(self, now: float) -> None:
        """A sync was taken at ``now`` (its snapshot includes every change so far)."""
        self._change = None
        self._periodic = now + self.interval_s
