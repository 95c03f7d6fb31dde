"""The four built-in collectors: CPU, memory, disk and network. The IO shell.

Theory of operation
-------------------
Each ``collect()`` makes exactly one hop to a worker thread, where it calls the probe (the
blocking part), then comes back to the event loop, reads the clocks and hands the readings
to the pure functions in ``_build`` and ``_rates``. State between collections (the previous
CPU times, the counter readings behind rates) lives in the collector and is only touched on
the event loop.

A probe call can hang (a dead NFS server makes ``statvfs`` block). The thread call is made
with ``abandon_on_cancel=True``, so the manager's timeout returns control at once, and with
a per-collector ``CapacityLimiter`` of one token, which Trio releases only when the thread
really ends: while a call is stuck, later collections of that collector wait for the token
and time out too, instead of starting thread after thread. The other collectors have their
own tokens and carry on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import trio

from ._build import (
    DiskReading,
    cpu_metrics,
    disk_metrics,
    match_io,
    memory_metrics,
    network_metrics,
    select_partitions,
)
from ._collector import Collector, wall_time
from ._config import DEFAULT_INTERVAL_S, CollectorsConfig, check_interval
from ._errors import ProbeUnavailableError
from ._metrics import Metrics
from ._rates import RateTracker, cpu_percent
from ._sample import CpuInfo, CpuTimes, DiskIo, DiskUsage, Partition, Probe

__all__ = [
    "CpuCollector",
    "DiskCollector",
    "MemoryCollector",
    "NetworkCollector",
    "builtin_collectors",
]

_T = TypeVar("_T")
_default_probe: Probe | None = None


def _probe_or_default(probe: Probe | None) -> Probe:
    global _default_probe
    if probe is not None:
        return probe
    if _default_probe is None:
        from ._probe import PsutilProbe

        _default_probe = PsutilProbe()
    return _default_probe


class _ThreadedCollector:
    """Name, interval, probe, and the one-thread-at-a-time hop into the probe."""

    _NAME = ""

    def __init__(self, interval_s: float, probe: Probe | None) -> None:
        check_interval(type(self).__name__, interval_s)
        self._interval_s = float(interval_s)
        self._probe = _probe_or_default(probe)
        self._limiter = trio.CapacityLimiter(1)

    @property
    def name(self) -> str:
        """The collector's name, as in the seed."""
        return self._NAME

    @property
    def interval_s(self) -> float:
        """Seconds between collections."""
        return self._interval_s

    async def _in_thread(self, read: Callable[[], _T]) -> _T:
        return await trio.to_thread.run_sync(
            read,
            abandon_on_cancel=True,
            limiter=self._limiter,
            thread_name=f"collectors.{self._NAME}",
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(interval_s={self._interval_s!r})"


class CpuCollector(_ThreadedCollector):
    """CPU usage from the difference of two samples, never from a blocking sleep.

    The first collection reports the average since boot; each later one, the usage since
    the previous collection.

    Args:
        interval_s: Seconds between collections.
        probe: Where readings come from; the psutil probe by default.

    Raises:
        CollectorConfigError: ``interval_s`` is not a positive finite number.
    """

    _NAME = "cpu"

    def __init__(
        self, interval_s: float = DEFAULT_INTERVAL_S, *, probe: Probe | None = None
    ) -> None:
        super().__init__(interval_s, probe)
        self._previous: CpuTimes | None = None

    async def collect(self) -> Metrics:
        """Read the CPU times and compute usage since the previous collection.

        Returns:
            ``Metrics("cpu", ...)``: usage_percent, cores, model, user, system, idle and the
            interval's user/system/idle/iowait percentages.

        Raises:
            ProbeUnavailableError: The OS did not answer.
        """
        probe = self._probe

        def read() -> tuple[CpuInfo, CpuTimes]:
            return probe.cpu_info(), probe.cpu_times()

        info, times = await self._in_thread(read)
        percent = cpu_percent(self._previous, times)
        self._previous = times
        return cpu_metrics(info, times, percent, timestamp=wall_time())


class MemoryCollector(_ThreadedCollector):
    """Virtual memory and swap.

    Args:
        interval_s: Seconds between collections.
        probe: Where readings come from; the psutil probe by default.

    Raises:
        CollectorConfigError: ``interval_s`` is not a positive finite number.
    """

    _NAME = "memory"

    def __init__(
        self, interval_s: float = DEFAULT_INTERVAL_S, *, probe: Probe | None = None
    ) -> None:
        super().__init__(interval_s, probe)

    async def collect(self) -> Metrics:
        """Read memory and swap.

        Returns:
            ``Metrics("memory", ...)`` with the seed's fields.

        Raises:
            ProbeUnavailableError: The OS did not answer.
        """
        sample = await self._in_thread(self._probe.memory)
        return memory_metrics(sample, timestamp=wall_time())


class DiskCollector(_ThreadedCollector):
    """Space and IO of each mounted file system.

    IO counters are matched to partitions by the kernel's device name. Pseudo file systems
    are skipped unless listed in ``mount_points``. A partition whose usage cannot be read
    (unmounted meanwhile, no permission) is left out of that collection.

    Args:
        interval_s: Seconds between collections.
        mount_points: Report only these; empty means every real file system.
        probe: Where readings come from; the psutil probe by default.

    Raises:
        CollectorConfigError: ``interval_s`` is not a positive finite number.
    """

    _NAME = "disk"

    def __init__(
        self,
        interval_s: float = DEFAULT_INTERVAL_S,
        *,
        mount_points: tuple[str, ...] = (),
        probe: Probe | None = None,
    ) -> None:
        super().__init__(interval_s, probe)
        self._mount_points = frozenset(mount_points)
        self._rates = RateTracker()

    @property
    def mount_points(self) -> frozenset[str]:
        """The mount point filter (empty: all real file systems)."""
        return self._mount_points

    def _read(self) -> DiskReading:
        """Runs in the worker thread: the mount table, then usage and IO for each."""
        probe = self._probe
        partitions = select_partitions(
            probe.partitions(all_partitions=bool(self._mount_points)), self._mount_points
        )
        io = probe.disk_io()
        rows: list[tuple[Partition, DiskUsage, DiskIo | None]] = []
        for partition in partitions:
            try:
                usage = probe.disk_usage(partition.mountpoint)
            except ProbeUnavailableError:
                continue
            rows.append((partition, usage, match_io(probe.kernel_names(partition), io)))
        return DiskReading(partitions=tuple(rows))

    async def collect(self) -> Metrics:
        """Read every selected partition.

        Returns:
            ``Metrics("disk", {"disks": Table("mountpoint", ...)})``.

        Raises:
            ProbeUnavailableError: The mount table or IO counters could not be read.
        """
        reading = await self._in_thread(self._read)
        return disk_metrics(reading, self._rates, now=trio.current_time(), timestamp=wall_time())


class NetworkCollector(_ThreadedCollector):
    """Counters and rates of each network interface.

    Args:
        interval_s: Seconds between collections.
        interfaces: Report only these; empty means all of them.
        probe: Where readings come from; the psutil probe by default.

    Raises:
        CollectorConfigError: ``interval_s`` is not a positive finite number.
    """

    _NAME = "network"

    def __init__(
        self,
        interval_s: float = DEFAULT_INTERVAL_S,
        *,
        interfaces: tuple[str, ...] = (),
        probe: Probe | None = None,
    ) -> None:
        super().__init__(interval_s, probe)
        self._interfaces = frozenset(interfaces)
        self._rates = RateTracker()

    @property
    def interfaces(self) -> frozenset[str]:
        """The interface filter (empty: all)."""
        return self._interfaces

    async def collect(self) -> Metrics:
        """Read every selected interface.

        Returns:
            ``Metrics("network", {"interfaces": Table("interface", ...)})``.

        Raises:
            ProbeUnavailableError: The OS did not answer.
        """
        io = await self._in_thread(self._probe.net_io)
        return network_metrics(
            io, self._interfaces, self._rates, now=trio.current_time(), timestamp=wall_time()
        )


def builtin_collectors(config: CollectorsConfig, *, probe: Probe | None = None) -> list[Collector]:
    """The enabled built-in collectors, configured as the ``collectors`` block says.

    Args:
        config: The parsed configuration.
        probe: Where readings come from; the psutil probe by default.

    Returns:
        The collectors, in the order cpu, memory, disk, network (enabled ones only).
    """
    chosen: list[Collector] = []
    if config.cpu.enabled:
        chosen.append(CpuCollector(config.cpu.interval_s, probe=probe))
    if config.memory.enabled:
        chosen.append(MemoryCollector(config.memory.interval_s, probe=probe))
    if config.disk.enabled:
        chosen.append(
            DiskCollector(
                config.disk.interval_s, mount_points=config.disk.mount_points, probe=probe
            )
        )
    if config.network.enabled:
        chosen.append(
            NetworkCollector(
                config.network.interval_s, interfaces=config.network.interfaces, probe=probe
            )
        )
    return chosen
