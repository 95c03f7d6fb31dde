"""Group commit: batches, each caller's own result, errors, overload, cancellation, shutdown.

The writer is a small function of the test (the seam is "a sync function that takes a
batch"); a gate (a threading.Event) holds a batch in its worker thread so that the next
batch fills meanwhile. Nothing waits for time to pass: the tests wait until every task is
blocked; a batch interval is either 0 or far longer than any test.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings, strategies as st

from transport import MetricPoint
from transport.manager import StoreError
from transport.manager._ingest import (
    Batch,
    BatchResult,
    Ingest,
    IngestError,
    OverloadedError,
    ShuttingDownError,
    store_writer,
)

SAFETY_S = 30


@dataclass
class Writer:
    """Records batches; heartbeats of ``new-*`` nodes create them; reports of ``ghost-*``
    nodes are unknown; holds each batch until ``gate`` is set (when ``hold``)."""

    hold: bool = False
    fail: Exception | None = None
    batches: list[Batch] = field(default_factory=list)
    gate: threading.Event = field(default_factory=threading.Event)
    entered: trio.Event = field(default_factory=trio.Event)

    def __call__(self, batch: Batch) -> BatchResult:
        self.batches.append(batch)
        trio.from_thread.run_sync(self.entered.set)
        if self.hold:
            self.gate.wait(SAFETY_S)
        if self.fail is not None:
            raise self.fail
        return BatchResult(
            created=tuple(node.startswith("new") for node, _ in batch.heartbeats),
            inserted=tuple(
                None if node.startswith("ghost") else len(points) for node, points in batch.reports
            ),
        )

    def sizes(self) -> list[int]:
        return [len(b.heartbeats) + len(b.reports) for b in self.batches]


def point(timestamp: int = 1, **values: float) -> MetricPoint:
    return MetricPoint("cpu", timestamp, values or {"usage_percent": 1.0})


@asynccontextmanager
async def running(ingest: Ingest) -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as nursery:
        await nursery.start(ingest.run)
        yield nursery
        nursery.cancel_scope.cancel()


async def held_first_batch(writer: Writer, ingest: Ingest, nursery: trio.Nursery) -> None:
    """Submit one heartbeat and wait until its batch is held in the writer."""
    nursery.start_soon(ingest.heartbeat, "first")
    await writer.entered.wait()


async def beat_into(ingest: Ingest, outcomes: dict[str, object], node: str) -> None:
    """A heartbeat; its result, or the ShuttingDownError it got, into ``outcomes``."""
    try:
        outcomes[node] = await ingest.heartbeat(node)
    except ShuttingDownError as exc:
        outcomes[node] = exc


async def arrive(nursery: trio.Nursery, fn: Callable[..., Awaitable[object]], *args: Any) -> None:
    """Start a call and wait until it waits (so that calls arrive in a known order)."""
    nursery.start_soon(fn, *args)
    await trio.testing.wait_all_tasks_blocked()


async def test_calls_wait_for_one_batch_and_get_their_own_results() -> None:
    writer = Writer(hold=True)
    ingest = Ingest(writer, interval_s=0)
    results: dict[str, object] = {}

    async def beat(node: str) -> None:
        results[node] = await ingest.heartbeat(node)

    async def report(node: str, points: Sequence[MetricPoint]) -> None:
        results[node] = await ingest.report(node, points)

    with trio.fail_after(SAFETY_S):
        async with running(ingest) as nursery, trio.open_nursery() as calls:
            await held_first_batch(writer, ingest, calls)
            await arrive(calls, beat, "old-1")
            await arrive(calls, report, "old-2", [point(1), point(2)])
            await arrive(calls, beat, "new-3")
            await arrive(calls, report, "ghost-4", [point()])
            assert ingest.statistics().queued == 4 and not results
            writer.gate.set()
            del nursery
    assert writer.sizes() == [1, 4]
    second = writer.batches[1]
    assert [n for n, _ in second.heartbeats] == ["old-1", "new-3"]
    assert [(n, len(p)) for n, p in second.reports] == [("old-2", 2), ("ghost-4", 1)]
    assert results == {"old-1": False, "old-2": 2, "new-3": True, "ghost-4": None}
    stats = ingest.statistics()
    assert (stats.batches, stats.batch_items, stats.heartbeats, stats.nodes_created) == (2, 5, 3, 1)
    assert (stats.metric_rows, stats.queued, stats.queued_weight) == (2, 0, 0)
    assert dict(stats.batch_sizes)[1.0] == 1 and dict(stats.batch_sizes)[4.0] == 2
    assert stats.batch_sizes[-1] == (float("inf"), 2)


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.sampled_from(["beat", "new", "report", "ghost"]), max_size=40), st.integers(1, 7)
)
async def test_every_caller_gets_its_own_result(kinds: list[str], max_batch: int) -> None:
    """Whatever arrives while a batch is written, batches respect max_batch, keep arrival
    order, and each caller gets the result of its own item."""
    writer = Writer(hold=True)
    ingest = Ingest(writer, interval_s=0, max_batch=max_batch)
    got: dict[int, object] = {}

    async def call(index: int, kind: str) -> None:
        node = f"{kind}-{index}"
        if kind in ("beat", "new"):
            got[index] = await ingest.heartbeat(node)
        else:
            got[index] = await ingest.report(node, [point(t) for t in range(index % 3)])

    with trio.fail_after(SAFETY_S):
        async with running(ingest), trio.open_nursery() as calls:
            await held_first_batch(writer, ingest, calls)
            for index, kind in enumerate(kinds):
                await arrive(calls, call, index, kind)
            writer.gate.set()
    expected = {
        i: {"beat": False, "new": True, "report": i % 3, "ghost": None}[k]
        for i, k in enumerate(kinds)
    }
    assert got == expected
    assert all(size <= max_batch for size in writer.sizes())
    for batch in writer.batches[1:]:  # arrival order within each kind of a batch
        for items in (batch.heartbeats, batch.reports):
            indexes = [int(node.split("-")[1]) for node, _ in items]
            assert indexes == sorted(indexes)
    written = [n for b in writer.batches[1:] for n, _ in (*b.heartbeats, *b.reports)]
    assert sorted(written) == sorted(f"{k}-{i}" for i, k in enumerate(kinds))


async def test_batches_are_spaced_unless_a_whole_batch_waits() -> None:
    """With a long interval, the first item is written at once (no batch before it);
    the next ones wait for the interval, or go as soon as max_batch of them wait; a
    smaller batch still waiting is refused when the service stops."""
    writer = Writer()
    ingest = Ingest(writer, interval_s=3600, max_batch=3)
    outcomes: dict[str, object] = {}
    beat = partial(beat_into, ingest, outcomes)

    with trio.fail_after(SAFETY_S):
        async with trio.open_nursery() as calls, running(ingest) as service:
            await beat("first")
            async with trio.open_nursery() as full:
                for node in ("a", "b"):
                    await arrive(full, beat, node)
                assert writer.sizes() == [1]  # a and b wait for the interval
                full.start_soon(beat, "c")
            await arrive(calls, beat, "d")
            assert writer.sizes() == [1, 3]
            service.cancel_scope.cancel()
    assert writer.sizes() == [1, 3]
    assert [outcomes[n] for n in ("first", "a", "b", "c")] == [False] * 4
    assert isinstance(outcomes["d"], ShuttingDownError)


@pytest.mark.parametrize(
    ("error", "transient"), [(StoreError("disk full"), True), (KeyError("x"), False)]
)
async def test_a_failed_batch_fails_each_of_its_callers(
    error: Exception, transient: bool, caplog: pytest.LogCaptureFixture
) -> None:
    writer = Writer(hold=True)
    ingest = Ingest(writer, interval_s=0)
    errors: list[IngestError] = []

    async def beat(node: str) -> None:
        try:
            await ingest.heartbeat(node)
        except IngestError as exc:
            errors.append(exc)

    with trio.fail_after(SAFETY_S):
        async with running(ingest):
            async with trio.open_nursery() as calls:
                calls.start_soon(beat, "first")
                await writer.entered.wait()
                for node in ("a", "b", "c"):
                    await arrive(calls, beat, node)
                writer.fail = error  # the held batch fails, then the next one
                writer.gate.set()
            assert writer.sizes() == [1, 3, 1, 1, 1]  # each item of a batch tried alone
            assert len(errors) == 4 and len({id(e) for e in errors}) == 4
            assert all(e.transient is transient and str(error) in str(e) for e in errors)
            assert ingest.statistics().batch_failures == 2
            writer.fail = None
            assert await ingest.heartbeat("new-after") is True  # the service goes on
    assert ("Traceback" in caplog.text) is not transient


async def test_one_bad_item_fails_only_its_own_call() -> None:
    """A batch that fails is written again item by item: only the bad item fails; after
    three database errors in a row the rest fail without more attempts."""
    written: list[list[str]] = []

    def writer(batch: Batch) -> BatchResult:
        nodes = [n for n, _ in batch.heartbeats]
        written.append(nodes)
        if "bad" in nodes:
            raise KeyError("bad")
        if any(n.startswith("down") for n in nodes):
            raise StoreError("the database is down")
        return BatchResult(tuple(False for _ in nodes), ())

    for group in (("a", "bad", "b"), ("down1", "down2", "down3", "down4")):
        ingest = Ingest(writer, interval_s=3600, max_batch=len(group))
        written.clear()
        outcomes: dict[str, object] = {}

        async def beat(
            node: str, ingest: Ingest = ingest, outcomes: dict[str, object] = outcomes
        ) -> None:
            try:
                outcomes[node] = await ingest.heartbeat(node)
            except IngestError as exc:
                outcomes[node] = exc.transient

        with trio.fail_after(SAFETY_S):
            async with running(ingest), trio.open_nursery() as calls:
                await ingest.heartbeat("primer")  # the next batch waits until it is full
                written.clear()
                for node in group:
                    calls.start_soon(beat, node)
        assert sorted(written[0]) == sorted(group)
        if group[0] == "a":
            assert outcomes == {"a": False, "bad": False, "b": False}  # bad: a defect
            assert written[1:] == [[n] for n in written[0]]
        else:
            assert outcomes == dict.fromkeys(group, True)
            assert written[1:] == [[n] for n in written[0][:3]]  # the 4th not tried


async def test_a_writer_answering_the_wrong_count_is_a_defect() -> None:
    ingest = Ingest(lambda batch: BatchResult((), ()), interval_s=0)
    async with running(ingest):
        with pytest.raises(IngestError, match="the writer answered") as caught:
            await ingest.heartbeat("a")
    assert not caught.value.transient


async def test_overload_is_refused_at_once() -> None:
    """A full queue refuses the call instead of growing; a report weighs 1 + its values."""
    writer = Writer(hold=True)
    ingest = Ingest(writer, interval_s=0, max_queued=4)
    with trio.fail_after(SAFETY_S):
        async with running(ingest), trio.open_nursery() as calls:
            await held_first_batch(writer, ingest, calls)
            await arrive(calls, ingest.report, "a", [point(1, x=1, y=2)])  # weight 3
            with pytest.raises(OverloadedError, match="overloaded"):
                await ingest.report("b", [point(1, x=1)])  # 3 + 2 > 4
            await arrive(calls, ingest.heartbeat, "c")  # 3 + 1 fits
            assert ingest.statistics().queued_weight == 4
            with pytest.raises(OverloadedError):
                await ingest.heartbeat("d")
            writer.gate.set()
    assert writer.sizes() == [1, 2]


async def test_a_cancelled_caller_leaves_its_batch() -> None:
    writer = Writer(hold=True)
    ingest = Ingest(writer, interval_s=0)
    with trio.fail_after(SAFETY_S):
        async with running(ingest), trio.open_nursery() as calls:
            await held_first_batch(writer, ingest, calls)
            with trio.move_on_after(0) as gave_up:
                gave_up.shield = False
                calls.start_soon(ingest.heartbeat, "stays")
                await ingest.heartbeat("leaves")
            assert gave_up.cancelled_caught
            await trio.testing.wait_all_tasks_blocked()
            writer.gate.set()
    assert [[n for n, _ in b.heartbeats] for b in writer.batches] == [["first"], ["stays"]]
    assert ingest.statistics().queued_weight == 0


async def test_shutdown_finishes_the_batch_in_flight_and_refuses_the_rest() -> None:
    writer = Writer(hold=True)
    ingest = Ingest(writer, interval_s=0)
    outcomes: dict[str, object] = {}
    beat = partial(beat_into, ingest, outcomes)

    with trio.fail_after(SAFETY_S):
        async with trio.open_nursery() as calls, running(ingest) as service:
            calls.start_soon(beat, "new-in-flight")
            await writer.entered.wait()
            calls.start_soon(beat, "queued")
            await trio.testing.wait_all_tasks_blocked()
            service.cancel_scope.cancel()
            with trio.CancelScope(shield=True):  # the service closes before the gate opens
                await trio.testing.wait_all_tasks_blocked()
            writer.gate.set()
    assert outcomes["new-in-flight"] is True
    assert isinstance(outcomes["queued"], ShuttingDownError)
    with pytest.raises(ShuttingDownError):
        await ingest.heartbeat("late")
    with pytest.raises(RuntimeError, match="ran before"):
        await ingest.run()


async def test_statistics_count_the_services_calls() -> None:
    from transport import StatusCode

    ingest = Ingest(Writer())
    ingest.count_call("Heartbeat")
    ingest.count_refused(StatusCode.NOT_FOUND)
    ingest.count_refused(StatusCode.NOT_FOUND)
    ingest.count_registration()
    ingest.count_agent_states(3)
    stats = ingest.statistics()
    assert stats.calls == {
        "RegisterNode": 0,
        "Heartbeat": 1,
        "ReportMetrics": 0,
        "SyncAgentStates": 0,
    }
    assert stats.refused == {"NOT_FOUND": 2}
    assert (stats.registrations, stats.agent_states) == (1, 3)


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        Ingest(Writer(), max_batch=0)
    with pytest.raises(ValueError, match="interval_s"):
        Ingest(Writer(), interval_s=-1)


def test_store_writer_writes_a_batch_through_the_store(tmp_path: Path) -> None:
    """One batch, one Store.write_batch: a node a heartbeat creates is known to its reports."""
    from transport.manager._store import Store

    with Store.open(f"sqlite:///{tmp_path / 'm.db'}") as store:
        write = store_writer(store)
        p = point()
        result = write(Batch((("a", 1.0),), (("a", (p,)), ("b", (p,))), 5.0))
        assert result == BatchResult((True,), (1, None))
        assert write(Batch((), (), 6.0)) == BatchResult((), ())
        assert store.latest_metrics("a")[p.type] is not None
