"""A probe that replays readings: the test double below the collectors' probe seam."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from collectors import (
    CpuInfo,
    CpuTimes,
    DiskIo,
    DiskUsage,
    MemorySample,
    NetIo,
    Partition,
    ProbeUnavailableError,
)


def net(bytes_recv: int = 0, packets_recv: int = 0, bytes_sent: int = 0) -> NetIo:
    return NetIo(
        bytes_sent=bytes_sent,
        bytes_recv=bytes_recv,
        packets_sent=0,
        packets_recv=packets_recv,
        errin=0,
        errout=0,
        dropin=0,
        dropout=0,
    )


@dataclass
class FakeProbe:
    """Each call returns the next reading of its sequence (the last one repeats).

    ``block`` makes every call wait on an event, like a probe stuck on a dead NFS mount.
    """

    cpu: list[CpuTimes] = field(default_factory=lambda: [CpuTimes(user=1, idle=9)])
    mem: MemorySample = field(
        default_factory=lambda: MemorySample(
            total=1000, available=600, used=300, cached=50, buffers=None, swap_total=0, swap_used=0
        )
    )
    mounts: list[Partition] = field(default_factory=list)
    usage: dict[str, DiskUsage] = field(default_factory=dict)
    io: list[dict[str, DiskIo]] = field(default_factory=lambda: [{}])
    names: dict[str, list[str]] = field(default_factory=dict)
    nets: list[dict[str, NetIo]] = field(default_factory=lambda: [{}])
    block: threading.Event | None = None
    calls: dict[str, int] = field(default_factory=dict)
    entered: int = 0  # calls started, including ones still blocked
    returned: threading.Event = field(default_factory=threading.Event)  # a call returned

    def _next(self, what: str, sequence: Sequence[object]) -> object:
        self.entered += 1
        if self.block is not None:
            self.block.wait()
        self.returned.set()
        count = self.calls.get(what, 0)
        self.calls[what] = count + 1
        return sequence[min(count, len(sequence) - 1)]

    def cpu_times(self) -> CpuTimes:
        result = self._next("cpu_times", self.cpu)
        assert isinstance(result, CpuTimes)
        return result

    def cpu_info(self) -> CpuInfo:
        return CpuInfo(cores=4, model="Fake CPU @ 1.00GHz")

    def memory(self) -> MemorySample:
        result = self._next("memory", [self.mem])
        assert isinstance(result, MemorySample)
        return result

    def partitions(self, *, all_partitions: bool) -> Sequence[Partition]:
        self.calls["partitions(all)" if all_partitions else "partitions"] = 1
        return self.mounts

    def disk_usage(self, mountpoint: str) -> DiskUsage:
        if mountpoint not in self.usage:
            raise ProbeUnavailableError(f"disk_usage({mountpoint!r}): gone")
        return self.usage[mountpoint]

    def disk_io(self) -> Mapping[str, DiskIo]:
        result = self._next("disk_io", self.io)
        assert isinstance(result, dict)
        return result

    def kernel_names(self, partition: Partition) -> Sequence[str]:
        return self.names.get(partition.device, [])

    def net_io(self) -> Mapping[str, NetIo]:
        result = self._next("net_io", self.nets)
        assert isinstance(result, dict)
        return result
