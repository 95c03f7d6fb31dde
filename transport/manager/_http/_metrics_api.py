"""The node metrics routes: latest, history, summary, and the cluster overview.

Theory of operation
-------------------
The handlers read the store in worker threads and leave every decision to pure functions:
:func:`time_range` (the ``start_time``/``end_time`` rules: RFC 3339, end after start, a
span of at most 30 days, 1001 naming the parameter), the store helper's
:mod:`transport.manager._downsample` (history buckets by span, every value key averaged, so
a network chart keeps ``rx_bytes``/``tx_bytes`` beyond an hour; and the usage summary), and
:func:`cluster_overview` (the console's dashboard figures).

The overview follows the original: averages and totals over the nodes shown online only
(``total_memory_gb`` and ``total_disk_gb`` from the latest memory and disk ``total_bytes``),
a value a node never reported is 0, and nodes are listed by node id. A node's status is the
one it is shown with (see :func:`~._nodes.shown_status`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from transport.manager import _downsample
from transport.manager._http._auth import principal
from transport.manager._http._envelope import ApiError, ErrorCode, ok, query_time
from transport.manager._http._json import Json, metric_json
from transport.manager._http._nodes import Fleet, shown_status
from transport.manager._model import MetricRow, Node, NodeStatus, Role

__all__ = [
    "DEFAULT_SUMMARY_SPAN_S",
    "MAX_SPAN_S",
    "METRIC_TYPES",
    "cluster_overview",
    "metrics_routes",
    "time_range",
]

METRIC_TYPES = ("cpu", "memory", "disk", "network")
"""The types the console asks for (history refuses others, as the original)."""
MAX_SPAN_S = 30 * 24 * 3600
"""The longest span a history or summary may cover."""
DEFAULT_SUMMARY_SPAN_S = 24 * 3600
"""The summary's span when no start is given."""
_GIB = 1024**3
_API = "/api/v1/metrics"


def time_range(
    start: float | None, end: float | None, *, now: float, default_span: float | None = None
) -> tuple[int, int]:
    """The time range a request asks for, in whole unix seconds.

    Args:
        start: ``start_time`` (unix seconds), or None when absent.
        end: ``end_time``, or None when absent.
        now: Unix seconds now (the default end).
        default_span: The span a missing ``start_time`` covers before the end; None when
            both times are required.

    Returns:
        ``(start, end)``: ``start`` rounded down, ``end`` rounded up.

    Raises:
        ApiError: 1001 naming the parameter: missing (when required), ``end_time`` not
            after ``start_time``, or a span over 30 days.
    """
    if default_span is None:
        for name, value in (("start_time", start), ("end_time", end)):
            if value is None:
                raise ApiError(ErrorCode.INVALID_PARAMS, f"{name}: required (RFC 3339)")
    stop = now if end is None else end
    begin = stop - (default_span or 0.0) if start is None else start
    assert begin is not None
    if not stop > begin:
        raise ApiError(ErrorCode.INVALID_PARAMS, "end_time: must be after start_time")
    if stop - begin > MAX_SPAN_S:
        raise ApiError(ErrorCode.INVALID_PARAMS, "end_time: the range may span at most 30 days")
    return math.floor(begin), math.ceil(stop)


def _value(row: MetricRow | None, key: str) -> float:
    if row is None:
        return 0.0
    value = row.values.get(key, 0.0)
    return float(value) if math.isfinite(value) else 0.0


