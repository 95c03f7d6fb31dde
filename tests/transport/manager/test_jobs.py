"""The Manager's jobs: schedules (pure, property-tested), the loop on Trio's virtual clock,
and one round of each job against a real store (SQLite and PostgreSQL)."""

from __future__ import annotations

import calendar
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trio
from hypothesis import given, strategies as st

from transport import MetricPoint, NodeRegistration
from transport.manager._events import EventHub
from transport.manager._jobs import Jobs, Schedule, parse_schedule
from transport.manager._model import NodeStatus
from transport.manager._store import Store

# 2023-11-14 00:00:00 UTC: a Tuesday.
MIDNIGHT = 1_699_920_000.0


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


# --------------------------------------------------------------------------- parsing


def test_cron_fields() -> None:
    schedule = parse_schedule("*/15 2-4,23 1 jan-mar,dec sun")
    assert schedule.minutes == {0, 15, 30, 45}
    assert schedule.hours == {2, 3, 4, 23}
    assert schedule.days == {1}
    assert schedule.months == {1, 2, 3, 12}
    assert schedule.weekdays == {0}
    assert not schedule.any_day and not schedule.any_weekday
    assert parse_schedule("5/20 * * * 7").minutes == {5, 25, 45}
    assert parse_schedule("5/20 * * * 7").weekdays == {0}  # 7 is Sunday too
    assert parse_schedule("0 0 ? * MON-FRI").weekdays == {1, 2, 3, 4, 5}


def test_descriptors() -> None:
    assert parse_schedule("@daily") == Schedule(
        "@daily", **{k: getattr(parse_schedule("0 0 * * *"), k) for k in _SETS}
    )
    assert parse_schedule("@every 1m30s").every_s == 90.0
    assert parse_schedule("  @hourly ").text == "@hourly"
    assert str(parse_schedule("0  2 * *  *")) == "0 2 * * *"


_SETS = ("minutes", "hours", "days", "months", "weekdays", "any_day", "any_weekday")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected five cron fields"),
        ("* * * *", "expected five cron fields"),
        ("60 * * * *", "minute: expected 0-59; got '60'"),
        ("* 24 * * *", "hour: expected 0-23; got '24'"),
        ("* * 0 * *", "day of month: expected 1-31; got '0'"),
        ("* * * 13 *", "month: expected 1-12; got '13'"),
        ("* * * * 8", "day of week: expected 0-7; got '8'"),
        ("*/0 * * * *", "minute: expected a step of 1 or more; got '*/0'"),
        ("5-1 * * * *", "minute: the range '5-1' ends before it begins"),
        ("0 0 30 2 *", "day of month: no month in the schedule has such a day"),
        ("0 0 31 4,6 *", "day of month: no month in the schedule has such a day"),
        ("@every 0s", "@every: must be at least 1s"),
        ("@every soon", "@every: expected a duration"),
        (5, "expected a cron schedule"),
    ],
)
def test_invalid_schedules(text: object, message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("*", r"\*").replace("?", r"\?")):
        parse_schedule(text)


# --------------------------------------------------------------------------- next_after


@pytest.mark.parametrize(
    ("text", "now", "due"),
    [
        ("0 2 * * *", "2023-11-14T01:59:59", "2023-11-14T02:00:00"),
        ("0 2 * * *", "2023-11-14T02:00:00", "2023-11-15T02:00:00"),
        ("*/1 * * * *", "2023-11-14T10:00:30", "2023-11-14T10:01:00"),
        ("0 0 29 2 *", "2023-03-01T00:00:00", "2024-02-29T00:00:00"),
        ("0 0 1 * mon", "2023-11-14T00:00:00", "2023-11-20T00:00:00"),  # either day field
        ("30 12 * * sat", "2023-12-31T23:59:00", "2024-01-06T12:30:00"),
        ("@every 30s", "2023-11-14T00:00:10", "2023-11-14T00:00:30"),
        ("@every 30s", "2023-11-14T00:00:30", "2023-11-14T00:01:00"),
    ],
)
def test_next_after(text: str, now: str, due: str) -> None:
    assert parse_schedule(text).next_after(at(now), UTC) == at(due)


def test_next_after_in_local_time_across_a_dst_change() -> None:
    from zoneinfo import ZoneInfo

    berlin = ZoneInfo("Europe/Berlin")
    # 2023-03-26 02:00 local does not exist (clocks go from 02:00 to 03:00).
    now = datetime(2023, 3, 26, 1, 30, tzinfo=berlin).timestamp()
    due = parse_schedule("30 2 * * *").next_after(now, berlin)
    assert due > now
    assert due - now <= 3600
    # 2023-10-29 02:30 local happens twice: the job runs once per due time after now.
    first = datetime(2023, 10, 29, 2, 30, tzinfo=berlin).timestamp()
    second = parse_schedule("30 2 * * *").next_after(first, berlin)
    assert second > first


