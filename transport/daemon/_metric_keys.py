"""The value keys the original daemon sends, computed from the collectors' results. PURE.

Theory of operation
-------------------
An original Manager and its web console read fixed keys from each ``MetricData``
(``../shared/notes/original-system.md`` section 1; the console reads ``usage_percent``,
``used_bytes``, ``total_bytes``, ``rx_bytes``, ``tx_bytes``, ``interval_seconds``...). Our
collectors report richer, structured results: per-mount and per-interface tables that
:func:`collectors.to_metric_data` flattens into keys such as
``disks[mountpoint=/].used``. :func:`original_values` adds the original's keys beside them,
so a report carries both (more keys are fine for every Manager):

========  ==================================================================================
type      keys added (their source)
========  ==================================================================================
cpu       ``usage_percent``, ``cores``, ``user``, ``system``, ``idle`` (the collector's),
          ``mhz`` and ``iowait`` (cumulative seconds) from :class:`HostExtras`: the
          collectors do not read them; 0 where unknown
memory    ``total_bytes``/``total``, ``used_bytes``/``used``, ``available_bytes``/
          ``available``, ``free_bytes``/``free``, ``usage_percent``, ``cached``,
          ``buffers``, ``swap_total``, ``swap_used``, ``swap_free``, ``swap_percent``.
          ``free`` is ``total - used - cached - buffers``, the definition under which the
          original's (gopsutil's) and psutil's ``used`` agree
disk      ``total_bytes``, ``used_bytes``, ``free_bytes``, ``usage_percent`` (used / total
          over the reported mounts), ``read_bytes``, ``write_bytes``, ``partition_count``;
          a device mounted twice is counted once
network   ``bytes_sent``, ``bytes_recv``, ``packets_sent``, ``packets_recv``,
          ``error_in``, ``error_out``, ``drop_in``, ``drop_out`` (cumulative, summed over
          interfaces), ``interface_count``, and ``tx_bytes``/``rx_bytes``: bytes since the
          previous sample, over ``interval_seconds``. Those need the previous sample:
          :class:`NetworkTotals` carries it from one call to the next (0 on the first)
========  ==================================================================================

A counter that went backwards (an interface re-created, a counter wrapped) counts from zero:
its delta is its new value, never negative. Other types (plugins) get nothing added.

Results are read by duck typing (a number, a string, or a table with ``rows``), so this
module imports nothing from ``collectors`` at run time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collectors import Metrics

__all__ = ["ORIGINAL_KEYS", "HostExtras", "NetworkTotals", "original_values"]

ORIGINAL_KEYS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "cpu": frozenset(
            {"usage_percent", "cores", "mhz", "user", "system", "idle", "iowait"}
        ),
        "memory": frozenset(
            {
                "total_bytes", "used_bytes", "free_bytes", "available_bytes", "usage_percent",
                "cached", "buffers", "swap_total", "swap_used", "swap_free", "swap_percent",
                "total", "available", "used", "free",
            }
        ),
        "disk": frozenset(
            {
                "total_bytes", "used_bytes", "free_bytes", "usage_percent", "read_bytes",
                "write_bytes", "partition_count",
            }
        ),
        "network": frozenset(
            {
                "tx_bytes", "rx_bytes", "bytes_sent", "bytes_recv", "packets_sent",
                "packets_recv", "error_in", "error_out", "drop_in", "drop_out",
                "interface_count", "interval_seconds",
            }
        ),
    }
)  # fmt: skip
"""Every value key the original daemon sends, by metric type."""


@dataclass(frozen=True, slots=True)
class HostExtras:
    """CPU figures the collectors do not report, read by the daemon beside them.

    Attributes:
        cpu_mhz: The CPU clock (``/proc/cpuinfo``'s ``cpu MHz``), or None.
        cpu_iowait_s: Cumulative iowait seconds over all CPUs (``/proc/stat``), or None.
    """

    cpu_mhz: float | None = None
    cpu_iowait_s: float | None = None


@dataclass(frozen=True, slots=True)
class NetworkTotals:
    """The previous network sample, for ``tx_bytes``/``rx_bytes``.

    Attributes:
        timestamp: When it was taken (unix seconds).
        counters: ``(bytes_sent, bytes_recv)`` by interface.
    """

    timestamp: float
    counters: Mapping[str, tuple[float, float]] = field(default_factory=dict)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _field(values: Mapping[str, object], name: str) -> float:
    return _number(values.get(name)) or 0.0


def _rows(values: Mapping[str, object], table: str) -> Mapping[str, Mapping[str, object]]:
    rows = getattr(values.get(table), "rows", None)
    return rows if isinstance(rows, Mapping) else {}


def _percent(part: float, whole: float) -> float:
    return 100.0 * part / whole if whole > 0 else 0.0


def _delta(new: float, old: float) -> float:
    return new - old if new >= old else new


def _cpu(values: Mapping[str, object], extras: HostExtras) -> dict[str, float]:
    return {
        "usage_percent": _field(values, "usage_percent"),
        "cores": _field(values, "cores"),
        "mhz": extras.cpu_mhz or 0.0,
        "user": _field(values, "user"),
        "system": _field(values, "system"),
        "idle": _field(values, "idle"),
        "iowait": extras.cpu_iowait_s or 0.0,
    }


def _memory(values: Mapping[str, object]) -> dict[str, float]:
    total, used = _field(values, "total"), _field(values, "used")
    available = _field(values, "available")
    cached, buffers = _field(values, "cached"), _field(values, "buffers")
    free = max(0.0, total - used - cached - buffers)
    swap_total, swap_used = _field(values, "swap_total"), _field(values, "swap_used")
    return {
        "total_bytes": total,
        "used_bytes": used,
        "free_bytes": free,
        "available_bytes": available,
        "usage_percent": _percent(used, total),
        "cached": cached,
        "buffers": buffers,
        "swap_total": swap_total,
        "swap_used": swap_used,
        "swap_free": max(0.0, swap_total - swap_used),
        "swap_percent": _percent(swap_used, swap_total),
        "total": total,
        "available": available,
        "used": used,
        "free": free,
    }


def _disk(values: Mapping[str, object]) -> dict[str, float]:
    rows = _rows(values, "disks")
    total = used = free = read = write = 0.0
    seen: set[str] = set()
    for mountpoint, row in rows.items():
        device = row.get("device")
        key = device if isinstance(device, str) and device else f"mount:{mountpoint}"
        if key in seen:
            continue  # the same file system mounted twice
        seen.add(key)
        total += _field(row, "total")
        used += _field(row, "used")
        free += _field(row, "free")
        read += _field(row, "read_bytes")
        write += _field(row, "write_bytes")
    return {
        "total_bytes": total,
        "used_bytes": used,
        "free_bytes": free,
        "usage_percent": _percent(used, total),
        "read_bytes": read,
        "write_bytes": write,
        "partition_count": float(len(rows)),
    }


_NET_SUMS = {
    "bytes_sent": "bytes_sent",
    "bytes_recv": "bytes_recv",
    "packets_sent": "packets_sent",
    "packets_recv": "packets_recv",
    "error_in": "errin",
    "error_out": "errout",
    "drop_in": "dropin",
    "drop_out": "dropout",
}


def _network(
    values: Mapping[str, object], timestamp: float, previous: NetworkTotals | None
) -> tuple[dict[str, float], NetworkTotals]:
    rows = _rows(values, "interfaces")
    out = {key: sum(_field(row, name) for row in rows.values()) for key, name in _NET_SUMS.items()}
    counters = {
        name: (_field(row, "bytes_sent"), _field(row, "bytes_recv")) for name, row in rows.items()
    }
    tx = rx = interval = 0.0
    if previous is not None and timestamp > previous.timestamp:
        interval = timestamp - previous.timestamp
        for name, (sent, received) in counters.items():
            old = previous.counters.get(name)
            if old is not None:
                tx += _delta(sent, old[0])
                rx += _delta(received, old[1])
    out.update(
        tx_bytes=tx,
        rx_bytes=rx,
        interface_count=float(len(rows)),
        interval_seconds=interval,
    )
    return out, NetworkTotals(timestamp, MappingProxyType(counters))


def original_values(
    metrics: Metrics, *, previous: NetworkTotals | None = None, extras: HostExtras | None = None
) -> tuple[dict[str, float], NetworkTotals | None]:
    """The original daemon's value keys for one collector result.

    Args:
        metrics: The result (``collectors.Metrics``; ``name`` is the type).
        previous: The previous network sample (only used for ``network``).
        extras: The CPU figures the collectors lack (only used for ``cpu``).

    Returns:
        The keys to add (empty for a type the original does not send), and the network
        sample to pass next time (``previous`` unchanged for other types).
    """
    values: Mapping[str, object] = metrics.values
    match metrics.name:
        case "cpu":
            return _cpu(values, extras or HostExtras()), previous
        case "memory":
            return _memory(values), previous
        case "disk":
            return _disk(values), previous
        case "network":
            return _network(values, float(metrics.timestamp), previous)
    return {}, previous
