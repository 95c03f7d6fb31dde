"""The real probe: the only module that imports psutil.

Every method is synchronous and may block (a stale NFS mount can hang ``statvfs`` for
minutes), so collectors call them from a worker thread with a timeout. psutil's and the
OS's errors are translated here into :class:`~collectors.ProbeUnavailableError`, with the
original as ``__cause__``; nothing psutil-specific leaks past this module.

Disk IO counters are keyed by the kernel's device name (``/proc/diskstats``: ``vda``,
``nvme0n1p2``, ``dm-0``), while the mount table names devices by path (``/dev/vda``,
``/dev/mapper/root``, ``/dev/root``). The seed looked the counters up by the path and so
never found them. :meth:`PsutilProbe.kernel_names` gives the names to try: the basename of
the device path with symlinks resolved (``/dev/mapper/root`` -> ``dm-0``), then the block
device that holds the mount point according to ``/sys/dev/block/MAJOR:MINOR``, which also
covers ``/dev/root``.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import psutil

from ._errors import ProbeUnavailableError
from ._sample import CpuInfo, CpuTimes, DiskIo, DiskUsage, MemorySample, NetIo, Partition

__all__ = ["PsutilProbe", "parse_cpu_model"]

_T = TypeVar("_T")

_MODEL_KEYS = ("model name", "cpu model", "processor", "hardware", "cpu")


def parse_cpu_model(cpuinfo: str) -> str:
    """Find the CPU model name in the text of ``/proc/cpuinfo``.

    Args:
        cpuinfo: The file's text. x86 says ``model name``; other architectures use
            ``cpu model``, ``Processor``/``Hardware`` (ARM) or ``cpu`` (POWER).

    Returns:
        The first non-numeric value of the best key present, or ``""``.
    """
    found: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, colon, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        # ARM's "processor : 0" is an index, not a name.
        if colon and value and key in _MODEL_KEYS and key not in found and not value.isdigit():
            found[key] = value
    return next((found[key] for key in _MODEL_KEYS if key in found), "")


def _call(what: str, function: Callable[[], _T]) -> _T:
    try:
        return function()
    except (OSError, psutil.Error, RuntimeError) as exc:
        raise ProbeUnavailableError(f"{what}: {exc}") from exc


class PsutilProbe:
    """Reads the host through psutil. Safe to share between threads.

    The CPU model is read once (from ``/proc/cpuinfo``, else :func:`platform.processor`)
    and cached.
    """

    def __init__(self) -> None:
        self._model: str | None = None

    def cpu_times(self) -> CpuTimes:
        """Cumulative CPU times, all CPUs together.

        Returns:
            The times; fields psutil does not report on this platform are 0.

        Raises:
            ProbeUnavailableError: psutil failed.
        """
        times = _call("cpu_times", psutil.cpu_times)
        return CpuTimes(
            user=times.user,
            nice=getattr(times, "nice", 0.0),
            system=times.system,
            idle=times.idle,
            iowait=getattr(times, "iowait", 0.0),
            irq=getattr(times, "irq", 0.0),
            softirq=getattr(times, "softirq", 0.0),
            steal=getattr(times, "steal", 0.0),
            guest=getattr(times, "guest", 0.0),
            guest_nice=getattr(times, "guest_nice", 0.0),
        )

    def cpu_info(self) -> CpuInfo:
        """Logical CPU count and model name.

        Returns:
            The info; cores is at least 1.

        Raises:
            ProbeUnavailableError: psutil failed.
        """
        cores = _call("cpu_count", psutil.cpu_count) or 1
        if self._model is None:
            try:
                with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as file:
                    model = parse_cpu_model(file.read())
            except OSError:
                model = ""
            self._model = model or platform.processor()
        return CpuInfo(cores=cores, model=self._model)

    def memory(self) -> MemorySample:
        """Virtual memory and swap.

        Returns:
            The figures; ``cached``/``buffers`` are None where psutil lacks them.

        Raises:
            ProbeUnavailableError: psutil failed.
        """
        vm = _call("virtual_memory", psutil.virtual_memory)
        swap = _call("swap_memory", psutil.swap_memory)
        cached = getattr(vm, "cached", None)
        buffers = getattr(vm, "buffers", None)
        return MemorySample(
            total=vm.total,
            available=vm.available,
            used=vm.used,
            cached=cached,
            buffers=buffers,
            swap_total=swap.total,
            swap_used=swap.used,
        )

    def partitions(self, *, all_partitions: bool) -> Sequence[Partition]:
        """The mount table.

        Args:
            all_partitions: Include pseudo file systems (proc, tmpfs, cgroup...).

        Returns:
            The mounts in mount-table order.

        Raises:
            ProbeUnavailableError: psutil failed.
        """
        parts = _call("disk_partitions", lambda: psutil.disk_partitions(all=all_partitions))
        return [Partition(device=p.device, mountpoint=p.mountpoint, fstype=p.fstype) for p in parts]

    def disk_usage(self, mountpoint: str) -> DiskUsage:
        """Space on one file system.

        Args:
            mountpoint: Where it is mounted.

        Returns:
            Its usage; ``used_percent`` counts space reserved for root as unavailable.

        Raises:
            ProbeUnavailableError: The file system could not be queried.
        """
        usage = _call(f"disk_usage({mountpoint!r})", lambda: psutil.disk_usage(mountpoint))
        return DiskUsage(
            total=usage.total, used=usage.used, free=usage.free, used_percent=usage.percent
        )

    def disk_io(self) -> Mapping[str, DiskIo]:
        """Block device IO counters.

        Returns:
            Counters keyed by kernel device name; empty if the platform has none.

        Raises:
            ProbeUnavailableError: psutil failed.
        """
        counters = _call("disk_io_counters", lambda: psutil.disk_io_counters(perdisk=True))
        return {
            name: DiskIo(
                read_bytes=c.read_bytes,
                write_bytes=c.write_bytes,
                read_count=c.read_count,
                write_count=c.write_count,
            )
            for name, c in (counters or {}).items()
        }

    def kernel_names(self, partition: Partition) -> Sequence[str]:
        """Kernel device names that may hold a partition's IO counters, best first.

        Args:
            partition: A mount from :meth:`partitions`.

        Returns:
            Zero to two candidate names (see the module documentation).
        """
        names: list[str] = []
        if partition.device.startswith("/"):
            names.append(os.path.basename(os.path.realpath(partition.device)))
        try:
            dev = os.stat(partition.mountpoint).st_dev
            sysfs = f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}"
            if os.path.exists(sysfs):
                names.append(os.path.basename(os.path.realpath(sysfs)))
        except OSError:
            pass
        return list(dict.fromkeys(name for name in names if name))

    def net_io(self) -> Mapping[str, NetIo]:
        """Per-interface network counters.

        Returns:
            Counters keyed by interface name.

        Raises:
            ProbeUnavailableError: psutil failed.
        """
        counters = _call("net_io_counters", lambda: psutil.net_io_counters(pernic=True))
        return {
            name: NetIo(
                bytes_sent=c.bytes_sent,
                bytes_recv=c.bytes_recv,
                packets_sent=c.packets_sent,
                packets_recv=c.packets_recv,
                errin=c.errin,
                errout=c.errout,
                dropin=c.dropin,
                dropout=c.dropout,
            )
            for name, c in (counters or {}).items()
        }
