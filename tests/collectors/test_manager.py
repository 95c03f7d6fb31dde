"""The CollectorManager's timing and isolation rules, in virtual time."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable

import pytest
import trio
import trio.testing

from collectors import (
    CollectorError,
    CollectorManager,
    CollectorsConfig,
    CpuConfig,
    DiskConfig,
    DuplicateCollectorError,
    MemoryCollector,
    Metrics,
    NetworkConfig,
    PluginConfig,
)
from tests.collectors.fakes import FakeProbe


class FakeCollector:
    """A collector that records when it was called and then does what it is told."""

    def __init__(
        self,
        name: str,
        interval_s: float,
        behave: Callable[[int], object] | None = None,
        *,
        duration_s: float = 0.5,
    ) -> None:
        self.name = name
        self.interval_s = interval_s
        self.calls: list[float] = []
        self._behave = behave
        self._duration_s = duration_s

    async def collect(self) -> Metrics:
        self.calls.append(trio.current_time())
        if self._behave is not None:
            outcome = self._behave(len(self.calls))
            if outcome == "hang":
                await trio.sleep_forever()
            if isinstance(outcome, BaseException):
                raise outcome
            if outcome is not None:
                return outcome  # type: ignore[return-value]
        await trio.sleep(self._duration_s)  # collecting takes a little (virtual) time
        return Metrics(name=self.name, timestamp=1e9, values={"n": len(self.calls)})


async def _run_for(manager: CollectorManager, seconds: float) -> float:
    """Run the manager for ``seconds`` of virtual time; return when it started."""
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        await nursery.start(manager.run)
        await trio.sleep(seconds)
        nursery.cancel_scope.cancel()
    return start


def _offsets(calls: list[float], start: float) -> list[float]:
    return [round(t - start, 6) for t in calls]


async def test_each_collector_runs_on_its_interval(autojump_clock: trio.testing.MockClock) -> None:
    """Collectors run at once, then exactly every interval, on one shared set of wake-ups."""
    a, b, c = (FakeCollector(name, 60.0) for name in "abc")
    slow = FakeCollector("slow", 300.0)
    manager = CollectorManager([a, b, c, slow])
    start = await _run_for(manager, 610)
    for each in (a, b, c):
        assert _offsets(each.calls, start) == [60.0 * k for k in range(11)]
    assert _offsets(slow.calls, start) == [0.0, 300.0, 600.0]
    stats = manager.statistics()
    assert stats.wakeups == 11  # one per minute for all four, not 11 * 3 + 3
    assert stats.collectors["a"].successes == 11
    assert stats.healthy


async def test_failures_and_timeouts_do_not_disturb_others(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A raising and a hanging collector are counted and retried; the others stay on time."""
    good = FakeCollector("good", 10.0)
    failing = FakeCollector("failing", 10.0, lambda n: RuntimeError(f"boom {n}"))
    hanging = FakeCollector("hanging", 10.0, lambda n: "hang")
    wrong_type = FakeCollector("wrong_type", 10.0, lambda n: {"not": "metrics"})
    wrong_name = FakeCollector(
        "wrong_name", 10.0, lambda n: Metrics(name="other", timestamp=0, values={})
    )
    manager = CollectorManager([good, failing, hanging, wrong_type, wrong_name], timeout_s=30)
    start = await _run_for(manager, 59)  # the sixth hang times out at 58
    expected = [0.0, 10.0, 20.0, 30.0, 40.0, 50.0]
    for each in (good, failing, hanging, wrong_type, wrong_name):
        assert _offsets(each.calls, start) == expected
    stats = manager.statistics().collectors
    assert stats["good"].successes == 6
    assert stats["good"].healthy
    assert stats["failing"].failures == 6
    assert stats["failing"].consecutive_failures == 6
    assert stats["failing"].last_error == "RuntimeError: boom 6"
    assert stats["hanging"].timeout_s == 8.0  # capped at 80 % of the interval
    assert stats["hanging"].timeouts == 6
    assert stats["hanging"].failures == 0
    assert stats["hanging"].last_error == "timed out after 8 s"
    assert stats["hanging"].last_duration_s == 8.0
    assert "not Metrics" in (stats["wrong_type"].last_error or "")
    assert "named 'other'" in (stats["wrong_name"].last_error or "")
    assert set(manager.latest()) == {"good"}
    assert not manager.statistics().healthy


