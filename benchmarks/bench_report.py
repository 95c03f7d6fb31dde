"""The daemon's Manager client: report latency, and what the client costs the daemon.

Run with the project's interpreter::

    .venv/bin/python benchmarks/bench_report.py [--n 10,300] [--reports 300] [--idle 60]
    .venv/bin/python benchmarks/bench_report.py --quick   # 100 reports, idle 15 s

A Manager (``ManagerService`` + ``SyncAgentStates`` answering success, recording when each
report arrives) runs as its own process on loopback.

* **Latency**: a Reporter in this process (its own grpc loop, plaintext) is fed
  ``--reports`` one-collector results, one every 20 ms; each carries its number, and the
  Manager notes ``time.monotonic()`` when the report arrives (the clock is shared by the
  processes). Latency = arrival - publication: batching, encoding, the call. p50 and p99
  (nearest rank); the seed's target is < 200 ms.
* **Cost**: for each N, ``hostvisor run`` supervises N agents (``bench_core``'s workload)
  twice: **standalone** (no ``manager``/``collectors`` section, no gRPC at all) and
  **manager** (``manager:`` at the Manager above, heartbeat every 60 s, the four
  collectors every 60 s, agent states every 30 s). Once the agents have started and
  ``SETTLE_S`` passed (and, for ``manager``, the node has registered), RSS and idle CPU
  over ``--idle`` seconds. Printed side by side with ratios.

Writes everything to ``benchmarks/results/report.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil
import yaml
from _core_workload import agent_ids, ours_document
from bench_core import SETTLE_S, cpu_seconds, launch, percentile, settle, stop, tail, wait_started

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "report.json"
MIB = 1024 * 1024
TARGET_MS = 200.0
GAP_S = 0.02


# --------------------------------------------------------------------------- the Manager


def serve_manager(port_file: str, arrivals_file: str) -> None:
    """The Manager process: answers success, records report arrivals until SIGTERM."""
    import trio

    from transport import (
        DaemonService,
        Listener,
        ManagerService,
        daemon_pb2,
        manager_pb2,
        open_grpc_loop,
        serve_grpc,
        unary_route,
    )

    arrivals: list[tuple[float, float]] = []
    counts = {"RegisterNode": 0, "Heartbeat": 0, "ReportMetrics": 0, "SyncAgentStates": 0}

    async def register(request: object, ctx: object) -> manager_pb2.RegisterNodeResponse:
        counts["RegisterNode"] += 1
        return manager_pb2.RegisterNodeResponse(success=True)

    async def heartbeat(request: object, ctx: object) -> manager_pb2.HeartbeatResponse:
        counts["Heartbeat"] += 1
        return manager_pb2.HeartbeatResponse(success=True)

    async def report(
        request: manager_pb2.ReportMetricsRequest, ctx: object
    ) -> manager_pb2.ReportMetricsResponse:
        now = time.monotonic()
        counts["ReportMetrics"] += 1
        for data in request.metrics:
            if "bench_seq" in data.values:
                arrivals.append((data.values["bench_seq"], now))
        return manager_pb2.ReportMetricsResponse(success=True)

    async def sync(request: object, ctx: object) -> daemon_pb2.SyncAgentStatesResponse:
        counts["SyncAgentStates"] += 1
        return daemon_pb2.SyncAgentStatesResponse(success=True)

    routes = [
        unary_route(ManagerService.RegisterNode, register),
        unary_route(ManagerService.Heartbeat, heartbeat),
        unary_route(ManagerService.ReportMetrics, report),
        unary_route(DaemonService.SyncAgentStates, sync),
    ]

    async def main() -> None:
        with trio.open_signal_receiver(signal.SIGTERM) as signals:
            async with open_grpc_loop(), trio.open_nursery() as nursery:
                bound = await nursery.start(serve_grpc, routes, [Listener("127.0.0.1:0")])
                Path(port_file).write_text(bound[0])
                async for _ in signals:
                    break
                nursery.cancel_scope.cancel()
        Path(arrivals_file).write_text(json.dumps({"arrivals": arrivals, "counts": counts}))

    trio.run(main)


class Manager:
    """The Manager process, started and stopped by the benchmark."""

    def __init__(self, root: Path) -> None:
        self.port_file, self.arrivals_file = root / "manager.port", root / "arrivals.json"
        argv = [sys.executable, __file__, "--serve-manager", str(self.port_file),
                str(self.arrivals_file)]  # fmt: skip
        self.proc = subprocess.Popen(argv, cwd=HERE, start_new_session=True)
        deadline = time.monotonic() + 60
        while not self.port_file.exists() or not self.port_file.read_text():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("the Manager did not start")
            time.sleep(0.05)
        self.address = self.port_file.read_text()

    def finish(self) -> dict[str, object]:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        result: dict[str, object] = json.loads(self.arrivals_file.read_text())
        return result


# --------------------------------------------------------------------------- latency


def measure_latency(address: str, reports: int, work: Path) -> dict[str, float]:
    """Publish ``reports`` results through a Reporter; p50/p99 of publication -> arrival."""
    import contextlib

    import trio

    from collectors import Metrics
    from transport.daemon._manager_config import ManagerSpec
    from transport.daemon._reporter import Reporter

    published: dict[int, float] = {}

    class Source:
        def __init__(self) -> None:
            self.send, self.receive = trio.open_memory_channel[Metrics](1000)

        @contextlib.contextmanager
        def subscribe(self, *, max_buffer_size: int = 64):  # type: ignore[no-untyped-def]
            yield self.receive

    async def main() -> None:
        source = Source()
        reporter = Reporter(ManagerSpec(address), node_id="bench", work_dir=str(work),
                            metrics=source)  # fmt: skip
        async with trio.open_nursery() as nursery:
            await nursery.start(reporter.run)
            await reporter.wait_registered()
            for seq in range(-20, reports):  # 20 warm-up reports
                values = {"usage_percent": 1.0, "cores": 2, "bench_seq": seq}
                published[seq] = time.monotonic()
                source.send.send_nowait(Metrics("cpu", time.time(), values))
                await trio.sleep(GAP_S)
            with trio.move_on_after(30):
                while reporter.statistics().reports < reports + 20:
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()

    trio.run(main)
    return {str(k): v for k, v in published.items()}


# --------------------------------------------------------------------------- daemon cost


@dataclass
class Run:
    variant: str
    n: int
    rss_bytes: int | None = None
    idle_cpu_pct: float | None = None
    exit_code: int | None = None
    leaked: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stderr_tail: list[str] = field(default_factory=list)


def run_one(variant: str, n: int, idle_s: float, address: str) -> Run:
    result = Run(variant=variant, n=n)
    root = Path(tempfile.mkdtemp(prefix=f"hvrep-{variant}-{n}-", dir="/tmp"))
    marker = root.name
    starts = root / "starts"
    starts.mkdir()
    document = ours_document(str(root / "work"), str(starts), n, marker)
    if variant == "manager":
        document["manager"] = {"address": address, "heartbeat_interval": "60s"}
    config = root / "daemon.yaml"
    config.write_text(yaml.safe_dump(document, sort_keys=False))
    proc, launched = launch(root, [sys.executable, "-m", "transport.daemon", "run",
                                   "--config", str(config)])  # fmt: skip
    try:
        first = wait_started(starts, agent_ids(n), proc)
        settle(first, launched, SETTLE_S)
        if variant == "manager":
            deadline = time.monotonic() + 60
            log = root / "supervisor.stderr"
            while "registered as node" not in log.read_text(errors="replace"):
                if time.monotonic() > deadline:
                    raise RuntimeError("the daemon did not register")
                time.sleep(0.05)
        daemon = psutil.Process(proc.pid)
        cpu0, t0 = cpu_seconds(daemon), time.monotonic()
        time.sleep(idle_s)
        result.idle_cpu_pct = 100 * (cpu_seconds(daemon) - cpu0) / (time.monotonic() - t0)
        result.rss_bytes = int(daemon.memory_info().rss)
    except Exception as exc:
        result.errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        result.exit_code, _, errors, result.leaked = stop(proc, marker)
        result.errors += errors
        if result.errors or result.leaked or result.exit_code:
            result.stderr_tail = tail(root / "supervisor.stderr")
        shutil.rmtree(root, ignore_errors=True)
    return result


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a is not None and b else "-"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", default="10,300")
    parser.add_argument("--reports", type=int, default=300)
    parser.add_argument("--idle", type=float, default=60.0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--serve-manager", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_manager:
        serve_manager(*args.serve_manager)
        return 0
    if args.quick:
        args.reports, args.idle = 100, 15.0
    sizes = [int(x) for x in args.n.split(",")]
    root = Path(tempfile.mkdtemp(prefix="hvrep-", dir="/tmp"))
    sys.path.insert(0, str(ROOT))
    try:
        manager = Manager(root)
        try:
            published = measure_latency(manager.address, args.reports, root / "work")
            runs = [run_one(v, n, args.idle, manager.address)
                    for n in sizes for v in ("standalone", "manager")]  # fmt: skip
        finally:
            recorded = manager.finish()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    arrivals = {str(int(seq)): at for seq, at in recorded["arrivals"]}  # type: ignore[union-attr]
    samples = [1000 * (arrivals[k] - published[k]) for k in published
               if int(k) >= 0 and k in arrivals]  # fmt: skip
    latency = {
        "p50_ms": percentile(samples, 0.5),
        "p99_ms": percentile(samples, 0.99),
        "max_ms": max(samples),
        "delivered": float(len(samples)),
        "published": float(args.reports),
    }
    print(f"report latency daemon -> Manager (loopback, {len(samples)}/{args.reports} reports):"
          f" p50 {latency['p50_ms']:.2f} ms, p99 {latency['p99_ms']:.2f} ms,"
          f" max {latency['max_ms']:.2f} ms (target < {TARGET_MS:.0f} ms)")  # fmt: skip
    print()
    print(f"{'N':>5} {'RSS standalone':>15} {'RSS manager':>12} {'ratio':>7}"
          f" {'CPU% standalone':>16} {'CPU% manager':>13} {'ratio':>7}")  # fmt: skip
    by = {(r.variant, r.n): r for r in runs}
    for n in sizes:
        a, b = by[("standalone", n)], by[("manager", n)]
        rss_a = a.rss_bytes / MIB if a.rss_bytes else None
        rss_b = b.rss_bytes / MIB if b.rss_bytes else None
        print(f"{n:>5} {rss_a or 0:>12.1f} MiB {rss_b or 0:>8.1f} MiB {ratio(rss_b, rss_a):>7}"
              f" {a.idle_cpu_pct or 0:>16.3f} {b.idle_cpu_pct or 0:>13.3f}"
              f" {ratio(b.idle_cpu_pct, a.idle_cpu_pct):>7}")  # fmt: skip
    problems = [r for r in runs if r.errors or r.leaked or r.exit_code]
    for r in problems:
        print(f"{r.variant} N={r.n}: errors {r.errors}, leaked {r.leaked}, exit {r.exit_code}")
        print("\n".join(r.stderr_tail))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({
        "python": sys.version.split()[0], "cpus": os.cpu_count(), "idle_s": args.idle,
        "latency": latency, "manager_counts": recorded["counts"],
        "runs": [asdict(r) for r in runs],
    }, indent=2))  # fmt: skip
    return 1 if problems or len(samples) < args.reports else 0


if __name__ == "__main__":
    sys.exit(main())
