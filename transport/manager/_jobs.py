"""The Manager's periodic work: offline detection and metrics retention.

Two jobs, each on a :class:`Schedule`:

* **Offline detection** (``node.offline_check_schedule``, default every 30 s): nodes whose
  last heartbeat is older than ``node.offline_duration_minutes`` are marked offline with
  :meth:`Store.mark_offline`, a single ``UPDATE ... RETURNING``: when several Managers
  share one PostgreSQL database, each node is reported offline by exactly one of them
  (and published to that Manager's console event hub).
* **Retention** (``metrics.cleanup_schedule``, default ``0 2 * * *``: daily at 02:00
  local time; also once at start-up, so that a Manager that is never up at 02:00 still
  purges): metrics older than ``metrics.retention_days`` and agents gone for as long are
  deleted, and on PostgreSQL the daily partitions ahead are created. It runs under
  :meth:`Store.maintenance_lock` (a PostgreSQL advisory lock): of several Managers only
  the one holding the lock purges; the others skip that round.

Theory of operation. The scheduling decision is pure: :meth:`Schedule.next_after` takes
the wall-clock time ``now`` (unix seconds) and returns the next due time. The loop reads
the wall clock through an injected function, sleeps for the difference on Trio's clock,
and runs the job in a worker thread (the store is synchronous). It never computes a due
time earlier than the previous one, so a wall clock that lags Trio's clock by a little
cannot run a job twice for one due time. A job that fails is logged and tried again at
its next due time: a database that is down for a while must not stop the Manager.

Schedules use cron's five fields (``minute hour day-of-month month day-of-week``, with
``*``, ``*/n``, ``a-b``, ``a-b/n``, lists, and month and weekday names; when both
day fields are restricted a day matching either is due, as in cron), evaluated in local
time like the original's, or the descriptors ``@every <duration>`` (aligned to
multiples of the duration since the epoch), ``@hourly``, ``@daily`` (``@midnight``),
``@weekly``, ``@monthly`` and ``@yearly`` (``@annually``).
"""

from __future__ import annotations

import calendar
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Protocol

import trio

from supervisor import parse_duration

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from ._events import EventHub

__all__ = ["Jobs", "JobStore", "Schedule", "parse_schedule"]

logger = logging.getLogger("hostvisor.manager.jobs")

_FIELDS = (  # name, lowest, highest, names
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, tuple(m.lower() for m in calendar.month_abbr[1:])),
    ("day of week", 0, 7, ("sun", "mon", "tue", "wed", "thu", "fri", "sat")),
)
_DESCRIPTORS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# The longest search for a due minute: 8 years covers February 29 across a century.
_SEARCH_DAYS = 8 * 366


@dataclass(frozen=True, slots=True)
class Schedule:
    """When a job is due: a cron expression or a fixed interval.

    Attributes:
        text: The schedule as written (``"0 2 * * *"``, ``"@every 30s"``).
        every_s: For ``@every``: the interval in seconds; None for a cron expression.
        minutes: The minutes (0-59) of a cron expression.
        hours: Its hours (0-23).
        days: Its days of the month (1-31).
        months: Its months (1-12).
        weekdays: Its days of the week (0-6, Sunday is 0).
        any_day: Whether the day-of-month field is ``*``.
        any_weekday: Whether the day-of-week field is ``*``.
    """

    text: str
    every_s: float | None = None
    minutes: frozenset[int] = frozenset()
    hours: frozenset[int] = frozenset()
    days: frozenset[int] = frozenset()
    months: frozenset[int] = frozenset()
    weekdays: frozenset[int] = frozenset()
    any_day: bool = True
    any_weekday: bool = True

    def __str__(self) -> str:
        return self.text

    def next_after(self, now: float, tz: tzinfo | None = None) -> float:
        """The first due time strictly after ``now``.

        Args:
            now: Unix seconds.
            tz: The time zone cron fields are read in; None: the local one.

        Returns:
            Unix seconds: a multiple of ``every_s``, or the start of a matching minute.
        """
        if self.every_s is not None:
            return (math.floor(now / self.every_s) + 1) * self.every_s
        start = math.floor(now / 60) * 60 + 60
        wall = _wall(start, tz)
        limit = wall + timedelta(days=_SEARCH_DAYS)
        while wall < limit:
            if wall.month not in self.months:
                month = wall.month % 12 + 1
                wall = datetime(wall.year + (month == 1), month, 1)
            elif not self._day_matches(wall):
                wall = datetime(wall.year, wall.month, wall.day) + timedelta(days=1)
            elif wall.hour not in self.hours:
                wall = wall.replace(minute=0) + timedelta(hours=1)
            elif wall.minute not in self.minutes:
                wall += timedelta(minutes=1)
            else:
                due = _timestamp(wall, tz)
                if due > now:  # a wall time repeated by a DST change may lie behind
                    return due
                wall += timedelta(minutes=1)
        raise AssertionError(f"schedule {self.text!r} has no due time")  # parse refuses it

    def _day_matches(self, wall: datetime) -> bool:
        in_month = wall.day in self.days
        in_week = (wall.weekday() + 1) % 7 in self.weekdays
        if self.any_day or self.any_weekday:
            return in_month and in_week  # the unrestricted one matches every day
        return in_month or in_week


