"""A fleet of simulated daemons talking to a Manager over real gRPC, from one process.

Run with the project's interpreter (``bench_manager.py`` runs it this way, one process or
several, each a shard of the fleet)::

    .venv/bin/python benchmarks/fleet_sim.py --target 127.0.0.1:9090 --nodes 1000 \
        --duration 60 [--compression 1] [--first 0 --total 1000] [--json OUT]

or import it: ``simulate(FleetConfig(...)) -> FleetResult`` (blocking; it runs its own
asyncio loop, so a Trio program calls it through ``trio.to_thread.run_sync``).

What each simulated daemon sends is what the original daemon sends (notes §1 and the
recorded traffic): ``RegisterNode`` once, then ``Heartbeat`` and ``ReportMetrics`` (one
``MetricData`` each for cpu, memory, disk and network, with the original's value keys)
every ``heartbeat_s`` (60 s), and a full ``SyncAgentStates`` (``agents`` states) every
``sync_s`` (30 s). Each node has its own channel, i.e. its own TCP connection, as real
daemons do (``channels`` shares fewer among the nodes).

Theory of operation. Time is real seconds from ``t0`` (``start_at``, or when the loop
starts), divided by ``compression``: with compression 60 a minute's traffic takes one
second. Node ``g`` of a fleet of ``total`` registers at ``ramp * g / total`` (``ramp`` is
one heartbeat interval), so registrations, heartbeat phases and sync phases are spread
evenly; it then heartbeats and reports at ``register + k * heartbeat`` (k >= 1) and syncs
at ``register + sync / 2 + k * sync`` (k >= 0). From ``ramp`` on, every interval carries
the steady load; the measured window is ``[ramp + settle_s, ramp + settle_s +
duration_s)``, and nothing due at or after its end is sent; a simulator still behind
schedule at the window's end (the server is too slow) stops there and counts what it
never sent (``unsent``) once it is a second past it. :func:`node_events` is the
one source of these times: the scheduler and :func:`plan` (the exact counts a run must
send, for tests) both walk it. One scheduler task pops the next due event from a heap,
sleeps until it is due, waits for a free slot (at most ``concurrency`` calls in flight)
and starts the call as a task; how late a call starts (``lag``) is recorded, so a
simulator that cannot keep up shows it rather than hiding it in the latencies. A call's
latency runs from its start to its answer; calls are counted in the window by their due
time. Metric timestamps are ``start wall time + elapsed * compression`` (real time when
not compressed), so every report of a node has its own timestamp.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import heapq
import json
import math
import resource
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import Message

from transport._pb import daemon_pb2, manager_pb2
from transport._pb._methods import UnaryMethod
from transport._pb.daemon_rpc import DaemonService
from transport._pb.manager_rpc import ManagerService

REGISTER = "RegisterNode"
HEARTBEAT = "Heartbeat"
METRICS = "ReportMetrics"
SYNC = "SyncAgentStates"
METHODS = (REGISTER, HEARTBEAT, METRICS, SYNC)
REGISTER_METADATA = ("hostvisor-register", "1")
"""Trailing metadata of a heartbeat that asks the daemon to register again."""

_RPC: dict[str, UnaryMethod[Any, Any]] = {
    REGISTER: ManagerService.RegisterNode,
    HEARTBEAT: ManagerService.Heartbeat,
    METRICS: ManagerService.ReportMetrics,
    SYNC: DaemonService.SyncAgentStates,
}
BEHIND_GRACE_S = 1.0
"""A simulator still this far behind schedule after the window's end stops sending."""
_AGENT_TYPES = ("telegraf", "node_exporter", "filebeat", "custom")
_GIB = 1024**3