FIELD = st.frozensets(st.integers(0, 59), min_size=1, max_size=6)


@st.composite
def schedules(draw: st.DrawFn) -> Schedule:
    minutes = ",".join(map(str, sorted(draw(FIELD))))
    hours = draw(st.sampled_from(["*", "*/3", "0", "9-17", "1,13,22"]))
    day = draw(st.sampled_from(["*", "1", "1-7", "15,28", "*/2"]))
    month = draw(st.sampled_from(["*", "1-6", "*/2"]))
    weekday = draw(st.sampled_from(["*", "0", "1-5", "6"]))
    return parse_schedule(f"{minutes} {hours} {day} {month} {weekday}")


def matches(schedule: Schedule, when: datetime) -> bool:
    weekday = (when.weekday() + 1) % 7
    in_month, in_week = when.day in schedule.days, weekday in schedule.weekdays
    day = (
        (in_month and in_week)
        if schedule.any_day or schedule.any_weekday
        else (in_month or in_week)
    )
    return (
        when.minute in schedule.minutes
        and when.hour in schedule.hours
        and when.month in schedule.months
        and day
    )


@given(schedules(), st.floats(MIDNIGHT, MIDNIGHT + 5 * 365 * 86400))
def test_the_next_due_time_is_the_first_matching_minute(schedule: Schedule, now: float) -> None:
    due = schedule.next_after(now, UTC)
    assert due > now
    assert due % 60 == 0
    when = datetime.fromtimestamp(due, UTC)
    assert matches(schedule, when)
    # No matching minute in between: walk back minute by minute (bounded by a few months;
    # beyond, the search skips whole days and months, checked by the day test below).
    probe = when - timedelta(minutes=1)
    start = datetime.fromtimestamp(now, UTC)
    steps = 0
    while probe > start and steps < 20_000:
        assert not matches(schedule, probe)
        probe -= timedelta(minutes=1)
        steps += 1


@given(schedules(), st.floats(MIDNIGHT, MIDNIGHT + 5 * 365 * 86400))
def test_no_matching_day_is_skipped(schedule: Schedule, now: float) -> None:
    due = schedule.next_after(now, UTC)
    day = datetime.fromtimestamp(now, UTC).date() + timedelta(days=1)
    end = datetime.fromtimestamp(due, UTC).date()
    while day < end:
        first = datetime(day.year, day.month, day.day, min(schedule.hours), min(schedule.minutes))
        assert not matches(schedule, first.replace(tzinfo=UTC))
        day += timedelta(days=1)


@given(st.floats(1, 86400 * 7), st.floats(0, 4e9))
def test_every_is_aligned_and_within_one_interval(every: float, now: float) -> None:
    schedule = Schedule(f"@every {every}s", every_s=every)
    due = schedule.next_after(now)
    assert now < due <= now + every * (1 + 1e-9) + 1e-6
    assert math.isclose(due / every, round(due / every), abs_tol=1e-6)


def test_the_last_day_of_february() -> None:
    days = calendar.monthrange(2024, 2)[1]
    assert parse_schedule(f"0 0 {days} 2 *").next_after(at("2023-03-01T00:00:00"), UTC) == at(
        "2024-02-29T00:00:00"
    )


# --------------------------------------------------------------------------- the loop


class RecordingStore:
    """What the jobs call, recorded with Trio's time."""

    def __init__(self) -> None:
        self.offline: list[tuple[float, float]] = []
        self.purged: list[int] = []
        self.partitions: list[float] = []
        self.locked = True
        self.fail_next = False

    def mark_offline(self, *, cutoff: float, now: float) -> list[str]:
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("the database went away")
        self.offline.append((cutoff, now))
        return []

    def purge_metrics(self, *, before: int) -> int:
        self.purged.append(before)
        return 0

    def purge_gone_agents(self, *, before: float) -> int:
        return 0

    def ensure_partitions(self, now: float, days_ahead: int = 3) -> int:
        self.partitions.append(now)
        return 0

    @contextmanager
    def maintenance_lock(self) -> Iterator[bool]:
        yield self.locked


async def inline(job: Callable[[float], object], now: float) -> object:
    return job(now)


def jobs(store: RecordingStore, clock: Callable[[], float]) -> Jobs:
    return Jobs(
        store,
        offline_after_s=180.0,
        offline_schedule=parse_schedule("@every 30s"),
        retention_s=30 * 86400.0,
        cleanup_schedule=parse_schedule("0 2 * * *"),
        wall_clock=clock,
        tz=UTC,
        run_sync=inline,
    )