def _wall(timestamp: float, tz: tzinfo | None) -> datetime:
    """The naive wall-clock time of ``timestamp`` in ``tz`` (None: local)."""
    return datetime.fromtimestamp(timestamp, tz).replace(tzinfo=None)


def _timestamp(wall: datetime, tz: tzinfo | None) -> float:
    """Unix seconds of a naive wall-clock time in ``tz`` (None: local)."""
    return (wall if tz is None else wall.replace(tzinfo=tz)).timestamp()


def parse_schedule(text: object) -> Schedule:
    """Read a schedule: five cron fields or an ``@`` descriptor (see the module doc).

    Args:
        text: The schedule as written in the configuration.

    Returns:
        The schedule.

    Raises:
        ValueError: The text is not a schedule, or one that is never due (``0 0 30 2 *``);
            the message says which field is wrong.
    """
    if not isinstance(text, str):
        raise ValueError(f"expected a cron schedule such as '0 2 * * *'; got {text!r}")
    source = " ".join(text.split())
    lowered = source.lower()
    if lowered.startswith("@every"):
        try:
            every = parse_duration(lowered.removeprefix("@every").strip())
        except ValueError as exc:
            raise ValueError(f"@every: {exc}") from None
        if every < 1:
            raise ValueError(f"@every: must be at least 1s; got {text!r}")
        return Schedule(source, every_s=every)
    fields = _DESCRIPTORS.get(lowered, lowered).split()
    if len(fields) != 5:
        raise ValueError(
            "expected five cron fields (minute hour day-of-month month day-of-week) or"
            f" @every <duration>, @hourly, @daily, @weekly, @monthly; got {text!r}"
        )
    sets = [_field(value, *spec) for value, spec in zip(fields, _FIELDS, strict=True)]
    weekdays = frozenset(day % 7 for day in sets[4])
    schedule = Schedule(
        source,
        minutes=sets[0],
        hours=sets[1],
        days=sets[2],
        months=sets[3],
        weekdays=weekdays,
        any_day=fields[2] in ("*", "?"),
        any_weekday=fields[4] in ("*", "?"),
    )
    if schedule.any_weekday and not any(
        day <= _longest(month) for month in schedule.months for day in schedule.days
    ):
        raise ValueError(f"day of month: no month in the schedule has such a day; got {text!r}")
    return schedule


def _longest(month: int) -> int:
    return 29 if month == 2 else calendar.monthrange(2001, month)[1]


def _field(text: str, name: str, low: int, high: int, names: tuple[str, ...]) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"{name}: expected a step of 1 or more; got {part!r}")
            step = int(step_text)
        if body in ("*", "?"):
            first, last = low, high
        else:
            first_text, dash, last_text = body.partition("-")
            first = _value(first_text, name, low, high, names)
            last = _value(last_text, name, low, high, names) if dash else first
            if step_text and not dash:
                last = high  # "5/15": from 5 on, every 15
            if last < first:
                raise ValueError(f"{name}: the range {body!r} ends before it begins")
        values.update(range(first, last + 1, step))
    return frozenset(values)


