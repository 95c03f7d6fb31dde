"""The CollectorManager: runs collectors on their intervals, keeps and publishes results.

Theory of operation
-------------------
One task owns the schedule (``_schedule.Schedule``): it sleeps until the next deadline on
the shared grid, takes the collectors due then, and starts one task per collector in the
manager's nursery. So collectors with the same interval wake the process once, not once
each, and a slow collector never delays another's start.

Each run is wrapped in ``trio.move_on_after(timeout)``, where the timeout is the manager's
``timeout_s`` capped at 80 % of the collector's interval, so a run has always finished (or
been abandoned) before that collector is due again. Outcomes:

* success: the result becomes ``latest()[name]`` and is sent to every subscriber;
* an exception, a result that is not ``Metrics``, or one with another name: a failure;
* the deadline passing: a timeout (a hung thread is abandoned, see ``_builtin``).

Failures and timeouts are counted in ``statistics()``, logged (a warning when a collector
starts failing or fails differently, debug while it keeps failing the same way, info when
it recovers) and never propagate: the collector is simply called again next interval. Only
``BaseException``s (cancellation, KeyboardInterrupt) leave a run.

Subscribers get results through bounded memory channels. A subscriber that does not keep
up loses the newest results (counted in ``statistics().dropped``) rather than slowing the
collectors down or growing memory without bound.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import EntryPoint
from types import MappingProxyType

import trio

from ._builtin import builtin_collectors
from ._collector import Collector
from ._config import CollectorsConfig, check_interval
from ._errors import CollectorError, DuplicateCollectorError, PluginLoadError
from ._metrics import Metrics
from ._plugins import load_plugins
from ._sample import Probe
from ._schedule import Schedule

__all__ = ["CollectorManager", "CollectorStatistics", "ManagerStatistics"]

_log = logging.getLogger("collectors")

DEFAULT_TIMEOUT_S = 10.0
_TIMEOUT_SHARE = 0.8  # of the interval: a run ends before its successor is due


@dataclass(frozen=True, slots=True)
class CollectorStatistics:
    """How one collector has fared.

    Attributes:
        name: The collector.
        interval_s: Its period.
        timeout_s: How long one run may take.
        runs: Runs started.
        successes: Runs that produced a result.
        failures: Runs that raised or returned something invalid.
        timeouts: Runs abandoned at the deadline.
        skipped: Due ticks not run: the previous run was still going, or the manager woke
            too late to run them.
        consecutive_failures: Failures and timeouts since the last success.
        last_error: What went wrong last time, or None after a success.
        last_success_at: Monotonic time of the last success, or None.
        last_duration_s: How long the last finished run took, or None.
        running: Whether a run is in progress.
    """

    name: str
    interval_s: float
    timeout_s: float
    runs: int
    successes: int
    failures: int
    timeouts: int
    skipped: int
    consecutive_failures: int
    last_error: str | None
    last_success_at: float | None
    last_duration_s: float | None
    running: bool

    @property
    def healthy(self) -> bool:
        """True unless the last finished run failed or timed out."""
        return self.consecutive_failures == 0


@dataclass(frozen=True, slots=True)
class ManagerStatistics:
    """The manager's health view.

    Attributes:
        collectors: Each collector's statistics, by name.
        plugin_errors: Each plugin that failed to load, mapped to why.
        wakeups: How often the scheduler woke up to start collectors.
        subscribers: Open subscriptions.
        dropped: Results not delivered because a subscriber's buffer was full.
    """

    collectors: Mapping[str, CollectorStatistics]
    plugin_errors: Mapping[str, str]
    wakeups: int
    subscribers: int
    dropped: int

    @property
    def healthy(self) -> bool:
        """True if every plugin loaded and every collector's last run succeeded."""
        return not self.plugin_errors and all(c.healthy for c in self.collectors.values())