@dataclass(frozen=True)
class FleetConfig:
    """One simulator's share of a fleet.

    Attributes:
        target: The Manager's gRPC address, ``host:port``.
        nodes: How many nodes this simulator runs: ``first .. first + nodes - 1``.
        first: The global index of its first node (several simulators, one fleet).
        total: The fleet's size, over which phases are spread (0: ``nodes``).
        duration_s: The measured window, real seconds.
        heartbeat_s: Heartbeat and metrics interval, simulated seconds.
        sync_s: SyncAgentStates interval, simulated seconds.
        agents: Agent states per sync.
        compression: Simulated seconds per real second.
        settle_s: Real seconds between the end of the ramp and the window.
        concurrency: Calls in flight at most.
        channels: gRPC channels (connections) shared by the nodes (0: one per node).
        timeout_s: Each call's deadline.
        prefix: Node ids are ``{prefix}-{index:06d}``.
        start_at: Wall-clock time (``time.time()``) of ``t0``; None: when it starts.
    """

    target: str
    nodes: int
    first: int = 0
    total: int = 0
    duration_s: float = 60.0
    heartbeat_s: float = 60.0
    sync_s: float = 30.0
    agents: int = 3
    compression: float = 1.0
    settle_s: float = 0.0
    concurrency: int = 256
    channels: int = 0
    timeout_s: float = 10.0
    prefix: str = "sim"
    start_at: float | None = None

    @property
    def fleet(self) -> int:
        """The fleet's size."""
        return self.total or self.nodes

    @property
    def ramp_s(self) -> float:
        """Real seconds over which the fleet registers (one heartbeat interval)."""
        return self.heartbeat_s / self.compression

    @property
    def window(self) -> tuple[float, float]:
        """The measured window, real seconds after ``t0``."""
        start = self.ramp_s + self.settle_s
        return start, start + self.duration_s


@dataclass
class FleetResult:
    """What a simulator saw; :func:`merge` adds up several.

    Attributes:
        nodes: Nodes simulated.
        window_s: The window's length (real seconds).
        sent: Calls started, per method (whole run).
        ok: Calls answered OK, per method (whole run).
        failures: Failed calls per method and status code name (whole run).
        latency: Latencies (s) of OK calls due in the window, per method; RegisterNode's
            over the ramp (every registration happens there).
        lag: How late calls due in the window started (s), failed ones too.
        register_requests: Heartbeats answered with the "register again" metadata.
        unsent: Calls due before the window's end never started, per method: the
            simulator was still behind schedule (no free slot: the server too slow) when
            the window ended.
        cpu_s: This process's CPU time (user + system) over the window.
        peak_in_flight: The most calls in flight at once.
    """

    nodes: int = 0
    window_s: float = 0.0
    sent: dict[str, int] = field(default_factory=lambda: dict.fromkeys(METHODS, 0))
    ok: dict[str, int] = field(default_factory=lambda: dict.fromkeys(METHODS, 0))
    failures: dict[str, dict[str, int]] = field(default_factory=dict)
    latency: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in METHODS})
    lag: list[float] = field(default_factory=list)
    register_requests: int = 0
    unsent: dict[str, int] = field(default_factory=lambda: dict.fromkeys(METHODS, 0))
    cpu_s: float = 0.0
    peak_in_flight: int = 0

    def failed(self) -> int:
        """All failed calls."""
        return sum(sum(codes.values()) for codes in self.failures.values())


def node_id(config: FleetConfig, index: int) -> str:
    """The node id of global node ``index``."""
    return f"{config.prefix}-{index:06d}"


def node_events(config: FleetConfig, index: int) -> Iterator[tuple[float, str, int]]:
    """The calls of global node ``index``: (due, method, tick), due ascending, up to the
    window's end (exclusive). Heartbeat and ReportMetrics share a due time.

    Args:
        config: The fleet.
        index: The node's global index.

    Yields:
        (real seconds after t0, method, the tick: k-th heartbeat or sync of the node).
    """
    end = config.window[1]
    beat, sync = config.heartbeat_s / config.compression, config.sync_s / config.compression
    registered = config.ramp_s * index / config.fleet
    if registered >= end:
        return
    yield registered, REGISTER, 0
    next_beat, next_sync, k_beat, k_sync = registered + beat, registered + sync / 2, 1, 0
    while min(next_beat, next_sync) < end:
        if next_sync < next_beat:
            yield next_sync, SYNC, k_sync
            k_sync += 1
            next_sync = registered + sync / 2 + k_sync * sync
        else:
            yield next_beat, HEARTBEAT, k_beat
            yield next_beat, METRICS, k_beat
            k_beat += 1
            next_beat = registered + k_beat * beat


