"""The Manager client's pure decisions: backoff, retry dispositions, the spool's bounds,
the timetables, the original daemon's metric keys and the agent-state records."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
from hypothesis import assume, given, strategies as st

from collectors import Metrics, Table
from supervisor import AgentState
from transport import StatusCode
from transport.daemon._agent_states import agent_states, agent_version_summary
from transport.daemon._metric_keys import (
    ORIGINAL_KEYS,
    HostExtras,
    NetworkTotals,
    original_values,
)
from transport.daemon._report_schedule import SyncSchedule, next_tick
from transport.daemon._retry import (
    MAX_REFUSALS,
    REGISTER_METADATA_KEY,
    Backoff,
    Disposition,
    answer_disposition,
    disposition,
)
from transport.daemon._spool_policy import (
    EntryInfo,
    EntryKind,
    SpoolLimits,
    admit,
    expire,
)

from .reporter_helpers import agent_info, cpu, network

# --------------------------------------------------------------------------- backoff

backoffs = st.builds(
    lambda base, factor, multiplier, jitter: Backoff(base, base * factor, multiplier, jitter),
    st.floats(0.001, 100),
    st.floats(1, 1000),
    st.floats(1, 10),
    st.floats(0, 1),
)


@given(backoffs, st.integers(-5, 10_000), st.floats(0, 1, exclude_max=True))
def test_backoff_delay_stays_within_its_bounds(backoff: Backoff, attempt: int, rand: float) -> None:
    """A delay lies between (1 - jitter) times the nominal delay and the nominal delay,
    which never exceeds max_s."""
    nominal = backoff.nominal(attempt)
    delay = backoff.delay(attempt, rand)
    assert nominal <= backoff.max_s
    assert nominal * (1 - backoff.jitter) - 1e-9 <= delay <= nominal
    assert delay > 0 or backoff.jitter == 1


@given(backoffs, st.integers(0, 5_000))
def test_nominal_delays_never_decrease(backoff: Backoff, attempt: int) -> None:
    """The nominal delay grows (or stays at the cap) with every failure."""
    assert backoff.nominal(attempt) <= backoff.nominal(attempt + 1)
    assert backoff.nominal(0) == backoff.base_s


def test_backoff_follows_the_seed() -> None:
    """Without jitter: base, base * multiplier, ... capped at max (the seed's RetryConfig)."""
    backoff = Backoff(1.0, 10.0, 2.0, jitter=0)
    assert [backoff.delay(i, 0.5) for i in range(6)] == [1, 2, 4, 8, 10, 10]
    with pytest.raises(ValueError, match="max_s"):
        Backoff(5.0, 1.0)


def test_dispositions() -> None:
    """Unreachable: reconnect; unknown node: register; invalid: drop; the rest: retry."""
    assert disposition(StatusCode.UNAVAILABLE) is Disposition.RECONNECT
    assert disposition(StatusCode.DEADLINE_EXCEEDED) is Disposition.RECONNECT
    assert disposition(StatusCode.INVALID_ARGUMENT) is Disposition.DROP
    assert disposition(StatusCode.NOT_FOUND) is Disposition.REGISTER
    assert disposition(StatusCode.INTERNAL) is Disposition.RETRY
    assert disposition(StatusCode.UNAUTHENTICATED) is Disposition.RETRY


def test_answer_dispositions() -> None:
    """Success is done; an unknown node or the metadata asks to register; a refusal is
    retried a few times, then dropped."""
    assert answer_disposition(True, "") is None
    assert answer_disposition(True, "", [(REGISTER_METADATA_KEY, "1")]) is Disposition.REGISTER
    assert answer_disposition(False, "node abc not found") is Disposition.REGISTER
    assert answer_disposition(False, "Node not registered") is Disposition.REGISTER
    assert answer_disposition(False, "database locked") is Disposition.RETRY
    last = MAX_REFUSALS - 1
    assert answer_disposition(False, "database locked", refusals=last) is Disposition.DROP


# --------------------------------------------------------------------------- spool policy

entries_strategy = st.lists(
    st.tuples(st.floats(0, 1000), st.integers(0, 500), st.sampled_from(list(EntryKind))),
    max_size=30,
)
limits_strategy = st.builds(SpoolLimits, st.integers(1, 3000), st.floats(1, 2000))


def _entries(raw: Sequence[tuple[float, int, EntryKind]]) -> list[EntryInfo]:
    """Entries with increasing seq and creation times (older first)."""
    created = sorted(c for c, _, _ in raw)
    return [EntryInfo(i + 1, created[i], size, kind) for i, (_, size, kind) in enumerate(raw)]


@given(entries_strategy, limits_strategy, st.integers(0, 4000), st.sampled_from(list(EntryKind)),
       st.integers(0, 40), st.floats(0, 3000))  # fmt: skip
def test_admit_keeps_the_bounds(
    raw: list[tuple[float, int, EntryKind]],
    limits: SpoolLimits,
    size: int,
    kind: EntryKind,
    position: int,
    now: float,
) -> None:
    """After admission the spool holds at most max_bytes, nothing past max_age, at most one
    state sync, in seq order; what was dropped for room is older than all that stayed."""
    entries = _entries(raw)
    seqs = [e.seq for e in entries]
    seq = (max(seqs, default=0) + 1) if position >= len(entries) else position + 0.5
    incoming = EntryInfo(seq, now, size, kind)  # type: ignore[arg-type]
    decision = admit(entries, incoming, limits, now=now)
    kept = list(decision.kept) + ([incoming] if decision.accept else [])
    assert sum(e.size for e in kept) <= limits.max_bytes
    assert all(e.created >= now - limits.max_age_s for e in kept)
    assert sum(e.kind is EntryKind.STATES for e in kept) <= 1
    assert [e.seq for e in decision.kept] == sorted(e.seq for e in decision.kept)
    deleted = set(decision.delete)
    assert deleted.isdisjoint(e.seq for e in kept)
    assert deleted | {e.seq for e in kept} == {*seqs, seq}
    evicted_for_room = [s for s in decision.evicted if s != seq or size <= limits.max_bytes]
    if evicted_for_room:
        assert max(evicted_for_room) < min((e.seq for e in kept), default=math.inf)


@given(entries_strategy, limits_strategy, st.floats(0, 3000))
def test_a_new_report_that_fits_is_always_accepted(
    raw: list[tuple[float, int, EntryKind]], limits: SpoolLimits, now: float
) -> None:
    """The newest report is never the one dropped when it fits under max_bytes alone."""
    entries = _entries(raw)
    assume(all(e.created <= now for e in entries))
    incoming = EntryInfo(len(entries) + 1, now, limits.max_bytes // 2, EntryKind.METRICS)
    decision = admit(entries, incoming, limits, now=now)
    assert decision.accept
    assert decision.dropped == len(decision.expired) + len(decision.evicted)


def test_admit_drops_oldest_first() -> None:
    """A full spool drops its oldest reports to make room; the counts say how many."""
    limits = SpoolLimits(max_bytes=300, max_age_s=100)
    entries = [EntryInfo(i, 50.0 + i, 100, EntryKind.METRICS) for i in (1, 2, 3)]
    decision = admit(entries, EntryInfo(4, 60, 100, EntryKind.METRICS), limits, now=60)
    assert decision.evicted == (1,) and decision.accept
    assert [e.seq for e in decision.kept] == [2, 3]
    too_big = admit(entries, EntryInfo(4, 60, 301, EntryKind.METRICS), limits, now=60)
    assert not too_big.accept and too_big.evicted == (4,)
    old = expire(entries, limits, now=151.5)
    assert old.expired == (1,) and old.dropped == 1


def test_a_newer_state_sync_supersedes_older_ones() -> None:
    """State syncs carry the full list: a newer one replaces the older, nothing is lost."""
    limits = SpoolLimits(max_bytes=10_000, max_age_s=100)
    entries = [
        EntryInfo(1, 1, 10, EntryKind.STATES),
        EntryInfo(2, 2, 10, EntryKind.METRICS),
        EntryInfo(3, 3, 10, EntryKind.STATES),
    ]
    decision = admit(entries, EntryInfo(4, 4, 10, EntryKind.STATES), limits, now=4)
    assert decision.superseded == (1, 3) and decision.dropped == 0 and decision.accept
    stale = admit(entries[1:], EntryInfo(0, 0, 10, EntryKind.STATES), limits, now=4)
    assert stale.superseded == (0,) and not stale.accept


# --------------------------------------------------------------------------- timetables


@given(st.floats(-1e6, 1e6), st.floats(0.01, 1e4), st.floats(0, 1e6))
def test_next_tick_is_the_first_grid_point_after_now(
    deadline: float, interval: float, late: float
) -> None:
    """The next heartbeat is on the grid, after now, and no later than one interval after
    now: missed ticks are skipped, never sent in a burst."""
    now = deadline + late
    tick = next_tick(deadline, interval, now)
    assert now < tick <= now + interval * (1 + 1e-9) + 1e-6
    steps = (tick - deadline) / interval
    assert abs(steps - round(steps)) < 1e-6 * max(1.0, steps)


@given(
    st.floats(0.1, 100),
    st.floats(0.01, 5),
    st.lists(st.tuples(st.sampled_from(["change", "sync", "register"]), st.floats(0, 50))),
)
def test_sync_follows_a_change_within_the_debounce(
    interval: float, debounce: float, steps: list[tuple[str, float]]
) -> None:
    """A sync is due within debounce_s of the first unsynced change, and never later than
    sync_interval after the last sync."""
    now = 0.0
    schedule = SyncSchedule(interval, debounce, now=now)
    last_sync, first_change = now, None
    for action, gap in steps:
        now += gap
        if action == "change":
            schedule.changed(now)
            first_change = now if first_change is None else first_change
        elif action == "register":
            schedule.registered(now)
            assert schedule.due_at() <= now
        else:
            schedule.synced(now)
            last_sync, first_change = now, None
        assert schedule.due_at() <= last_sync + interval
        if first_change is not None:
            assert schedule.due_at() <= first_change + debounce


# --------------------------------------------------------------------------- metric keys


def test_every_original_key_is_added() -> None:
    """Each built-in type gets every key the original daemon sends."""
    memory = Metrics(
        "memory",
        1.0,
        {"total": 1000, "available": 600, "used": 300, "used_percent": 30.0, "cached": 50,
         "buffers": 20, "swap_total": 100, "swap_used": 25},
    )  # fmt: skip
    disk = Metrics(
        "disk",
        1.0,
        {"disks": Table("mountpoint", {
            "/": {"device": "/dev/sda1", "total": 100, "used": 40, "free": 60,
                  "used_percent": 40.0, "read_bytes": 5, "write_bytes": 7},
            "/srv": {"device": "/dev/sda1", "total": 100, "used": 40, "free": 60,
                     "used_percent": 40.0, "read_bytes": 5, "write_bytes": 7},
            "/data": {"device": "/dev/sdb1", "total": 300, "used": 60, "free": 240,
                      "used_percent": 20.0},
        })},
    )  # fmt: skip
    extras = HostExtras(cpu_mhz=2600.0, cpu_iowait_s=97.5)
    for metrics in (cpu(1.0), memory, disk, network(1.0, 10, 20)):
        values, _ = original_values(metrics, extras=extras)
        assert ORIGINAL_KEYS[metrics.name] <= values.keys(), metrics.name
    mem, _ = original_values(memory)
    assert (mem["free_bytes"], mem["free"], mem["swap_free"], mem["swap_percent"]) == (
        630.0, 630.0, 75.0, 25.0
    )  # fmt: skip
    assert mem["usage_percent"] == 30.0
    dsk, _ = original_values(disk)
    assert (dsk["total_bytes"], dsk["used_bytes"], dsk["partition_count"]) == (400, 100, 3)
    assert dsk["usage_percent"] == 25.0 and dsk["read_bytes"] == 5
    cpu_values, _ = original_values(cpu(1.0), extras=extras)
    assert (cpu_values["mhz"], cpu_values["iowait"]) == (2600.0, 97.5)
    assert original_values(Metrics("gpu", 1.0, {"x": 1}))[0] == {}


@given(st.lists(st.tuples(st.integers(0, 2**40), st.integers(0, 2**40)), min_size=1, max_size=8))
def test_network_deltas_are_never_negative(samples: list[tuple[int, int]]) -> None:
    """tx_bytes and rx_bytes are deltas since the previous sample: never negative, and a
    counter that went backwards counts from zero."""
    previous: NetworkTotals | None = None
    for index, (sent, received) in enumerate(samples):
        values, new = original_values(
            network(10.0 * (index + 1), sent, received), previous=previous
        )
        assert values["tx_bytes"] >= 0 and values["rx_bytes"] >= 0
        if previous is None:
            assert values["interval_seconds"] == 0 and values["tx_bytes"] == 0
        else:
            old_sent = previous.counters["eth0"][0]
            assert values["tx_bytes"] == (sent - old_sent if sent >= old_sent else sent)
            assert values["interval_seconds"] == 10.0
        previous = new


# --------------------------------------------------------------------------- agent states


def test_agent_states_carry_type_version_and_last_heartbeat() -> None:
    """Running agents are seen alive now; a stopped one keeps its last heartbeat; the
    updater's version fills in what the agent does not report."""
    running, stopped = agent_info("a"), agent_info("b", AgentState.STOPPED)
    records, seen = agent_states([running, stopped], versions={"a": "1.2"}, seen={"b": 50.0},
                                 now=100.0)  # fmt: skip
    summary = [(r.agent_id, r.last_heartbeat, r.version) for r in records]
    assert summary == [("a", 100, "1.2"), ("b", 50, "")]
    assert [r.status.value for r in records if r.status] == ["running", "stopped"]
    assert records[0].type == "telegraf" and seen == {"a": 100.0, "b": 50.0}
    later, seen = agent_states([stopped], versions={}, seen={}, now=200.0)
    assert later[0].last_heartbeat is None and seen == {}


def test_agent_version_summary() -> None:
    """One version when all agree, id=version pairs otherwise, empty when none is known."""
    assert agent_version_summary([]) == ""
    assert agent_version_summary([("a", "1"), ("b", "1"), ("c", "")]) == "1"
    assert agent_version_summary([("b", "2"), ("a", "1")]) == "a=1,b=2"
