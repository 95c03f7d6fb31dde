"""How long one full collection takes, and what collecting every 60 s costs in CPU.

Run with the project's interpreter::

    .venv/bin/python benchmarks/bench_collectors.py [--quick]

It prints three tables:

1. Latency of one full collection of cpu, memory, disk and network (median, p95), ours
   (``CollectorManager.collect_once``: worker threads, Trio, Metrics built and validated)
   beside the seed's method reproduced with psutil: the same reads done sequentially on
   the caller's thread with ``cpu_percent(interval=1)``, the blocking one-second sample of
   the seed's ``cpu.Percent(time.Second, false)``. The seed's method is also shown without
   its sleep, to separate the sleep from the work. Seed target: < 500 ms; ours: < 20 ms.
2. The conversion of the four results to the Manager's ``MetricData``.
3. CPU cost: a real ``CollectorManager.run()`` on the seed's 60 s intervals for one
   simulated hour (a ``MockClock`` running 360 times faster than real time), measured in
   process CPU seconds (all threads), per collection and as percent of one core.

Finishes in well under a minute (``--quick`` in a few seconds).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import psutil
import trio
import trio.testing

from collectors import CollectorManager, CollectorsConfig, Metrics, to_metric_data


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def _row(label: str, samples_s: list[float]) -> tuple[str, float, float, int]:
    return (
        label,
        statistics.median(samples_s) * 1e3,
        _percentile(samples_s, 0.95) * 1e3,
        len(samples_s),
    )


# --- the seed's method, with psutil ----------------------------------------------------


def seed_collection(*, cpu_interval: float | None) -> dict[str, object]:
    """The seed's four Collect() bodies (004 sections 3.2.2-3.2.5), one after the other."""
    percent = psutil.cpu_percent(interval=cpu_interval)  # cpu.Percent(time.Second, false)
    with open("/proc/cpuinfo", encoding="utf-8") as file:  # cpu.Info() parses this file
        info = file.read()
    times = psutil.cpu_times()
    cpu = {"usage_percent": percent, "cores": psutil.cpu_count(), "model": len(info), "t": times}
    vm, swap = psutil.virtual_memory(), psutil.swap_memory()
    memory = {"total": vm.total, "used": vm.used, "swap_total": swap.total}
    disks = []
    for partition in psutil.disk_partitions(all=False):
        usage = psutil.disk_usage(partition.mountpoint)
        io = psutil.disk_io_counters(perdisk=True)  # once per partition, as the seed does
        disks.append((partition.mountpoint, usage.total, io.get(partition.device)))
    network = psutil.net_io_counters(pernic=True)
    return {"cpu": cpu, "memory": memory, "disk": disks, "network": network}


def time_calls(call: Callable[[], object], count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


# --- ours ------------------------------------------------------------------------------


async def time_ours(count: int, warmup: int) -> tuple[list[float], list[float], list[float]]:
    """Latency and process CPU of collect_once(); latency of the MetricData conversion."""
    manager = CollectorManager.from_config(CollectorsConfig())
    for _ in range(warmup):  # thread cache, first-sample CPU baseline, imports
        await manager.collect_once()
    wall: list[float] = []
    cpu: list[float] = []
    convert: list[float] = []
    for _ in range(count):
        started, cpu_started = time.perf_counter(), time.process_time()
        results = await manager.collect_once()
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
        assert set(results) == {"cpu", "memory", "disk", "network"}, results.keys()
        started = time.perf_counter()
        for metrics in results.values():
            to_metric_data(metrics)
        convert.append(time.perf_counter() - started)
    return wall, cpu, convert


async def simulated_hour(speedup: float) -> tuple[float, int, dict[str, tuple[int, int]]]:
    """Run the real manager for one virtual hour; return CPU seconds, wake-ups, outcomes."""
    manager = CollectorManager.from_config(CollectorsConfig(), timeout_s=48.0)
    seen: list[Metrics] = []
    cpu_started = time.process_time()
    async with trio.open_nursery() as nursery:
        with manager.subscribe(max_buffer_size=1024) as results:
            await nursery.start(manager.run)
            await trio.sleep(3600 - 1)  # ticks at 0, 60, ..., 3540 s: 60 collections each
            nursery.cancel_scope.cancel()
            while True:
                try:
                    seen.append(results.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
    cpu_s = time.process_time() - cpu_started
    stats = manager.statistics()
    outcomes = {n: (s.successes, s.failures + s.timeouts) for n, s in stats.collectors.items()}
    return cpu_s, stats.wakeups, outcomes


# --- report ----------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples (a few seconds)")
    args = parser.parse_args()
    ours_n, seed_n = (50, 2) if args.quick else (300, 5)

    print(f"host: {os.cpu_count()} CPUs, psutil {psutil.__version__}, trio {trio.__version__}")
    wall, cpu, convert = trio.run(time_ours, ours_n, 10)
    seed = time_calls(lambda: seed_collection(cpu_interval=1.0), seed_n)
    seed_work = time_calls(lambda: seed_collection(cpu_interval=None), ours_n)

    rows = [
        _row("ours: CollectorManager.collect_once()", wall),
        _row("seed's method: cpu_percent(interval=1), sequential", seed),
        _row("seed's method without its 1 s sleep", seed_work),
    ]
    ours_median = rows[0][1]
    print("\n1. One full collection of cpu + memory + disk + network")
    print(f"{'method':<52} {'median ms':>10} {'p95 ms':>9} {'n':>5} {'vs ours':>9}")
    for label, median, p95, n in rows:
        print(f"{label:<52} {median:>10.2f} {p95:>9.2f} {n:>5} {median / ours_median:>8.1f}x")
    verdict = "PASS" if ours_median < 20 else "FAIL"
    print(f"target: ours < 20 ms median ({verdict}); seed's target < 500 ms")

    print("\n2. Conversion of the four results to MetricData")
    label, median, p95, n = _row("to_metric_data() x 4", convert)
    print(f"{label:<52} {median:>10.3f} {p95:>9.3f} {n:>5}")

    speedup = 360.0
    clock = trio.testing.MockClock(rate=speedup)
    started = time.perf_counter()
    cpu_s, wakeups, outcomes = trio.run(simulated_hour, speedup, clock=clock)
    real_s = time.perf_counter() - started
    collections = min(successes + failures for successes, failures in outcomes.values())
    per_collection = cpu_s / max(1, collections)
    print("\n3. CPU cost of collecting every 60 s")
    print(f"simulated hour: {real_s:.1f} s real, {wakeups} wake-ups, outcomes (ok, failed):")
    print("  " + ", ".join(f"{n} {ok}/{bad}" for n, (ok, bad) in outcomes.items()))
    seed_cpu = []
    for _ in range(ours_n):
        cpu_started = time.process_time()
        seed_collection(cpu_interval=None)
        seed_cpu.append(time.process_time() - cpu_started)
    ms = "{:.2f} ms".format
    figures = [
        ("process CPU over the simulated hour", ms(cpu_s * 1e3)),
        ("CPU per full collection (simulated hour, mean)", ms(per_collection * 1e3)),
        ("CPU per full collection (collect_once, median)", ms(statistics.median(cpu) * 1e3)),
        ("=> percent of one core at a 60 s interval", f"{per_collection / 60 * 100:.4f} %"),
        (
            "seed's method CPU per collection (no sleep, median)",
            ms(statistics.median(seed_cpu) * 1e3),
        ),
    ]
    print(f"{'measure':<52} {'value':>12}")
    for label, value in figures:
        print(f"{label:<52} {value:>12}")


if __name__ == "__main__":
    main()