def plan(config: FleetConfig) -> dict[str, int]:
    """How many calls of each method a run of ``config`` sends, all of them answered.

    Args:
        config: The simulator's share of the fleet.

    Returns:
        Calls per method.
    """
    counts = dict.fromkeys(METHODS, 0)
    for index in range(config.first, config.first + config.nodes):
        for _, method, _ in node_events(config, index):
            counts[method] += 1
    return counts


# --------------------------------------------------------------------------- requests


def register_request(config: FleetConfig, index: int) -> manager_pb2.RegisterNodeRequest:
    """Node ``index``'s RegisterNode, as the original daemon fills it."""
    return manager_pb2.RegisterNodeRequest(
        node_id=node_id(config, index),
        hostname=f"sim-host-{index}",
        ip=f"10.{(index >> 16) & 255}.{(index >> 8) & 255}.{index & 255}",
        os="linux",
        arch="amd64",
        labels={"fleet": config.prefix, "rack": f"r{index % 40}"},
        daemon_version="sim",
        agent_version="",
    )


def metrics_request(
    config: FleetConfig, index: int, tick: int, timestamp: int
) -> manager_pb2.ReportMetricsRequest:
    """Node ``index``'s ReportMetrics at ``tick``: cpu, memory, disk, network with the
    original daemon's value keys (values vary by node and tick)."""
    wave = 0.5 + 0.5 * math.sin(index * 0.7 + tick * 0.3)
    seconds = float(tick * config.heartbeat_s)
    total, used = 16 * _GIB, (2 + 10 * wave) * _GIB
    free = total - used
    disk_total, disk_used = 256 * _GIB, (40 + index % 100) * _GIB
    sent, received = 1e9 + index * 1e6 + tick * 5e6, 2e9 + index * 1e6 + tick * 9e6
    values: dict[str, dict[str, float]] = {
        "cpu": {
            "usage_percent": 5 + 80 * wave,
            "cores": 2,
            "mhz": 2596.1,
            "user": 2000 + seconds * 0.3,
            "system": 800 + seconds * 0.1,
            "idle": 30000 + seconds * 1.5,
            "iowait": 90 + seconds * 0.01,
        },
        "memory": {
            "total_bytes": total,
            "used_bytes": used,
            "free_bytes": free,
            "available_bytes": free,
            "usage_percent": 100 * used / total,
            "cached": 1.4 * _GIB,
            "buffers": 18e6,
            "swap_total": 0,
            "swap_used": 0,
            "swap_free": 0,
            "swap_percent": 0,
            "total": total,
            "available": free,
            "used": used,
            "free": free,
        },
        "disk": {
            "total_bytes": disk_total,
            "used_bytes": disk_used,
            "free_bytes": disk_total - disk_used,
            "usage_percent": 100 * disk_used / disk_total,
            "read_bytes": 5e9 + tick * 1e7,
            "write_bytes": 5.7e9 + tick * 2e7,
            "partition_count": 1,
        },
        "network": {
            "tx_bytes": 5e6 * wave,
            "rx_bytes": 9e6 * wave,
            "bytes_sent": sent,
            "bytes_recv": received,
            "packets_sent": sent / 200,
            "packets_recv": received / 350,
            "error_in": 0,
            "error_out": 0,
            "drop_in": 0,
            "drop_out": 0,
            "interface_count": 2,
            "interval_seconds": config.heartbeat_s,
        },
    }
    return manager_pb2.ReportMetricsRequest(
        node_id=node_id(config, index),
        metrics=[
            manager_pb2.MetricData(type=kind, timestamp=timestamp, values=kind_values)
            for kind, kind_values in values.items()
        ],
    )


