"""The built-in collectors: against this machine, and fed counter sequences by a fake probe."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

from collectors import (
    CollectorsConfig,
    CpuCollector,
    CpuTimes,
    DiskCollector,
    DiskConfig,
    DiskIo,
    DiskUsage,
    MemoryCollector,
    Metrics,
    NetworkCollector,
    Partition,
    PsutilProbe,
    builtin_collectors,
    from_metric_data,
    to_metric_data,
)
from collectors._build import select_partitions
from collectors._probe import parse_cpu_model
from tests.collectors.fakes import FakeProbe, net


def _percent(value: float) -> bool:
    return 0.0 <= value <= 100.0


def _round_trips(metrics: Metrics) -> None:
    assert from_metric_data(to_metric_data(metrics)) == metrics


# --- this machine -------------------------------------------------------------------------


async def test_real_cpu_is_sane() -> None:
    """The CPU collector reports the seed's fields with percentages in 0..100."""
    collector = CpuCollector()
    for _ in range(2):  # since boot, then since the first sample
        metrics = await collector.collect()
        assert metrics.name == "cpu"
        assert _percent(metrics.number("usage_percent"))
        for name in ("user_percent", "system_percent", "idle_percent", "iowait_percent"):
            assert _percent(metrics.number(name))
        assert metrics.number("cores") >= 1
        assert isinstance(metrics.values["model"], str)
        assert min(metrics.number(n) for n in ("user", "system", "idle")) >= 0
        _round_trips(metrics)


async def test_real_memory_is_sane() -> None:
    """Used and available memory fit in the total; swap used fits in swap total."""
    metrics = await MemoryCollector().collect()
    total = metrics.number("total")
    assert total > 0
    assert 0 <= metrics.number("used") <= total
    assert 0 <= metrics.number("available") <= total
    assert _percent(metrics.number("used_percent"))
    assert 0 <= metrics.number("swap_used") <= metrics.number("swap_total") or (
        metrics.number("swap_total") == 0
    )
    assert set(metrics.values) >= {
        "total", "available", "used", "used_percent", "swap_total", "swap_used",
    }  # fmt: skip
    _round_trips(metrics)


async def test_real_disks_are_sane() -> None:
    """Every real file system fits in its total, and IO counters are found by kernel name."""
    collector = DiskCollector()
    await collector.collect()
    metrics = await collector.collect()
    disks = metrics.table("disks")
    assert disks.key == "mountpoint"
    assert disks.rows, "this machine has at least one real file system"
    for mountpoint, row in disks.rows.items():
        assert mountpoint.startswith("/")
        assert isinstance(row["device"], str)
        assert isinstance(row["fstype"], str)
        assert row["fstype"] not in {"proc", "sysfs", "tmpfs", "cgroup", "squashfs"}
        total, used, free = (float(row[k]) for k in ("total", "used", "free"))
        assert 0 <= used <= total
        assert 0 <= free <= total
        assert _percent(float(row["used_percent"]))
        if "read_bytes" in row:
            assert float(row["read_bytes"]) >= 0
            assert float(row["write_bytes"]) >= 0
            assert float(row["read_bytes_per_s"]) >= 0
    # Where the kernel has counters for a mounted device, the collector must find them.
    probe = PsutilProbe()
    io = probe.disk_io()
    for partition in select_partitions(probe.partitions(all_partitions=False), ()):
        if any(name in io for name in probe.kernel_names(partition)):
            assert "read_bytes" in disks.rows[partition.mountpoint]
    _round_trips(metrics)


async def test_real_network_is_sane() -> None:
    """Every interface reports the seed's counters; rates appear on the second run."""
    collector = NetworkCollector()
    await collector.collect()
    metrics = await collector.collect()
    interfaces = metrics.table("interfaces")
    assert interfaces.key == "interface"
    assert interfaces.rows
    for row in interfaces.rows.values():
        for name in ("bytes_sent", "bytes_recv", "packets_sent", "packets_recv"):
            assert float(row[name]) >= 0
            assert float(row[f"{name}_per_s"]) >= 0
        for name in ("errin", "errout", "dropin", "dropout"):
            assert float(row[name]) >= 0
    _round_trips(metrics)


async def test_real_filters() -> None:
    """The interface and mount point filters keep only what is listed."""
    network = await NetworkCollector(interfaces=("lo", "no-such-nic")).collect()
    assert set(network.table("interfaces").rows) <= {"lo"}
    disk = await DiskCollector(mount_points=("/", "/proc")).collect()
    rows = disk.table("disks").rows
    assert set(rows) == {"/", "/proc"}  # asked for by name: pseudo file systems too
    assert rows["/proc"]["fstype"] == "proc"


# --- fed by a fake probe ------------------------------------------------------------------


async def test_network_rates_from_counter_sequences(autojump_clock: trio.testing.MockClock) -> None:
    """Rates are deltas over monotonic time, and a counter reset never makes them negative."""
    probe = FakeProbe(
        nets=[
            {"eth0": net(bytes_recv=1_000, packets_recv=10)},
            {"eth0": net(bytes_recv=6_000, packets_recv=30)},
            {"eth0": net(bytes_recv=500, packets_recv=5)},  # the interface was re-created
            {"eth1": net(bytes_recv=1)},  # eth0 went away
            {"eth0": net(bytes_recv=900), "eth1": net(bytes_recv=11)},
        ]
    )
    collector = NetworkCollector(10.0, probe=probe)
    seen = []
    for _ in range(5):
        seen.append((await collector.collect()).table("interfaces").rows)
        await trio.sleep(10)
    assert "bytes_recv_per_s" not in seen[0]["eth0"]
    assert seen[1]["eth0"]["bytes_recv_per_s"] == 500.0
    assert seen[1]["eth0"]["packets_recv_per_s"] == 2.0
    assert seen[2]["eth0"]["bytes_recv_per_s"] == 50.0  # 500 counted since the reset
    assert "eth0" not in seen[3]
    assert "bytes_recv_per_s" not in seen[4]["eth0"]  # forgotten, so a fresh start
    assert seen[4]["eth1"]["bytes_recv_per_s"] == 1.0


