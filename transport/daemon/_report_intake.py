"""From collector results to ReportMetrics requests: one request per collection round. IO.

The collectors publish each collector's result on its own. The original daemon sends the
four built-in types in one request; so do we: results are gathered into a batch that is
sent (queued in the outbox) when

* every collector of the previous complete round has reported again (with the usual
  shared intervals this happens as soon as the slowest of the round answers: no delay),
* a collector reports a second time (its next round began: the batch is complete), or
* ``linger_s`` has passed since the first result of the batch (the first round, whose
  members are not known yet, or a collector that did not answer this time).

Each result becomes a ``MetricData`` carrying the collectors' own keys
(:func:`collectors.to_metric_data`) and the original daemon's
(:func:`transport.daemon._metric_keys.original_values`); values that are not finite are
dropped, one bad gauge never loses the report.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

import trio

from collectors import MetricsError, to_metric_data
from transport import MetricPoint, manager_pb2, metric_to_message

from ._metric_keys import HostExtras, NetworkTotals, original_values

if TYPE_CHECKING:
    from collectors import Metrics
    from supervisor import AgentInfo

__all__ = ["AgentSource", "MetricSource", "batch_metrics"]


class AgentSource(Protocol):
    """What the reporter needs of the supervisor."""

    def statuses(self) -> list[AgentInfo]:
        """A snapshot of every agent."""
        ...

    def subscribe(self, max_buffer: int = 1024) -> Any:
        """An async iterator of :class:`supervisor.AgentEvent` with ``close()``."""
        ...


class MetricSource(Protocol):
    """What the reporter needs of the collectors (``collectors.CollectorManager``)."""

    def subscribe(
        self, *, max_buffer_size: int = 64
    ) -> AbstractContextManager[trio.MemoryReceiveChannel[Metrics]]:
        """Every new collector result while the block lasts."""
        ...


async def batch_metrics(
    results: trio.MemoryReceiveChannel[Metrics],
    *,
    node_id: str,
    put: Callable[[manager_pb2.ReportMetricsRequest], Awaitable[None]],
    extras: Callable[[], HostExtras],
    linger_s: float,
    error: Callable[[str], None],
) -> None:
    """Turn collector results into ReportMetrics requests until the results end.

    Args:
        results: The collectors' subscription.
        node_id: This node's id.
        put: Queues one request for delivery.
        extras: Reads the CPU figures the collectors lack (blocking: run in a thread).
        linger_s: The longest a batch waits for the rest of its round.
        error: Reports a result that cannot be sent (logged as D2003 by the caller).
    """
    network: NetworkTotals | None = None
    expected: frozenset[str] = frozenset()  # the collectors of the last complete round
    batch: dict[str, manager_pb2.MetricData] = {}
    deadline = math.inf

    async def flush() -> None:
        if batch:
            request = manager_pb2.ReportMetricsRequest(node_id=node_id, metrics=batch.values())
            batch.clear()
            await put(request)

    while True:
        metrics: Metrics | None = None
        with trio.move_on_at(deadline):
            try:
                metrics = await results.receive()
            except trio.EndOfChannel:
                await flush()
                return
        if metrics is None or metrics.name in batch:  # the round is over
            expected = frozenset(batch)
            await flush()
            deadline = math.inf
            if metrics is None:
                continue
        figures = await trio.to_thread.run_sync(extras) if metrics.name == "cpu" else None
        added, network = original_values(metrics, previous=network, extras=figures)
        try:
            data = to_metric_data(metrics)
        except MetricsError as exc:
            error(f"collector {metrics.name!r}: result not sendable: {exc}")
            continue
        point = MetricPoint.finite(data.type, data.timestamp, {**data.values, **added})
        if not batch:
            deadline = trio.current_time() + linger_s
        batch[metrics.name] = metric_to_message(point)
        if expected and expected <= batch.keys():
            expected = frozenset(batch)
            await flush()
            deadline = math.inf
