"""The daemon's gRPC server: what it costs beside the supervision core, and how fast it answers.

Run with the project's interpreter::

    .venv/bin/python benchmarks/bench_grpc.py [--n 10,300] [--calls 2000] [--idle 10]
    .venv/bin/python benchmarks/bench_grpc.py --quick     # N=10,300; 300 calls; idle 3 s

For each N, ``hostvisor run`` supervises N agents (the workload of ``bench_core.py``: tiny
shell children, ``_core_workload.py``) twice, one run after the other:

* **core**: ``daemon.grpc_port: 0`` and ``daemon.control_socket: false``: no listener; grpc
  and trio-asyncio are never imported;
* **grpc**: the TCP listener on 127.0.0.1 (no TLS) and the control socket, as shipped.

Measured per run, once every agent has started and ``SETTLE_S`` passed: the daemon's RSS
(psutil) and its thread count; idle CPU over ``--idle`` seconds; and, for the grpc
run, ``ListAgents`` latency: ``--calls`` sequential calls (after 50 warm-up calls) from a
client in this process (grpcio's synchronous stub: the client's own overhead stays out of
the daemon) over TCP and over the control socket, median, p99 (nearest rank) and calls per
second, plus the daemon's CPU per call and its RSS after the calls. Also, in fresh
interpreters, the RSS of what each variant imports (``import transport.daemon`` vs. that
plus the gRPC server's modules) to say where the difference comes from.

Prints RSS side by side (core, grpc, grpc - core, grpc/core) and the latency table, and
writes everything to ``benchmarks/results/grpc.json``. Every process of a run carries the
run's marker and is killed by PID at the end; none may be left.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil
import yaml
from _core_workload import agent_ids, ours_document
from bench_core import (
    SETTLE_S,
    cpu_seconds,
    launch,
    percentile,
    run_quiet,
    settle,
    stop,
    tail,
    wait_started,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "grpc.json"
MIB = 1024 * 1024
WARMUP_CALLS = 50
SERVING_TIMEOUT_S = 60.0
TARGET_RSS_MIB = 40.0  # issue 11: the whole daemon with gRPC at N=10


@dataclass
class Run:
    """One daemon run."""

    variant: str
    n: int
    rss_bytes: int | None = None
    threads: int | None = None
    idle_cpu_pct: float | None = None
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    cpu_ms_per_call: dict[str, float] = field(default_factory=dict)
    rss_after_calls_bytes: int | None = None
    exit_code: int | None = None
    leaked: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stderr_tail: list[str] = field(default_factory=list)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def configure(root: Path, starts: Path, n: int, marker: str, grpc: bool) -> tuple[list[str], int]:
    """Write the run's daemon.yaml; return the command line and the gRPC port (0: none)."""
    document = ours_document(str(root / "work"), str(starts), n, marker)
    port = free_port() if grpc else 0
    document["daemon"].update(grpc_port=port, control_socket=grpc)
    config = root / "daemon.yaml"
    config.write_text(yaml.safe_dump(document, sort_keys=False))
    run_quiet([sys.executable, "-m", "transport.daemon", "check-config", str(config)])
    return [sys.executable, "-m", "transport.daemon", "run", "--config", str(config)], port


def wait_serving(root: Path, port: int) -> None:
    """Until the daemon's log says both listeners serve."""
    deadline = time.monotonic() + SERVING_TIMEOUT_S
    log = root / "supervisor.stderr"
    while True:
        text = log.read_text(errors="replace") if log.exists() else ""
        if f"serving on 127.0.0.1:{port}" in text and "serving the command line" in text:
            return
        if time.monotonic() > deadline:
            raise RuntimeError("the gRPC listeners did not come up")
        time.sleep(0.05)


def list_agents_latency(
    target: str, calls: int, daemon: psutil.Process, n: int
) -> tuple[dict[str, float], float]:
    """Sequential ListAgents calls: latency figures (ms) and the daemon's CPU ms per call."""
    import grpc

    from transport._pb import daemon_pb2

    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(
            "/proto.DaemonService/ListAgents",
            request_serializer=daemon_pb2.ListAgentsRequest.SerializeToString,
            response_deserializer=daemon_pb2.ListAgentsResponse.FromString,
        )
        request = daemon_pb2.ListAgentsRequest()
        for _ in range(WARMUP_CALLS):
            reply = call(request, timeout=30)
        if len(reply.agents) != n:
            raise RuntimeError(f"ListAgents answered {len(reply.agents)} agents, not {n}")
        samples: list[float] = []
        cpu0, t0 = cpu_seconds(daemon), time.perf_counter()
        for _ in range(calls):
            start = time.perf_counter()
            call(request, timeout=30)
            samples.append(time.perf_counter() - start)
        elapsed, cpu = time.perf_counter() - t0, cpu_seconds(daemon) - cpu0
    figures = {
        "p50": 1000 * percentile(samples, 0.50),
        "p99": 1000 * percentile(samples, 0.99),
        "max": 1000 * max(samples),
        "mean": 1000 * statistics.fmean(samples),
        "calls_per_s": calls / elapsed,
        "response_bytes": float(reply.ByteSize()),
    }
    return figures, 1000 * cpu / calls