class _State:
    """Mutable per-collector bookkeeping; read out as :class:`CollectorStatistics`."""

    def __init__(self, collector: Collector, timeout_s: float) -> None:
        self.collector = collector
        self.timeout_s = timeout_s
        self.runs = self.successes = self.failures = self.timeouts = self.skipped = 0
        self.consecutive_failures = 0
        self.last_error: str | None = None
        self.last_success_at: float | None = None
        self.last_duration_s: float | None = None
        self.running = False

    def snapshot(self) -> CollectorStatistics:
        return CollectorStatistics(
            name=self.collector.name,
            interval_s=self.collector.interval_s,
            timeout_s=self.timeout_s,
            runs=self.runs,
            successes=self.successes,
            failures=self.failures,
            timeouts=self.timeouts,
            skipped=self.skipped,
            consecutive_failures=self.consecutive_failures,
            last_error=self.last_error,
            last_success_at=self.last_success_at,
            last_duration_s=self.last_duration_s,
            running=self.running,
        )


class CollectorManager:
    """Runs collectors on their intervals under Trio; the seed's CollectorManager.

    Args:
        collectors: The collectors to run; their names must be unique.
        timeout_s: The longest a single run may take (capped at 80 % of each collector's
            interval).
        plugin_errors: Plugins that failed to load, to show in :meth:`statistics`.

    Raises:
        DuplicateCollectorError: Two collectors share a name.
        CollectorConfigError: A collector's interval, or ``timeout_s``, is not a positive
            finite number.
        CollectorError: A collector's name is not a non-empty string.
    """

    def __init__(
        self,
        collectors: Iterable[Collector],
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        plugin_errors: Mapping[str, PluginLoadError | str] | None = None,
    ) -> None:
        check_interval("CollectorManager", timeout_s, "timeout_s")
        self._states: dict[str, _State] = {}
        for collector in collectors:
            name = collector.name
            if not isinstance(name, str) or not name:
                raise CollectorError(f"collector {collector!r} has no usable name: {name!r}")
            if name in self._states:
                raise DuplicateCollectorError(name)
            check_interval(name, collector.interval_s)
            timeout = min(float(timeout_s), _TIMEOUT_SHARE * collector.interval_s)
            self._states[name] = _State(collector, timeout)
        self._plugin_errors = {k: str(v) for k, v in (plugin_errors or {}).items()}
        self._latest: dict[str, Metrics] = {}
        self._subscribers: set[trio.MemorySendChannel[Metrics]] = set()
        self._wakeups = 0
        self._dropped = 0
        self._running = False

    @classmethod
    def from_config(
        cls,
        config: CollectorsConfig,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        probe: Probe | None = None,
        plugin_candidates: Iterable[EntryPoint] | None = None,
    ) -> CollectorManager:
        """Build the manager the ``collectors`` configuration block describes.

        Plugins that fail to load are logged and reported by :meth:`statistics`; the rest
        of the manager is built regardless.

        Args:
            config: The parsed block (``parse_collectors_config``).
            timeout_s: As for the constructor.
            probe: The probe for the built-in collectors; psutil by default.
            plugin_candidates: Entry points to search instead of the installed ones.

        Returns:
            A manager, not yet running.
        """
        collectors = builtin_collectors(config, probe=probe)
        plugins, errors = load_plugins(config.plugins, candidates=plugin_candidates)
        return cls([*collectors, *plugins], timeout_s=timeout_s, plugin_errors=errors)

    @property
    def collectors(self) -> Mapping[str, Collector]:
        """The managed collectors by name."""
        return MappingProxyType({name: s.collector for name, s in self._states.items()})

    def latest(self) -> Mapping[str, Metrics]:
        """The last successful result of every collector that has produced one.

        Returns:
            A snapshot (later results do not change it), by collector name.
        """
        return MappingProxyType(dict(self._latest))

    @contextmanager
    def subscribe(
        self, *, max_buffer_size: int = 64
    ) -> Iterator[trio.MemoryReceiveChannel[Metrics]]:
        """Receive every new result while the ``with`` block lasts.

        Args:
            max_buffer_size: Results kept for a slow reader; beyond that, new results are
                dropped for this subscriber and counted in ``statistics().dropped``.

        Yields:
            A channel delivering each collector's results as they arrive.
        """
        send, receive = trio.open_memory_channel[Metrics](max_buffer_size)
        self._subscribers.add(send)
        try:
            with receive:
                yield receive
        finally:
            self._subscribers.discard(send)
            send.close()

    def statistics(self) -> ManagerStatistics:
        """How every collector has fared, and which plugins did not load.

        Returns:
            A frozen snapshot.
        """
        return ManagerStatistics(
            collectors=MappingProxyType({n: s.snapshot() for n, s in self._states.items()}),
            plugin_errors=MappingProxyType(dict(self._plugin_errors)),
            wakeups=self._wakeups,
            subscribers=len(self._subscribers),
            dropped=self._dropped,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Collect forever: every collector at once, then each on its interval.

        Start with ``await nursery.start(manager.run)``; cancel the nursery to stop.

        Args:
            task_status: Reports that the schedule is running (``nursery.start``).

        Raises:
            CollectorError: This manager is already running.
        """
        if self._running:
            raise CollectorError("this CollectorManager is already running")
        self._running = True
        try:
            schedule = Schedule(
                {name: s.collector.interval_s for name, s in self._states.items()},
                start=trio.current_time(),
            )
            async with trio.open_nursery() as nursery:
                task_status.started()
                while True:
                    deadline = schedule.next_deadline()
                    if math.isinf(deadline):
                        await trio.sleep_forever()
                    await trio.sleep_until(deadline)
                    self._wakeups += 1
                    due = schedule.pop_due(trio.current_time())
                    for name in due.names:
                        state = self._states[name]
                        state.skipped += due.missed.get(name, 0)
                        if self._claim(state):
                            nursery.start_soon(self._run_one, state, None)
        finally:
            self._running = False

    async def collect_once(self) -> Mapping[str, Metrics]:
        """Run every collector now, concurrently, with the usual timeouts and bookkeeping.

        Collectors already running (under :meth:`run`) are skipped.

        Returns:
            This round's successful results by name (also in :meth:`latest`).
        """
        results: dict[str, Metrics] = {}
        async with trio.open_nursery() as nursery:
            for state in self._states.values():
                if self._claim(state):
                    nursery.start_soon(self._run_one, state, results)
        return MappingProxyType(results)

    def _claim(self, state: _State) -> bool:
        if state.running:
            state.skipped += 1
            _log.debug("collector %s is still running; tick skipped", state.collector.name)
            return False
        state.running = True
        return True

    async def _run_one(self, state: _State, results: dict[str, Metrics] | None) -> None:
        collector = state.collector
        name = collector.name
        state.runs += 1
        started = trio.current_time()
        try:
            with trio.move_on_after(state.timeout_s) as scope:
                # A plugin may return anything; the checks below rely on nothing.
                result: object = await collector.collect()
        except Exception as exc:
            state.failures += 1
            self._record_failure(state, f"{type(exc).__name__}: {exc}", exc)
            return
        finally:
            state.running = False
            state.last_duration_s = trio.current_time() - started
        if scope.cancelled_caught:
            state.timeouts += 1
            self._record_failure(state, f"timed out after {state.timeout_s:g} s")
            return
        if not isinstance(result, Metrics):
            state.failures += 1
            self._record_failure(state, f"collect() returned {result!r}, not Metrics")
            return
        if result.name != name:
            state.failures += 1
            self._record_failure(state, f"collect() returned metrics named {result.name!r}")
            return
        if state.consecutive_failures:
            _log.info(
                "collector %s recovered after %d failure(s)", name, state.consecutive_failures
            )
        state.successes += 1
        state.consecutive_failures = 0
        state.last_error = None
        state.last_success_at = trio.current_time()
        self._latest[name] = result
        if results is not None:
            results[name] = result
        self._publish(result)

    def _record_failure(self, state: _State, error: str, exc: BaseException | None = None) -> None:
        state.consecutive_failures += 1
        repeated = error == state.last_error
        state.last_error = error
        _log.log(
            logging.DEBUG if repeated else logging.WARNING,
            "collector %s failed (%d in a row): %s",
            state.collector.name,
            state.consecutive_failures,
            error,
            exc_info=exc if not repeated else None,
        )

    def _publish(self, metrics: Metrics) -> None:
        for send in list(self._subscribers):
            try:
                send.send_nowait(metrics)
            except trio.WouldBlock:
                self._dropped += 1
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._subscribers.discard(send)