async def test_recovery_is_logged_once(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A new failure warns, a repeat is debug, a recovery is info; counters reset on success."""
    flaky = FakeCollector("flaky", 10.0, lambda n: ValueError("disk gone") if n <= 3 else None)
    manager = CollectorManager([flaky])
    with caplog.at_level(logging.DEBUG, logger="collectors"):
        await _run_for(manager, 35)
    levels = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "collectors"]
    assert levels == [
        ("WARNING", "collector flaky failed (1 in a row): ValueError: disk gone"),
        ("DEBUG", "collector flaky failed (2 in a row): ValueError: disk gone"),
        ("DEBUG", "collector flaky failed (3 in a row): ValueError: disk gone"),
        ("INFO", "collector flaky recovered after 3 failure(s)"),
    ]
    stats = manager.statistics().collectors["flaky"]
    assert (stats.failures, stats.successes, stats.consecutive_failures) == (3, 1, 0)
    assert stats.last_error is None


async def test_latest_and_subscribers(autojump_clock: trio.testing.MockClock) -> None:
    """latest() is a snapshot; subscribers get every result, and a full buffer drops."""
    a = FakeCollector("a", 10.0)
    manager = CollectorManager([a])
    received: list[float] = []
    async with trio.open_nursery() as nursery:
        with manager.subscribe() as results, manager.subscribe(max_buffer_size=1):
            await nursery.start(manager.run)
            snapshot = manager.latest()
            async for metrics in results:
                received.append(metrics.number("n"))
                if len(received) == 3:
                    break
            assert manager.statistics().subscribers == 2
        assert manager.statistics().subscribers == 0
        nursery.cancel_scope.cancel()
    assert received == [1.0, 2.0, 3.0]
    assert snapshot == {}
    assert manager.latest()["a"].number("n") == 3.0
    assert manager.statistics().dropped == 2  # the unread subscriber kept only the first


async def test_a_hung_probe_does_not_pile_up_threads(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A probe stuck in its thread is abandoned at the deadline and never started again
    until it returns; the collector then recovers."""
    probe = FakeProbe(block=threading.Event())
    stuck = MemoryCollector(10.0, probe=probe)
    good = FakeCollector("good", 10.0, duration_s=0)  # (the clock stops below)
    manager = CollectorManager([stuck, good])
    assert probe.block is not None
    try:
        start = await _run_for(manager, 59)
        stats = manager.statistics().collectors
        assert stats["memory"].runs == 6
        assert stats["memory"].timeouts == 6
        assert probe.entered <= 1
        assert _offsets(good.calls, start) == [0.0, 10.0, 20.0, 30.0, 40.0, 50.0]
    finally:
        probe.block.set()
    autojump_clock.autojump_threshold = math.inf  # threads take real time from here on
    await trio.to_thread.run_sync(probe.returned.wait)
    assert probe.entered == 1  # one thread, however many intervals passed
    probe.block = None
    results = await manager.collect_once()
    assert results["memory"].number("used") == 300.0
    assert manager.statistics().collectors["memory"].healthy


async def test_collect_once() -> None:
    """One round runs every collector and returns the successes."""
    ok = FakeCollector("ok", 60.0)
    bad = FakeCollector("bad", 60.0, lambda n: OSError("no"))
    manager = CollectorManager([ok, bad])
    results = await manager.collect_once()
    assert set(results) == {"ok"}
    assert manager.statistics().collectors["bad"].failures == 1


async def test_only_one_run_at_a_time(autojump_clock: trio.testing.MockClock) -> None:
    """Running a manager twice at once is refused."""
    manager = CollectorManager([FakeCollector("a", 1.0)])
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        with pytest.raises(CollectorError, match="already running"):
            await manager.run()
        nursery.cancel_scope.cancel()


async def test_a_manager_without_collectors_just_waits(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With nothing to run, the manager sleeps until cancelled."""
    manager = CollectorManager([])
    await _run_for(manager, 3600)
    assert manager.statistics().wakeups == 0


def test_duplicate_names_are_refused() -> None:
    """Two collectors with one name cannot share a manager."""
    with pytest.raises(DuplicateCollectorError, match="'a'"):
        CollectorManager([FakeCollector("a", 1.0), FakeCollector("a", 2.0)])
    with pytest.raises(CollectorError, match="interval_s"):
        CollectorManager([FakeCollector("a", -1.0)])
    with pytest.raises(CollectorError, match=r"CollectorManager\.timeout_s: .* got 0"):
        CollectorManager([], timeout_s=0)


def test_from_config_reports_missing_plugins() -> None:
    """A configured plugin that is not installed is reported, and the rest still built."""
    config = CollectorsConfig(
        cpu=CpuConfig(interval_s=5),
        disk=DiskConfig(enabled=False),
        network=NetworkConfig(enabled=False),
        plugins=(PluginConfig(name="not-installed-anywhere"),),
    )
    manager = CollectorManager.from_config(config, probe=FakeProbe(), plugin_candidates=[])
    assert list(manager.collectors) == ["cpu", "memory"]
    assert manager.collectors["cpu"].interval_s == 5.0
    stats = manager.statistics()
    assert (
        "no entry point named 'not-installed-anywhere'"
        in stats.plugin_errors["not-installed-anywhere"]
    )
    assert not stats.healthy
