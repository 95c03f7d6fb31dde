"""Raw readings from the operating system, and the probe interface that produces them.

Theory of operation
-------------------
A probe answers small synchronous questions ("what are the CPU times now?") and returns
these frozen values. The collectors run probe calls in a worker thread, then hand the
readings to pure functions (``_rates``, ``_build``) that compute percentages and rates and
shape the seed's ``Metrics``. The real probe (``_probe.PsutilProbe``) is the only code that
touches psutil; tests give the collectors a probe that replays counter sequences.

Counters are cumulative since boot and kept as ``int`` so that deltas are exact.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "CpuInfo",
    "CpuTimes",
    "DiskIo",
    "DiskUsage",
    "MemorySample",
    "NetIo",
    "Partition",
    "Probe",
]


@dataclass(frozen=True, slots=True)
class CpuTimes:
    """Cumulative CPU seconds since boot, summed over all logical CPUs.

    Fields a platform does not report are 0. On Linux, ``guest`` and ``guest_nice`` are
    already included in ``user`` and ``nice``, so :attr:`total` leaves them out.
    """

    user: float = 0.0
    nice: float = 0.0
    system: float = 0.0
    idle: float = 0.0
    iowait: float = 0.0
    irq: float = 0.0
    softirq: float = 0.0
    steal: float = 0.0
    guest: float = 0.0
    guest_nice: float = 0.0

    @property
    def total(self) -> float:
        """All CPU time, each second counted once."""
        return (
            self.user
            + self.nice
            + self.system
            + self.idle
            + self.iowait
            + self.irq
            + self.softirq
            + self.steal
        )


@dataclass(frozen=True, slots=True)
class CpuInfo:
    """What does not change between CPU samples (except on hot-plug).

    Attributes:
        cores: Logical CPUs (the seed's ``len(cpu.Info())``).
        model: The CPU model name, or ``""`` if the platform does not say.
    """

    cores: int
    model: str


@dataclass(frozen=True, slots=True)
class MemorySample:
    """Virtual memory and swap, in bytes. ``cached``/``buffers`` are None where unknown."""

    total: int
    available: int
    used: int
    cached: int | None
    buffers: int | None
    swap_total: int
    swap_used: int


@dataclass(frozen=True, slots=True)
class Partition:
    """A mounted file system as the mount table lists it."""

    device: str
    mountpoint: str
    fstype: str


@dataclass(frozen=True, slots=True)
class DiskUsage:
    """Space on one file system, in bytes; ``used_percent`` is as ``df`` shows it."""

    total: int
    used: int
    free: int
    used_percent: float


@dataclass(frozen=True, slots=True)
class DiskIo:
    """Cumulative IO counters of one block device."""

    read_bytes: int
    write_bytes: int
    read_count: int
    write_count: int


@dataclass(frozen=True, slots=True)
class NetIo:
    """Cumulative counters of one network interface."""

    bytes_sent: int
    bytes_recv: int
    packets_sent: int
    packets_recv: int
    errin: int
    errout: int
    dropin: int
    dropout: int


class Probe(Protocol):
    """Synchronous, possibly blocking reads of the host's state.

    The built-in collectors call these from a worker thread, never on the event loop.
    Implementations raise :class:`~collectors.ProbeUnavailableError` when the OS does not
    answer.
    """

    def cpu_times(self) -> CpuTimes:
        """Cumulative CPU times of the whole machine."""
        ...

    def cpu_info(self) -> CpuInfo:
        """Logical core count and model name."""
        ...

    def memory(self) -> MemorySample:
        """Virtual memory and swap figures."""
        ...

    def partitions(self, *, all_partitions: bool) -> Sequence[Partition]:
        """Mounted file systems; pseudo file systems only if ``all_partitions``."""
        ...

    def disk_usage(self, mountpoint: str) -> DiskUsage:
        """Space on the file system mounted at ``mountpoint``."""
        ...

    def disk_io(self) -> Mapping[str, DiskIo]:
        """IO counters keyed by the kernel's block device name (``sda1``, ``dm-0``)."""
        ...

    def kernel_names(self, partition: Partition) -> Sequence[str]:
        """Kernel device names that may hold ``partition``'s IO counters, best first."""
        ...

    def net_io(self) -> Mapping[str, NetIo]:
        """Counters keyed by interface name."""
        ...