def sync_request(
    config: FleetConfig, index: int, tick: int, timestamp: int
) -> daemon_pb2.SyncAgentStatesRequest:
    """Node ``index``'s full SyncAgentStates at ``tick``: ``agents`` states, all running
    but the last, which stops and starts again every ten syncs."""
    states = []
    for j in range(config.agents):
        running = j < config.agents - 1 or (tick // 10) % 2 == 0
        states.append(
            daemon_pb2.AgentState(
                agent_id=f"agent-{j}",
                status="running" if running else "stopped",
                pid=1000 + (index * config.agents + j) % 4_000_000 if running else 0,
                last_heartbeat=timestamp if running else 0,
                type=_AGENT_TYPES[j % len(_AGENT_TYPES)],
                version="1.0.0",
            )
        )
    return daemon_pb2.SyncAgentStatesRequest(node_id=node_id(config, index), states=states)


# --------------------------------------------------------------------------- the run


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Fleet:
    """One run: channels, the scheduler, the calls in flight and what they saw."""

    def __init__(self, config: FleetConfig, loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self.loop = loop
        self.result = FleetResult(nodes=config.nodes, window_s=config.duration_s)
        delay = 0.0 if config.start_at is None else max(0.0, config.start_at - time.time())
        self.t0 = loop.time() + delay
        self.wall0 = time.time() + delay
        self.slots = asyncio.Semaphore(config.concurrency)
        self.in_flight = 0
        self.tasks: set[asyncio.Task[None]] = set()
        options = [("grpc.use_local_subchannel_pool", 1)]  # a connection per channel
        count = config.channels or config.nodes
        self.channels = [
            grpc.aio.insecure_channel(config.target, options=options) for _ in range(count)
        ]
        self.calls = [
            {
                name: channel.unary_unary(
                    method.path,
                    request_serializer=method.request_type.SerializeToString,
                    response_deserializer=method.response_type.FromString,
                )
                for name, method in _RPC.items()
            }
            for channel in self.channels
        ]

    def request(self, index: int, method: str, tick: int, due: float) -> Message:
        timestamp = int(self.wall0 + due * self.config.compression)
        if method == REGISTER:
            return register_request(self.config, index)
        if method == HEARTBEAT:
            return manager_pb2.HeartbeatRequest(
                node_id=node_id(self.config, index), timestamp=timestamp
            )
        if method == METRICS:
            return metrics_request(self.config, index, tick, timestamp)
        return sync_request(self.config, index, tick, timestamp)

    async def run(self) -> FleetResult:
        start, end = self.config.window
        meter = self.loop.create_task(self.meter(start, end))
        try:
            await self.schedule()
            if self.tasks:
                await asyncio.wait(set(self.tasks))
            planned = plan(self.config)
            self.result.unsent = {m: planned[m] - self.result.sent[m] for m in METHODS}
            await meter
        finally:
            meter.cancel()
            for task in list(self.tasks):
                task.cancel()
            await asyncio.gather(*self.tasks, meter, return_exceptions=True)
            await asyncio.gather(*(channel.close() for channel in self.channels))
        return self.result

    async def meter(self, start: float, end: float) -> None:
        """The process's CPU over the window."""
        await asyncio.sleep(max(0.0, self.t0 + start - self.loop.time()))
        before = _cpu_s()
        await asyncio.sleep(max(0.0, self.t0 + end - self.loop.time()))
        self.result.cpu_s = _cpu_s() - before

    async def schedule(self) -> None:
        first = self.config.first
        streams = {i: node_events(self.config, i) for i in range(first, first + self.config.nodes)}
        heap: list[tuple[float, int, str, int]] = []
        for index, events in streams.items():
            for due, method, tick in events:
                heap.append((due, index, method, tick))
                break
        heapq.heapify(heap)
        end = self.t0 + self.config.window[1] + BEHIND_GRACE_S
        while heap:
            due, index, method, tick = heap[0]
            delay = self.t0 + due - self.loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif self.loop.time() >= end:
                break  # behind schedule at the window's end: the rest is never sent
            heapq.heappop(heap)
            for next_due, next_method, next_tick in streams[index]:
                heapq.heappush(heap, (next_due, index, next_method, next_tick))
                break
            await self.slots.acquire()
            task = self.loop.create_task(self.call(index, method, tick, due))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def call(self, index: int, method: str, tick: int, due: float) -> None:
        result, config = self.result, self.config
        start = self.loop.time()
        self.in_flight += 1
        result.peak_in_flight = max(result.peak_in_flight, self.in_flight)
        result.sent[method] += 1
        window_start, window_end = config.window
        in_window = window_start <= due < window_end
        if in_window:
            result.lag.append(start - (self.t0 + due))
        try:
            request = self.request(index, method, tick, due)
            call = self.calls[(index - config.first) % len(self.calls)][method](
                request, timeout=config.timeout_s
            )
            await call
            latency = self.loop.time() - start
            if method == HEARTBEAT and REGISTER_METADATA in tuple(
                await call.trailing_metadata() or ()
            ):  # grpc.aio.Metadata iterates (key, value) pairs; ``in`` would test keys
                result.register_requests += 1
        except grpc.aio.AioRpcError as exc:
            codes = result.failures.setdefault(method, {})
            codes[exc.code().name] = codes.get(exc.code().name, 0) + 1
            return
        finally:
            self.in_flight -= 1
            self.slots.release()
        result.ok[method] += 1
        if in_window or method == REGISTER:
            result.latency[method].append(latency)


async def run_fleet(config: FleetConfig) -> FleetResult:
    """Run the fleet on the running asyncio loop until the window's end, then wait for
    the calls in flight and close every channel.

    Args:
        config: The simulator's share of the fleet.

    Returns:
        What it saw.
    """
    return await _Fleet(config, asyncio.get_running_loop()).run()


def simulate(config: FleetConfig) -> FleetResult:
    """Run the fleet on a new asyncio loop (see :func:`run_fleet`); blocks until done.

    Args:
        config: The simulator's share of the fleet.

    Returns:
        What it saw.
    """
    return asyncio.run(run_fleet(config))


# --------------------------------------------------------------------------- figures


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of ``samples`` (NaN when empty)."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def merge(results: Sequence[FleetResult]) -> FleetResult:
    """Several simulators' results as one fleet's (their windows must coincide).

    Args:
        results: The shards' results.

    Returns:
        Counts and CPU added up, samples pooled, the longest window.
    """
    merged = FleetResult(window_s=max((r.window_s for r in results), default=0.0))
    for r in results:
        merged.nodes += r.nodes
        for method in METHODS:
            merged.sent[method] += r.sent.get(method, 0)
            merged.ok[method] += r.ok.get(method, 0)
            merged.latency[method] += r.latency.get(method, [])
        for method, codes in r.failures.items():
            into = merged.failures.setdefault(method, {})
            for code, count in codes.items():
                into[code] = into.get(code, 0) + count
        merged.lag += r.lag
        merged.register_requests += r.register_requests
        for method in METHODS:
            merged.unsent[method] += r.unsent.get(method, 0)
        merged.cpu_s += r.cpu_s
        merged.peak_in_flight += r.peak_in_flight
    return merged


def figures(result: FleetResult) -> dict[str, dict[str, float]]:
    """Per method and for the window's steady calls together (``steady``): calls in the
    window, calls per second, latency p50, p99 and max (ms), and failures (whole run).

    Args:
        result: A simulator's result (or a merged one).

    Returns:
        ``{method or "steady": {"calls", "per_s", "p50", "p99", "max", "failures"}}``.
    """

    def row(samples: list[float], failures: int) -> dict[str, float]:
        return {
            "calls": float(len(samples)),
            "per_s": len(samples) / result.window_s if result.window_s else math.nan,
            "p50": 1000 * percentile(samples, 0.50),
            "p99": 1000 * percentile(samples, 0.99),
            "max": 1000 * max(samples, default=math.nan),
            "failures": float(failures),
        }

    table = {
        method: row(result.latency[method], sum(result.failures.get(method, {}).values()))
        for method in METHODS
    }
    steady = [x for method in METHODS[1:] for x in result.latency[method]]
    failed = sum(sum(result.failures.get(method, {}).values()) for method in METHODS[1:])
    table["steady"] = row(steady, failed)
    return table


def to_json(result: FleetResult) -> dict[str, Any]:
    """``result`` as JSON-ready data (latencies rounded to microseconds)."""
    data = asdict(result)
    data["latency"] = {m: [round(x, 6) for x in xs] for m, xs in result.latency.items()}
    data["lag"] = [round(x, 6) for x in result.lag]
    return data


def from_json(data: dict[str, Any]) -> FleetResult:
    """The inverse of :func:`to_json`."""
    return FleetResult(**data)


def print_figures(result: FleetResult, out: Any = sys.stdout) -> None:
    """A table of :func:`figures`, the lag and the simulator's CPU."""
    print(f"{'method':<16} {'calls':>8} {'per s':>8} {'p50 ms':>8} {'p99 ms':>8}", end="", file=out)
    print(f" {'max ms':>8} {'failed':>7}", file=out)
    for name, row in figures(result).items():
        print(
            f"{name:<16} {row['calls']:>8.0f} {row['per_s']:>8.1f} {row['p50']:>8.2f}"
            f" {row['p99']:>8.2f} {row['max']:>8.2f} {row['failures']:>7.0f}",
            file=out,
        )
    lag = result.lag
    print(
        f"start lag p99 {1000 * percentile(lag, 0.99):.1f} ms, max"
        f" {1000 * max(lag, default=math.nan):.1f} ms; peak in flight {result.peak_in_flight};"
        f" simulator CPU {result.cpu_s / result.window_s if result.window_s else 0:.2f} cores;"
        f" register requests {result.register_requests}; failures {result.failures};"
        f" never sent {sum(result.unsent.values())}",
        file=out,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: run one simulator, print its figures, optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", required=True, help="the Manager's gRPC host:port")
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--first", type=int, default=0, help="global index of the first node")
    parser.add_argument("--total", type=int, default=0, help="fleet size (default: --nodes)")
    parser.add_argument("--duration", type=float, default=60.0, help="measured window, s")
    parser.add_argument("--compression", type=float, default=1.0)
    parser.add_argument("--settle", type=float, default=0.0, help="s between ramp and window")
    parser.add_argument("--agents", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--channels", type=int, default=0, help="0: one per node")
    parser.add_argument("--prefix", default="sim")
    parser.add_argument("--start-at", type=float, default=None, help="wall-clock t0")
    parser.add_argument("--json", type=Path, default=None, help="write the result here")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    config = FleetConfig(
        target=args.target,
        nodes=args.nodes,
        first=args.first,
        total=args.total,
        duration_s=args.duration,
        compression=args.compression,
        settle_s=args.settle,
        agents=args.agents,
        concurrency=args.concurrency,
        channels=args.channels,
        prefix=args.prefix,
        start_at=args.start_at,
    )
    # Fewer, shorter collections: the fleet's objects live for the whole run, and a full
    # collection over them stalls every call in flight (the simulator's jitter would be
    # counted as the Manager's latency).
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    result = simulate(config)
    if args.json is not None:
        args.json.write_text(json.dumps(to_json(result)))
    if not args.quiet:
        print_figures(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