def run_one(variant: str, n: int, calls: int, idle_s: float) -> Run:
    result = Run(variant=variant, n=n)
    root = Path(tempfile.mkdtemp(prefix=f"hvgrpc-{variant}-{n}-", dir="/tmp"))
    marker = root.name
    starts = root / "starts"
    starts.mkdir()
    argv, port = configure(root, starts, n, marker, grpc=variant == "grpc")
    proc, launched = launch(root, argv)
    try:
        first = wait_started(starts, agent_ids(n), proc)
        settle(first, launched, SETTLE_S)
        if port:
            wait_serving(root, port)
        daemon = psutil.Process(proc.pid)
        result.rss_bytes = int(daemon.memory_info().rss)
        result.threads = int(daemon.num_threads())
        cpu0, t0 = cpu_seconds(daemon), time.monotonic()
        time.sleep(idle_s)
        result.idle_cpu_pct = 100 * (cpu_seconds(daemon) - cpu0) / (time.monotonic() - t0)
        if port:
            socket = root / "work" / "control" / "hostvisor.sock"
            for name, target in (("tcp", f"127.0.0.1:{port}"), ("unix", f"unix:{socket}")):
                figures, cpu_ms = list_agents_latency(target, calls, daemon, n)
                result.latency_ms[name] = figures
                result.cpu_ms_per_call[name] = cpu_ms
            result.rss_after_calls_bytes = int(daemon.memory_info().rss)
    except Exception as exc:
        result.errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        result.exit_code, _, errors, result.leaked = stop(proc, marker)
        result.errors += errors
        if result.errors or result.leaked or result.exit_code:
            result.stderr_tail = tail(root / "supervisor.stderr")
        shutil.rmtree(root, ignore_errors=True)
    return result


def import_costs() -> dict[str, int]:
    """RSS (bytes) of fresh interpreters after what each variant imports (median of 3)."""
    read = (
        "import re\n"
        "print(re.search(r'VmRSS:\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n"
    )
    figures = {}
    for label, prefix in (
        ("daemon_core", "import transport.daemon, yaml\n"),
        ("plus_protobuf_messages", "import transport.daemon, yaml, transport._convert\n"),
        ("plus_grpc", "import transport.daemon, yaml, transport._convert, grpc, grpc.aio\n"),
        ("plus_grpc_server", "import transport.daemon, yaml, transport.daemon._server\n"),
    ):
        runs = [int(run_quiet([sys.executable, "-c", prefix + read])) * 1024 for _ in range(3)]
        figures[label] = int(statistics.median(runs))
    return figures


def mib(value: int | None) -> str:
    return "-" if value is None else f"{value / MIB:.1f}"


def report(runs: list[Run], imports: dict[str, int]) -> None:
    by = {(r.variant, r.n): r for r in runs}
    print("\nDaemon RSS with the gRPC server beside the supervision core alone (MiB)")
    print(f"{'N':>5}  {'core':>7}  {'grpc':>7}  {'grpc-core':>9}  {'grpc/core':>9}")
    for n in sorted({r.n for r in runs}):
        core, grpc_run = by.get(("core", n)), by.get(("grpc", n))
        if core is None or grpc_run is None or not core.rss_bytes or not grpc_run.rss_bytes:
            continue
        ratio = grpc_run.rss_bytes / core.rss_bytes
        delta = grpc_run.rss_bytes - core.rss_bytes
        print(
            f"{n:>5}  {mib(core.rss_bytes):>7}  {mib(grpc_run.rss_bytes):>7}  {mib(delta):>9}"
            f"  {ratio:>9.2f}"
        )
    small = by.get(("grpc", 10))
    if small is not None and small.rss_bytes:
        verdict = "within" if small.rss_bytes / MIB <= TARGET_RSS_MIB else "OVER"
        print(f"target: whole daemon with gRPC at N=10 <= {TARGET_RSS_MIB:.0f} MiB: {verdict}")
    print("\nListAgents latency (ms), sequential calls, 127.0.0.1 and the control socket")
    header = ("N", "via", "p50", "p99", "max", "calls/s", "CPU ms/call")
    widths = (5, 4, 6, 6, 6, 8, 11)
    print("  ".join(f"{h:>{w}}" for h, w in zip(header, widths, strict=True)))
    for r in runs:
        for via, figures in r.latency_ms.items():
            print(
                f"{r.n:>5}  {via:>4}  {figures['p50']:>6.2f}  {figures['p99']:>6.2f}"
                f"  {figures['max']:>6.2f}  {figures['calls_per_s']:>8.0f}"
                f"  {r.cpu_ms_per_call[via]:>11.2f}"
            )
    print("\nIdle CPU (% of one core) and threads")
    for r in runs:
        print(f"{r.variant:>5} N={r.n:<4} idle {r.idle_cpu_pct or 0:.2f} %  threads {r.threads}")
    print("\nRSS of fresh interpreters after the imports (MiB)")
    for label, value in imports.items():
        print(f"  {label:<24} {mib(value)}")
    for r in runs:
        if r.errors or r.leaked or r.exit_code:
            print(
                f"\n{r.variant} N={r.n}: exit {r.exit_code}, errors {r.errors}, leaked {r.leaked}"
            )
            print("\n".join(r.stderr_tail))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", default="10,300", help="agent counts, comma-separated")
    parser.add_argument("--calls", type=int, default=2000, help="ListAgents calls per listener")
    parser.add_argument("--idle", type=float, default=10.0, help="idle CPU window, seconds")
    parser.add_argument("--quick", action="store_true", help="300 calls, idle 3 s")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.calls, args.idle = 300, 3.0
    counts = [int(part) for part in args.n.split(",")]
    runs: list[Run] = []
    for n in counts:
        for variant in ("core", "grpc"):
            print(f"running {variant} with N={n} ...", flush=True)
            runs.append(run_one(variant, n, args.calls, args.idle))
    imports = import_costs()
    report(runs, imports)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "runs": [asdict(r) for r in runs],
                "imports_rss_bytes": imports,
                "python": sys.version,
                "machine": platform.platform(),
                "cpus": os.cpu_count(),
                "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
            indent=2,
        )
    )
    print(f"\nwritten to {args.output}")
    failed = any(r.errors or r.leaked or r.exit_code for r in runs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