def cluster_overview(
    entries: Sequence[tuple[Node, Mapping[str, MetricRow | None]]],
    *,
    now: float,
    offline_after_s: float,
) -> Json:
    """The cluster overview the console's dashboard reads.

    Args:
        entries: Each node with its latest row per metric type (``Store.cluster_overview``).
        now: Unix seconds now.
        offline_after_s: A node is shown offline after this long without a heartbeat.

    Returns:
        ``{aggregate: {avg_cpu, avg_memory, avg_disk, total_memory_gb, total_disk_gb,
        node_counts: {total, online, offline}}, nodes: [{node_id, hostname, ip, status,
        cpu_usage, memory_usage, disk_usage, network_rx, network_tx}]}``.
    """
    nodes: list[Json] = []
    online = 0
    sums = {"cpu": 0.0, "memory": 0.0, "disk": 0.0, "memory_total": 0.0, "disk_total": 0.0}
    for node, latest in sorted(entries, key=lambda entry: entry[0].node_id):
        status = shown_status(node, now=now, offline_after_s=offline_after_s)
        cpu, memory, disk, network = (latest.get(kind) for kind in METRIC_TYPES)
        usage = {
            "cpu": _value(cpu, "usage_percent"),
            "memory": _value(memory, "usage_percent"),
            "disk": _value(disk, "usage_percent"),
        }
        nodes.append(
            {
                "node_id": node.node_id,
                "hostname": node.hostname,
                "ip": node.ip,
                "status": status.value,
                "cpu_usage": usage["cpu"],
                "memory_usage": usage["memory"],
                "disk_usage": usage["disk"],
                "network_rx": _value(network, "rx_bytes"),
                "network_tx": _value(network, "tx_bytes"),
            }
        )
        if status is NodeStatus.ONLINE:
            online += 1
            for key, value in usage.items():
                sums[key] += value
            sums["memory_total"] += _value(memory, "total_bytes")
            sums["disk_total"] += _value(disk, "total_bytes")
    per_node = 1 / online if online else 0.0
    return {
        "aggregate": {
            "avg_cpu": sums["cpu"] * per_node,
            "avg_memory": sums["memory"] * per_node,
            "avg_disk": sums["disk"] * per_node,
            "total_memory_gb": sums["memory_total"] / _GIB,
            "total_disk_gb": sums["disk_total"] / _GIB,
            "node_counts": {"total": len(nodes), "online": online, "offline": len(nodes) - online},
        },
        "nodes": nodes,
    }


class _MetricRoutes:
    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    async def latest(self, request: Request) -> JSONResponse:
        await principal(request, Role.VIEWER)
        node = await self.fleet.node(request.path_params["node_id"])
        latest = await self.fleet.db(self.fleet.store.latest_metrics, node.node_id)
        data = {
            kind: None if (row := latest.get(kind)) is None else metric_json(row)
            for kind in METRIC_TYPES
        }
        return ok(data)

    async def history(self, request: Request) -> JSONResponse:
        await principal(request, Role.VIEWER)
        kind = request.path_params["type"]
        if kind not in METRIC_TYPES:
            raise ApiError(
                ErrorCode.INVALID_PARAMS,
                f"type: expected one of {', '.join(METRIC_TYPES)}; got {kind[:40]!r}",
            )
        start, end = time_range(
            query_time(request, "start_time"),
            query_time(request, "end_time"),
            now=self.fleet.clock(),
        )
        node = await self.fleet.node(request.path_params["node_id"])
        rows = await self.fleet.db(
            self.fleet.store.metric_rows, node.node_id, kind, start=start, end=end
        )
        return ok([metric_json(row) for row in _downsample.history(rows, start=start, end=end)])

    async def summary(self, request: Request) -> JSONResponse:
        await principal(request, Role.VIEWER)
        start, end = time_range(
            query_time(request, "start_time"),
            query_time(request, "end_time"),
            now=self.fleet.clock(),
            default_span=DEFAULT_SUMMARY_SPAN_S,
        )
        node = await self.fleet.node(request.path_params["node_id"])
        data: Json = {}
        for kind in METRIC_TYPES:
            rows = await self.fleet.db(
                self.fleet.store.metric_rows, node.node_id, kind, start=start, end=end
            )
            data[kind] = _downsample.summary(rows)
        return ok(data)

    async def overview(self, request: Request) -> JSONResponse:
        await principal(request, Role.VIEWER)
        entries = await self.fleet.db(self.fleet.store.cluster_overview)
        return ok(
            cluster_overview(
                entries, now=self.fleet.clock(), offline_after_s=self.fleet.offline_after_s
            )
        )


def metrics_routes(fleet: Fleet) -> list[Route]:
    """The metrics routes (under ``/api/v1/metrics``).

    Args:
        fleet: What they serve from.

    Returns:
        The routes.
    """
    r = _MetricRoutes(fleet)
    return [
        Route(f"{_API}/cluster/overview", r.overview, methods=["GET"]),
        Route(f"{_API}/nodes/{{node_id}}/latest", r.latest, methods=["GET"]),
        Route(f"{_API}/nodes/{{node_id}}/summary", r.summary, methods=["GET"]),
        Route(f"{_API}/nodes/{{node_id}}/{{type}}/history", r.history, methods=["GET"]),
    ]