async def test_cpu_usage_between_collections() -> None:
    """The first figure is since boot; later ones cover only the time since the last."""
    probe = FakeProbe(
        cpu=[CpuTimes(user=10, idle=90), CpuTimes(user=70, idle=130), CpuTimes(user=70, idle=230)]
    )
    collector = CpuCollector(probe=probe)
    usage = [(await collector.collect()).number("usage_percent") for _ in range(3)]
    assert usage == [pytest.approx(10.0), pytest.approx(60.0), pytest.approx(0.0)]


def _part(device: str, mountpoint: str, fstype: str = "ext4") -> Partition:
    return Partition(device=device, mountpoint=mountpoint, fstype=fstype)


async def test_disk_io_is_matched_by_kernel_name(autojump_clock: trio.testing.MockClock) -> None:
    """Counters are found under the kernel's name (dm-0), not the mount table's path."""
    usage = DiskUsage(total=100, used=40, free=60, used_percent=40.0)
    probe = FakeProbe(
        mounts=[
            _part("/dev/mapper/root", "/"),
            _part("/dev/sdb1", "/data"),
            _part("tmpfs", "/run", "tmpfs"),
            _part("/dev/sdc1", "/gone"),
            _part("server:/x", "/nfs", "nfs4"),
        ],
        usage={"/": usage, "/data": usage, "/run": usage, "/nfs": usage},
        names={"/dev/mapper/root": ["dm-0"], "/dev/sdb1": ["sdb1", "sdb"]},
        io=[
            {"dm-0": DiskIo(1_000, 2_000, 1, 1), "sdb1": DiskIo(0, 0, 0, 0)},
            {"dm-0": DiskIo(5_000, 2_000, 2, 1), "sdb1": DiskIo(0, 0, 0, 0)},
        ],
    )
    collector = DiskCollector(probe=probe)
    await collector.collect()
    await trio.sleep(4)
    rows = (await collector.collect()).table("disks").rows
    assert set(rows) == {"/", "/data", "/nfs"}  # tmpfs skipped; /gone's usage unreadable
    assert rows["/"]["device"] == "/dev/mapper/root"
    assert rows["/"]["read_bytes"] == 5_000.0
    assert rows["/"]["read_bytes_per_s"] == 1_000.0
    assert rows["/"]["write_bytes_per_s"] == 0.0
    assert "read_bytes" in rows["/data"]
    assert "read_bytes" not in rows["/nfs"]  # no block device: no IO fields at all


def test_partition_selection() -> None:
    """Pseudo file systems are skipped unless named; an over-mount keeps the visible entry."""
    parts = [
        _part("/dev/a", "/"),
        _part("tmpfs", "/dev/shm", "tmpfs"),
        _part("/dev/loop0", "/snap/x", "squashfs"),
        _part("/dev/b", "/mnt"),
        _part("/dev/c", "/mnt"),
    ]
    assert select_partitions(parts, ()) == [parts[0], parts[4]]
    assert select_partitions(parts, {"/dev/shm", "/mnt"}) == [parts[1], parts[4]]


def test_builtin_collectors_follow_the_config() -> None:
    """Disabled collectors are left out; intervals and filters come from the config."""
    config = CollectorsConfig(disk=DiskConfig(interval_s=5, mount_points=("/",)))
    chosen = builtin_collectors(config, probe=FakeProbe())
    assert [c.name for c in chosen] == ["cpu", "memory", "disk", "network"]
    disk = chosen[2]
    assert isinstance(disk, DiskCollector)
    assert disk.interval_s == 5.0
    assert disk.mount_points == {"/"}
    none = CollectorsConfig(
        cpu=config.cpu.__class__(enabled=False),
        memory=config.memory.__class__(enabled=False),
        disk=DiskConfig(enabled=False),
        network=config.network.__class__(enabled=False),
    )
    assert builtin_collectors(none) == []


@pytest.mark.parametrize(
    ("text", "model"),
    [
        ("processor\t: 0\nmodel name\t: AMD EPYC 7B13\n", "AMD EPYC 7B13"),
        ("processor\t: 0\nBogoMIPS\t: 50.00\nHardware\t: BCM2835\n", "BCM2835"),
        ("processor\t: 0\ncpu\t\t: POWER9 (raw)\n", "POWER9 (raw)"),
        (
            "Processor\t: ARMv7 Processor rev 4 (v7l)\nprocessor\t: 0\n",
            "ARMv7 Processor rev 4 (v7l)",
        ),
        ("", ""),
    ],
)
def test_cpu_model_parsing(text: str, model: str) -> None:
    """The model comes from the best /proc/cpuinfo key present on each architecture."""
    assert parse_cpu_model(text) == model


def test_memory_without_a_total_has_zero_percent() -> None:
    """A zero total cannot divide: used_percent is 0 rather than an error."""
    from collectors import MemorySample
    from collectors._build import memory_metrics

    sample = MemorySample(
        total=0, available=0, used=0, cached=None, buffers=None, swap_total=0, swap_used=0
    )
    metrics = memory_metrics(sample, timestamp=1.0)
    assert metrics.number("used_percent") == 0.0
    assert "cached" not in metrics.values
    assert not math.isnan(metrics.number("used_percent"))
