"""From readings to the seed's ``Metrics``: selection, matching and shaping. Pure code.

Theory of operation
-------------------
Each built-in collector reads the OS through a probe (in a thread), then calls one function
here with the readings, the monotonic ``now`` and the wall-clock ``timestamp``. These
functions decide what is reported and under which names; they do no IO and read no clock.

Field names are the seed's (section 3.2): ``cpu`` has usage_percent, cores, model, user,
system, idle; ``memory`` has total, available, used, used_percent, cached, buffers,
swap_total, swap_used; ``disk`` has a ``disks`` table keyed by ``mountpoint`` with device,
fstype, total, used, free, used_percent, read_bytes, write_bytes; ``network`` has an
``interfaces`` table keyed by ``interface`` with bytes_sent/recv, packets_sent/recv, errin,
errout, dropin, dropout. As in the seed, ``user``/``system``/``idle`` are cumulative CPU
seconds. We add what the seed lacked: ``user_percent``, ``system_percent``,
``idle_percent`` and ``iowait_percent`` over the interval, and per-second rates named
``<counter>_per_s`` (``read_bytes_per_s``, ``bytes_recv_per_s``...) from the second
collection on. Memory's ``used_percent`` is ``used / total`` (the seed's gopsutil
definition, consistent with the ``used`` it sends).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from ._metrics import Metrics, Scalar, Table
from ._rates import CpuPercent, RateTracker
from ._sample import CpuInfo, CpuTimes, DiskIo, DiskUsage, MemorySample, NetIo, Partition

__all__ = [
    "PSEUDO_FSTYPES",
    "DiskReading",
    "cpu_metrics",
    "disk_metrics",
    "match_io",
    "memory_metrics",
    "network_metrics",
    "select_partitions",
]

PSEUDO_FSTYPES = frozenset(
    {
        "autofs", "binfmt_misc", "bpf", "cgroup", "cgroup2", "configfs", "debugfs",
        "devpts", "devtmpfs", "efivarfs", "fuse.gvfsd-fuse", "fuse.lxcfs", "fuse.portal",
        "fusectl", "hugetlbfs", "mqueue", "nsfs", "overlay", "proc", "pstore", "ramfs",
        "rpc_pipefs", "securityfs", "squashfs", "sysfs", "tmpfs", "tracefs",
    }
)  # fmt: skip
"""File systems skipped unless asked for by mount point: they hold no disk space of their
own (squashfs images are read-only and always full; overlay repeats its lower layers)."""


def select_partitions(
    partitions: Iterable[Partition], mount_points: Collection[str]
) -> list[Partition]:
    """Choose the partitions to report.

    Args:
        partitions: The mount table, in order.
        mount_points: The configured filter; empty means every real file system.

    Returns:
        With a filter, the partitions mounted at those points, whatever their type; without
        one, every partition whose type is not in :data:`PSEUDO_FSTYPES`. A mount point
        listed twice (something mounted over it) keeps its last entry, the one visible.
    """
    chosen: dict[str, Partition] = {}
    for partition in partitions:
        if mount_points:
            if partition.mountpoint not in mount_points:
                continue
        elif partition.fstype in PSEUDO_FSTYPES:
            continue
        chosen.pop(partition.mountpoint, None)
        chosen[partition.mountpoint] = partition
    return list(chosen.values())


def match_io(candidates: Sequence[str], io: Mapping[str, DiskIo]) -> DiskIo | None:
    """The IO counters of the first candidate kernel device name that has any.

    Args:
        candidates: Names from ``Probe.kernel_names``, best first.
        io: Counters keyed by kernel device name.

    Returns:
        The counters, or None if no candidate is known (network and pseudo file systems).
    """
    return next((io[name] for name in candidates if name in io), None)


@dataclass(frozen=True, slots=True)
class DiskReading:
    """One reading of the disks: each partition with its usage and its IO counters."""

    partitions: tuple[tuple[Partition, DiskUsage, DiskIo | None], ...]


def cpu_metrics(
    info: CpuInfo, times: CpuTimes, percent: CpuPercent, *, timestamp: float
) -> Metrics:
    """Shape the CPU collector's result.

    Args:
        info: Core count and model.
        times: The cumulative times just read.
        percent: Usage since the previous sample (``_rates.cpu_percent``).
        timestamp: Unix time of the reading.

    Returns:
        ``Metrics("cpu", ...)`` with the seed's fields and the interval percentages.
    """
    return Metrics(
        name="cpu",
        timestamp=timestamp,
        values={
            "usage_percent": percent.usage,
            "cores": info.cores,
            "model": info.model,
            "user": times.user,
            "system": times.system,
            "idle": times.idle,
            "user_percent": percent.user,
            "system_percent": percent.system,
            "idle_percent": percent.idle,
            "iowait_percent": percent.iowait,
        },
    )


def memory_metrics(sample: MemorySample, *, timestamp: float) -> Metrics:
    """Shape the memory collector's result.

    Args:
        sample: The reading.
        timestamp: Unix time of the reading.

    Returns:
        ``Metrics("memory", ...)``; ``cached``/``buffers`` are left out where unknown.
    """
    values: dict[str, Scalar] = {
        "total": sample.total,
        "available": sample.available,
        "used": sample.used,
        "used_percent": 100.0 * sample.used / sample.total if sample.total else 0.0,
        "swap_total": sample.swap_total,
        "swap_used": sample.swap_used,
    }
    if sample.cached is not None:
        values["cached"] = sample.cached
    if sample.buffers is not None:
        values["buffers"] = sample.buffers
    return Metrics(name="memory", timestamp=timestamp, values=values)


def disk_metrics(
    reading: DiskReading, rates: RateTracker, *, now: float, timestamp: float
) -> Metrics:
    """Shape the disk collector's result and update its IO rates.

    Args:
        reading: The partitions with usage and matched IO counters.
        rates: The collector's rate state, keyed by mount point (updated in place).
        now: Monotonic time of the reading, for rates.
        timestamp: Unix time of the reading.

    Returns:
        ``Metrics("disk", {"disks": Table("mountpoint", ...)})``. ``read_bytes`` and
        ``write_bytes`` (and their rates) are present only for partitions whose block device
        has IO counters.
    """
    rows: dict[str, dict[str, Scalar]] = {}
    for partition, usage, io in reading.partitions:
        row: dict[str, Scalar] = {
            "device": partition.device,
            "fstype": partition.fstype,
            "total": usage.total,
            "used": usage.used,
            "free": usage.free,
            "used_percent": usage.used_percent,
        }
        if io is not None:
            counters = {"read_bytes": io.read_bytes, "write_bytes": io.write_bytes}
            row.update(counters)
            row.update(rates.update(partition.mountpoint, counters, now))
        rows[partition.mountpoint] = row
    rates.retain(
        {partition.mountpoint for partition, _, io in reading.partitions if io is not None}
    )
    return Metrics(
        name="disk", timestamp=timestamp, values={"disks": Table(key="mountpoint", rows=rows)}
    )


_NET_RATES = ("bytes_sent", "bytes_recv", "packets_sent", "packets_recv")


def network_metrics(
    io: Mapping[str, NetIo],
    interfaces: Collection[str],
    rates: RateTracker,
    *,
    now: float,
    timestamp: float,
) -> Metrics:
    """Shape the network collector's result and update its rates.

    Args:
        io: Counters keyed by interface name.
        interfaces: The configured filter; empty means every interface.
        rates: The collector's rate state, keyed by interface (updated in place).
        now: Monotonic time of the reading, for rates.
        timestamp: Unix time of the reading.

    Returns:
        ``Metrics("network", {"interfaces": Table("interface", ...)})`` with the seed's
        counters and, from the second reading, bytes and packets per second.
    """
    rows: dict[str, dict[str, Scalar]] = {}
    for name, counters in io.items():
        if interfaces and name not in interfaces:
            continue
        row: dict[str, Scalar] = {
            "bytes_sent": counters.bytes_sent,
            "bytes_recv": counters.bytes_recv,
            "packets_sent": counters.packets_sent,
            "packets_recv": counters.packets_recv,
            "errin": counters.errin,
            "errout": counters.errout,
            "dropin": counters.dropin,
            "dropout": counters.dropout,
        }
        row.update(rates.update(name, {k: getattr(counters, k) for k in _NET_RATES}, now))
        rows[name] = row
    rates.retain(set(rows))
    return Metrics(
        name="network",
        timestamp=timestamp,
        values={"interfaces": Table(key="interface", rows=rows)},
    )