def _value(text: str, name: str, low: int, high: int, names: tuple[str, ...]) -> int:
    if text in names:
        return names.index(text) + (1 if name == "month" else 0)
    if not text.isdigit() or not low <= int(text) <= high:
        raise ValueError(f"{name}: expected {low}-{high}; got {text!r}")
    return int(text)


# --------------------------------------------------------------------------- the jobs


class JobStore(Protocol):
    """What the jobs need of :class:`transport.manager.Store` (see its methods)."""

    def mark_offline(self, *, cutoff: float, now: float) -> list[str]: ...

    def purge_metrics(self, *, before: int) -> int: ...

    def purge_gone_agents(self, *, before: float) -> int: ...

    def maintenance_lock(self) -> AbstractContextManager[bool]: ...

    def ensure_partitions(self, now: float, days_ahead: int = 3) -> int: ...


class Jobs:
    """Runs offline detection and retention on their schedules (see the module doc).

    Args:
        store: The store (used from worker threads).
        offline_after_s: A node is offline when its last heartbeat is older than this.
        offline_schedule: When offline detection runs.
        retention_s: Metrics older than this are deleted.
        cleanup_schedule: When retention runs (also once at start).
        wall_clock: Unix seconds now (tests pass a clock that follows Trio's).
        tz: The time zone of cron schedules; None: the local one.
        run_sync: Runs a blocking job round (default: in a worker thread).
        events: The console's event hub: each node marked offline is published to it
            (``node`` offline), or None.
    """

    def __init__(
        self,
        store: JobStore,
        *,
        offline_after_s: float,
        offline_schedule: Schedule,
        retention_s: float,
        cleanup_schedule: Schedule,
        wall_clock: Callable[[], float] = time.time,
        tz: tzinfo | None = None,
        run_sync: Callable[[Callable[[float], object], float], Awaitable[object]] | None = None,
        events: EventHub | None = None,
    ) -> None:
        self._store = store
        self._offline_after_s = offline_after_s
        self._offline_schedule = offline_schedule
        self._retention_s = retention_s
        self._cleanup_schedule = cleanup_schedule
        self._clock = wall_clock
        self._tz = tz
        self._run_sync = run_sync or trio.to_thread.run_sync
        self._events = events

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run both jobs until cancelled.

        Args:
            task_status: Started at once; the first retention round runs right after.
        """
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._loop, "offline detection", self._offline_schedule, False)
            nursery.start_soon(self._loop, "retention", self._cleanup_schedule, True)
            task_status.started()

    async def _loop(self, name: str, schedule: Schedule, at_start: bool) -> None:
        job = self.check_offline if name == "offline detection" else self.purge
        if at_start:
            await self._attempt(name, job)
        last_due = -math.inf
        while True:
            now = self._clock()
            last_due = schedule.next_after(max(now, last_due), self._tz)
            await trio.sleep(max(0.0, last_due - now))
            await self._attempt(name, job)

    async def _attempt(self, name: str, job: Callable[[float], object]) -> None:
        try:
            await self._run_sync(job, self._clock())
        except Exception:  # the next round tries again: a job never stops the Manager
            logger.exception("%s failed", name)

    def check_offline(self, now: float) -> list[str]:
        """Mark the nodes that stopped sending heartbeats offline (one round; blocking).

        Args:
            now: Unix seconds.

        Returns:
            The node ids this Manager marked offline.
        """
        gone = self._store.mark_offline(cutoff=now - self._offline_after_s, now=now)
        if gone:
            logger.info("%d node(s) offline: %s", len(gone), ", ".join(sorted(gone)))
            if self._events is not None:  # the hub takes it from this worker thread
                self._events.nodes_offline(gone)
        return gone

    def purge(self, now: float) -> tuple[int, int] | None:
        """Delete expired metrics and gone agents (one round; blocking).

        Args:
            now: Unix seconds.

        Returns:
            (metric rows, agents) deleted, or None when another Manager holds the lock.
        """
        before = now - self._retention_s
        with self._store.maintenance_lock() as got:
            if not got:
                logger.debug("retention: another Manager is purging")
                return None
            self._store.ensure_partitions(now)
            metrics = self._store.purge_metrics(before=int(before))
            agents = self._store.purge_gone_agents(before=before)
        if metrics or agents:
            logger.info("retention: %d metric row(s) and %d gone agent(s) deleted", metrics, agents)
        return metrics, agents