async def test_the_jobs_run_on_their_schedules(autojump_clock: Any) -> None:
    store = RecordingStore()

    def clock() -> float:
        return MIDNIGHT + 10 + trio.current_time()

    with trio.move_on_after(3 * 3600):
        async with trio.open_nursery() as nursery:
            await nursery.start(jobs(store, clock).run)
    # Offline detection every 30 s from 00:00:30 on; the cutoff 3 minutes before.
    assert len(store.offline) == 3 * 120
    assert [now for _, now in store.offline[:3]] == [MIDNIGHT + 30, MIDNIGHT + 60, MIDNIGHT + 90]
    assert all(now - cutoff == 180.0 for cutoff, now in store.offline)
    # Retention at start and at 02:00, with the partitions ahead.
    assert store.purged == [int(MIDNIGHT + 10 - 30 * 86400), int(MIDNIGHT + 7200 - 30 * 86400)]
    assert store.partitions == [MIDNIGHT + 10, MIDNIGHT + 7200]


async def test_a_failed_round_is_tried_again(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    store = RecordingStore()
    store.fail_next = True
    with trio.move_on_after(95):
        async with trio.open_nursery() as nursery:
            await nursery.start(jobs(store, lambda: MIDNIGHT + trio.current_time()).run)
    assert [now for _, now in store.offline] == [MIDNIGHT + 60, MIDNIGHT + 90]
    assert "offline detection failed" in caplog.text


async def test_a_wall_clock_behind_trio_runs_a_due_time_once(autojump_clock: Any) -> None:
    store = RecordingStore()
    # The wall clock runs slow: after sleeping until 00:00:30 it reads a little before.
    with trio.move_on_after(61):
        async with trio.open_nursery() as nursery:
            await nursery.start(jobs(store, lambda: MIDNIGHT + 0.999 * trio.current_time()).run)
    runs = [now for _, now in store.offline]
    assert len(runs) == 2
    assert [round(now - MIDNIGHT) for now in runs] == [30, 60]
    assert all(now < MIDNIGHT + due for now, due in zip(runs, (30, 60), strict=True))


def test_retention_is_skipped_without_the_lock() -> None:
    store = RecordingStore()
    store.locked = False
    assert jobs(store, lambda: MIDNIGHT).purge(MIDNIGHT) is None
    assert store.purged == []


# --------------------------------------------------------------------------- real stores


def real_jobs(store: Store, events: EventHub | None = None) -> Jobs:
    return Jobs(
        store,
        offline_after_s=180.0,
        offline_schedule=parse_schedule("@every 30s"),
        retention_s=86400.0,
        cleanup_schedule=parse_schedule("@daily"),
        events=events,
    )


def test_offline_detection_on_a_real_store(store: Store) -> None:
    for node_id, seen in (("quiet", MIDNIGHT - 181), ("alive", MIDNIGHT - 10)):
        store.register_node(NodeRegistration(node_id, hostname=node_id), now=seen, grpc_port=None)
    job = real_jobs(store)
    assert job.check_offline(MIDNIGHT) == ["quiet"]
    assert job.check_offline(MIDNIGHT) == []  # once only
    assert store.get_node("quiet").status is NodeStatus.OFFLINE
    assert store.get_node("alive").status is NodeStatus.ONLINE


async def test_offline_nodes_reach_the_console_events(store: Store) -> None:
    """A round in a worker thread publishes each node it marked offline (once)."""
    store.register_node(NodeRegistration("quiet"), now=MIDNIGHT - 181, grpc_port=None)
    hub = EventHub()
    job = real_jobs(store, hub)
    with hub.subscribe() as events:
        assert await trio.to_thread.run_sync(job.check_offline, MIDNIGHT) == ["quiet"]
        assert await trio.to_thread.run_sync(job.check_offline, MIDNIGHT) == []
        with trio.fail_after(30):
            event = await events.receive()
        assert event is not None and event.name == "node"
        assert event.data == {"node_id": "quiet", "status": "offline"}
        assert await events.receive(timeout_s=0) is None


def test_retention_on_a_real_store(store: Store) -> None:
    store.register_node(NodeRegistration("n1"), now=MIDNIGHT, grpc_port=None)
    old, new = int(MIDNIGHT - 2 * 86400), int(MIDNIGHT - 3600)
    points = [MetricPoint("cpu", when, {"usage_percent": 1.0}) for when in (old, new)]
    assert store.report_metrics("n1", points, now=MIDNIGHT) == 2
    assert real_jobs(store).purge(MIDNIGHT) is not None
    rows = store.metric_rows("n1", "cpu", start=0, end=int(MIDNIGHT))
    assert [row.timestamp for row in rows] == [new]


def test_of_two_managers_one_purges(store_url: str) -> None:
    if not store_url.startswith("postgresql"):
        pytest.skip("SQLite has one Manager per database file")
    with Store.open(store_url) as first, Store.open(store_url) as second:
        with first.maintenance_lock() as got:
            assert got
            assert real_jobs(second).purge(MIDNIGHT) is None
        assert real_jobs(second).purge(MIDNIGHT) == (0, 0)
