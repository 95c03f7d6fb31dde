"""The daemon with and without its Manager connection, beside supervisord; report latency.

Run with the project's interpreter from the repository root::

    .venv/bin/python benchmarks/bench_report.py      # N = 10, 300; 20 kills; idle 60 s; ~9 min
    .venv/bin/python benchmarks/bench_report.py --quick   # N = 10; 10 kills; idle 15 s; ~2 min
    options: --n 10,300  --kills 20  --idle 60  --reports 300  --output FILE

Two Managers run as their own processes on loopback for the whole run: the reference
Manager (``python -m transport.manager run``, SQLite in a temporary data directory,
started as ``bench_manager.py`` starts it) and a recording Manager (``ManagerService`` and
``SyncAgentStates`` answering success, noting ``time.monotonic()`` when each report
arrives; the clock is shared by the processes).

**Cost.** For each N, three runs of ``bench_core.run_one`` (bench_core's workload and
measurements: start-up, RSS once start-up has settled, idle CPU over ``--idle`` seconds,
restart latency over ``--kills`` SIGKILLs), one after the other:

* ``standalone``: ``hostvisor run`` with bench_core's configuration (no ``manager``
  section, no gRPC at all);
* ``manager``: the same with ``manager:`` at the reference Manager (heartbeat every 60 s,
  the four collectors every 60 s, agent states every 30 s and 0.5 s after a change). Its
  node must have synced its agents before the idle window begins (checked in the
  Manager's database; an error otherwise);
* ``supervisord``: bench_core's supervisord (its virtual environment, made on first use).

**Report latency**, three figures:

* ``recording``: a Reporter in this process (its own grpc loop, plaintext) is fed
  ``--reports`` one-collector results, one every 20 ms, each with its number; latency is
  the recording Manager's arrival minus the publication: batching, encoding, the call.
* ``manager_db``: the same against the reference Manager, each result with its own
  timestamp; latency is publication until the row can be read from the Manager's database
  (a thread here polls it every 5 ms: what the console and the REST API can show), and
  until the Manager's writer stamped it (``created_at``, before its commit).
* ``agent_state``: in the ``manager`` runs, a restarted agent's start (the child's own
  ``$EPOCHREALTIME``) until its new PID can be read from the Manager's ``agents`` table:
  the daemon's state sync end to end (its 0.5 s debounce included). The last restart of a
  run is often not counted: bench_core stops the daemon right after it, before its sync.

p50 and p99 are nearest-rank; the seed's target for report latency is < 200 ms.

Prints the figures side by side (columns standalone, manager, supervisord; ratios
manager/standalone, standalone/supervisord and manager/supervisord) and the latencies,
and writes every figure and raw sample to ``benchmarks/results/report.json``
(``--output``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml
from _core_workload import ours_document
from bench_core import (
    SETTLE_S,
    SUPERVISORD_VENV,
    RunResult,
    ensure_supervisord_venv,
    latency,
    mib,
    ours_command,
    percentile,
    read_starts,
    run_one,
    run_quiet,
    supervisor_env,
    supervisord_command,
)
from bench_manager import _code_version, manager_config, start_manager, stop_process

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "report.json"
TARGET_MS = 200.0
GAP_S = 0.02
POLL_S = 0.005
STATE_POLL_S = 0.01
WARMUP_REPORTS = 20

STANDALONE, MANAGER, SUPERVISORD = "standalone", "manager", "supervisord"
VARIANTS = (STANDALONE, MANAGER, SUPERVISORD)
#: The ratios printed and saved: (numerator, denominator).
RATIOS = ((MANAGER, STANDALONE), (STANDALONE, SUPERVISORD), (MANAGER, SUPERVISORD))

Command = Callable[[Path, Path, int, str], list[str]]


# --------------------------------------------------------------------------- the recording Manager


def serve_recording_manager(port_file: str, arrivals_file: str) -> None:
    """The recording Manager's process: answers success, notes report arrivals until SIGTERM."""
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


class RecordingManager:
    """The recording Manager's process, started and stopped by the benchmark."""

    def __init__(self, root: Path) -> None:
        self.port_file, self.arrivals_file = root / "manager.port", root / "arrivals.json"
        argv = [sys.executable, __file__, "--serve-recording-manager", str(self.port_file),
                str(self.arrivals_file)]  # fmt: skip
        self.proc = subprocess.Popen(argv, cwd=HERE, start_new_session=True)
        deadline = time.monotonic() + 60
        while not self.port_file.exists() or not self.port_file.read_text():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("the recording Manager did not start")
            time.sleep(0.05)
        self.address = self.port_file.read_text()

    def finish(self) -> dict[str, Any]:
        """Stop it; its arrivals (sequence number, monotonic time) and call counts."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        result: dict[str, Any] = json.loads(self.arrivals_file.read_text())
        return result


# --------------------------------------------------------------------------- the reference Manager


class ReferenceManager:
    """``python -m transport.manager run`` on SQLite in ``root/data``, as bench_manager runs it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        config, grpc_port, _ = manager_config(root, None, 1)  # grpc.workers: the default
        self.proc = start_manager(root, config)
        self.address = f"127.0.0.1:{grpc_port}"
        self.database = root / "data" / "manager.db"

    def finish(self) -> int | None:
        """Stop it; its exit status (None: it had to be killed)."""
        return stop_process(self.proc)

    def stderr_tail(self, lines: int = 20) -> list[str]:
        return (self.root / "manager.err").read_text(errors="replace").splitlines()[-lines:]


class Watch:
    """Polls the reference Manager's database in a thread: when each row was first seen.

    ``query`` selects ``(key, stamp)`` rows whose stamp (a Manager time column) is greater
    than ``:since``; each poll moves ``:since`` to the largest stamp seen. A Manager
    transaction stamps its rows with one time and its writer commits in order, so no row
    is missed; a row reported again (a sync rewrites every agent) is only seen once.
    """

    def __init__(self, database: Path, query: str, params: dict[str, object], every_s: float):
        self.database, self.query, self.params, self.every_s = database, query, params, every_s
        self.seen: dict[str, tuple[float, float]] = {}  # key -> (monotonic, wall) first seen
        self.stamps: dict[str, float] = {}  # key -> its stamp when first seen
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        since = 0.0
        uri = f"file:{self.database}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as db:
            while not self._stop.is_set():
                try:
                    rows = db.execute(self.query, {**self.params, "since": since}).fetchall()
                except sqlite3.OperationalError:  # not migrated yet, or busy
                    rows = []
                seen = time.monotonic(), time.time()
                self.polls += 1
                for key, stamp in rows:
                    self.seen.setdefault(str(key), seen)
                    self.stamps.setdefault(str(key), float(stamp))
                    since = max(since, float(stamp))
                self._stop.wait(self.every_s)


# --------------------------------------------------------------------------- latency


def publish(
    address: str, reports: int, work: Path, node_id: str, base: int
) -> dict[int, tuple[float, float]]:
    """Publish ``reports`` (after 20 warm-up ones) through a Reporter; when each was published.

    Result ``seq`` has the timestamp ``base + seq`` (whole seconds, so that the reference
    Manager stores each as its own row) and the value ``bench_seq``.

    Returns:
        Per sequence number (warm-up ones negative): (monotonic, wall) at publication.
    """
    import trio

    from collectors import Metrics
    from transport import open_grpc_loop
    from transport.daemon._manager_config import ManagerSpec
    from transport.daemon._reporter import Reporter

    published: dict[int, tuple[float, float]] = {}

    class Source:
        def __init__(self) -> None:
            self.send, self.receive = trio.open_memory_channel[Metrics](1000)

        @contextlib.contextmanager
        def subscribe(self, *, max_buffer_size: int = 64) -> Iterator[Any]:
            yield self.receive

    async def main() -> None:
        source = Source()
        reporter = Reporter(ManagerSpec(address), node_id=node_id, work_dir=str(work),
                            metrics=source, open_loop=False)  # fmt: skip
        async with open_grpc_loop(), trio.open_nursery() as nursery:
            await nursery.start(reporter.run)
            await reporter.wait_registered()
            for seq in range(-WARMUP_REPORTS, reports):
                values = {"usage_percent": 1.0, "bench_seq": seq}
                published[seq] = time.monotonic(), time.time()
                source.send.send_nowait(Metrics("bench", base + seq, values))
                await trio.sleep(GAP_S)
            with trio.move_on_after(30):
                while reporter.statistics().reports < reports + WARMUP_REPORTS:
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()

    trio.run(main)
    return published


def stamp_base(reports: int) -> int:
    """The metric timestamp of result 0: distinct whole seconds, all in the past."""
    return int(time.time()) - reports - 3600


def summary(samples_ms: Sequence[float], expected: int) -> dict[str, float]:
    """p50, p99 (nearest rank), max, and how many of ``expected`` were measured."""
    if not samples_ms:
        return {"measured": 0.0, "expected": float(expected)}
    return {
        "p50_ms": percentile(samples_ms, 0.5),
        "p99_ms": percentile(samples_ms, 0.99),
        "max_ms": max(samples_ms),
        "measured": float(len(samples_ms)),
        "expected": float(expected),
    }


def recording_latency(
    recorded: dict[str, Any], published: dict[int, tuple[float, float]]
) -> dict[str, float]:
    arrivals = {int(seq): at for seq, at in recorded["arrivals"]}
    samples = [1000 * (arrivals[seq] - at) for seq, (at, _) in published.items()
               if seq >= 0 and seq in arrivals]  # fmt: skip
    return summary(samples, sum(1 for seq in published if seq >= 0))


def manager_db_latency(manager: ReferenceManager, reports: int, work: Path) -> dict[str, Any]:
    """Publication until the row is readable in the reference Manager's database."""
    node_id = "bench-latency"
    query = ('SELECT "timestamp", created_at FROM metrics'
             " WHERE node_id = :node AND type = 'bench' AND created_at > :since")  # fmt: skip
    base = stamp_base(reports)
    with Watch(manager.database, query, {"node": node_id}, POLL_S) as watch:
        published = publish(manager.address, reports, work, node_id, base)
        deadline = time.monotonic() + 10  # the last rows may still be on their way
        while len(watch.seen) < len(published) and time.monotonic() < deadline:
            time.sleep(0.05)
    visible, written = [], []
    for key, (seen_mono, _) in watch.seen.items():
        seq = int(key) - base
        if seq >= 0 and seq in published:
            visible.append(1000 * (seen_mono - published[seq][0]))
            written.append(1000 * (watch.stamps[key] - published[seq][1]))
    return {
        **summary(visible, reports),
        "written": summary(written, reports),
        "poll_s": POLL_S,
        "polls": watch.polls,
    }


def state_latency(starts: Path, seen: dict[str, tuple[float, float]]) -> list[float]:
    """Per restart (every start after an agent's first): its start until its PID was seen, ms."""
    samples = []
    for path in sorted(starts.iterdir()):
        for pid, started in read_starts(path)[1:]:
            at = seen.get(f"{path.name} {pid}")
            if at is not None:
                samples.append(1000 * (at[1] - started))
    return samples


# --------------------------------------------------------------------------- daemon cost


def manager_command(address: str, node_id: str, runs: list[tuple[Path, float]]) -> Command:
    """Our daemon with ``manager:`` at ``address``; notes each run's directory and launch."""

    def command(root: Path, starts: Path, n: int, marker: str) -> list[str]:
        document = ours_document(str(root / "ours"), str(starts), n, marker)
        document["daemon"]["id"] = node_id
        document["manager"] = {"address": address, "heartbeat_interval": "60s"}
        config = root / "daemon.yaml"
        config.write_text(yaml.safe_dump(document, sort_keys=False))
        run_quiet([sys.executable, "-m", "transport.daemon", "check-config", str(config)])
        runs.append((root, time.time()))  # bench_core launches the daemon right after this
        return [sys.executable, "-m", "transport.daemon", "run", "--config", str(config)]

    return command


def run_quietly(
    variant: str, command: Command, n: int, kills: int, idle_s: float, keep: bool
) -> RunResult:
    """``bench_core.run_one`` without its "kept DIR" line (the caller deletes the directory)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = run_one(variant, command, n, kills, idle_s, keep)
    for line in out.getvalue().splitlines():
        if not line.lstrip().startswith("kept "):
            print(line, flush=True)
    return result


def run_with_manager(
    manager: ReferenceManager, n: int, kills: int, idle_s: float
) -> tuple[RunResult, dict[str, Any]]:
    """The ``manager`` variant, its agents' states watched in the Manager's database."""
    node_id = f"bench-daemon-{n}"
    query = ("SELECT agent_id || ' ' || pid, updated_at FROM agents"
             " WHERE node_id = :node AND updated_at > :since")  # fmt: skip
    launches: list[tuple[Path, float]] = []
    command = manager_command(manager.address, node_id, launches)
    with Watch(manager.database, query, {"node": node_id}, STATE_POLL_S) as watch:
        result = run_quietly(MANAGER, command, n, kills, idle_s, keep=True)
        deadline = time.monotonic() + 5  # the last restart's sync
        while time.monotonic() < deadline and len(watch.seen) < n + len(result.restart_latencies_s):
            time.sleep(0.05)
    root, launched = launches[0]
    try:
        samples = state_latency(root / "starts", watch.seen)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    first_sync = min((wall for _, wall in watch.seen.values()), default=None)
    if result.startup_s is not None:
        idle_from = launched + result.startup_s + SETTLE_S
        if first_sync is None or first_sync > idle_from:
            result.errors.append("the node had not synced its agents when the idle window began")
    figures: dict[str, Any] = dict(summary(samples, len(result.restart_latencies_s)))
    figures["first_sync_after_launch_s"] = None if first_sync is None else first_sync - launched
    return result, figures


def figures_of(result: RunResult) -> dict[str, float | None]:
    """One run's figures, as bench_system.py reads them."""
    return {
        "restart_median_ms": latency(None)(result),
        "restart_p95_ms": latency(0.95)(result),
        "restarts": float(len(result.restart_latencies_s)),
        "rss_mib": mib(result.rss_bytes),
        "idle_cpu_pct": result.idle_cpu_pct_schedstat,
        "idle_cpu_pct_psutil": result.idle_cpu_pct,
        "startup_s": result.startup_s,
    }


#: The rows of the side-by-side table: label, figure, digits.
ROWS = (
    ("restart latency, median (ms)", "restart_median_ms", 2),
    ("restart latency, p95 (ms)", "restart_p95_ms", 2),
    ("RSS (MiB)", "rss_mib", 1),
    ("idle CPU, schedstat (% of a core)", "idle_cpu_pct", 3),
    ("idle CPU, psutil (% of a core)", "idle_cpu_pct_psutil", 3),
    ("start-up of N agents (s)", "startup_s", 3),
)


def _cell(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or not b else f"{a / b:.3g}"


def print_table(figures: dict[int, dict[str, dict[str, float | None]]]) -> None:
    """The daemon's figures side by side, one block of rows per figure."""
    ratio_heads = [f"{a[:3]}/{b[:3]}" for a, b in RATIOS]
    print(f"\n{'figure':<36} {'N':>4}" + "".join(f" {v:>12}" for v in VARIANTS)
          + "".join(f" {h:>9}" for h in ratio_heads))  # fmt: skip
    for label, key, digits in ROWS:
        for i, (n, by) in enumerate(sorted(figures.items())):
            values = {v: by.get(v, {}).get(key) for v in VARIANTS}
            print(f"{label if i == 0 else '':<36} {n:>4}"
                  + "".join(f" {_cell(values[v], digits):>12}" for v in VARIANTS)
                  + "".join(f" {_ratio(values[a], values[b]):>9}" for a, b in RATIOS))  # fmt: skip
    print("(ratios: man/sta = with the Manager connection / standalone; sta/sup and man/sup:"
          " ours / supervisord)")  # fmt: skip


def print_latency(name: str, what: str, figures: dict[str, Any]) -> None:
    if not figures.get("measured"):
        print(f"{name}: nothing measured ({what})")
        return
    print(f"{name} ({what}, {figures['measured']:.0f}/{figures['expected']:.0f}):"
          f" p50 {figures['p50_ms']:.2f} ms, p99 {figures['p99_ms']:.2f} ms,"
          f" max {figures['max_ms']:.2f} ms")  # fmt: skip


def warm_up() -> None:
    """Fill the bytecode cache and the page cache, as bench_core does before measuring."""
    env = supervisor_env()
    run_quiet([sys.executable, "-c", "import transport.daemon, transport, grpc, yaml"], env=env)
    python = str(SUPERVISORD_VENV / "bin" / "python")
    run_quiet([python, "-P", "-c", "import supervisor.supervisord"], env=env)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", help="comma-separated agent counts (default 10,300)")
    parser.add_argument("--kills", type=int, help="restart samples per run (default 20)")
    parser.add_argument("--idle", type=float, help="idle CPU window, s (default 60)")
    parser.add_argument("--reports", type=int, help="latency samples (default 300)")
    parser.add_argument("--quick", action="store_true",
                        help="N=10, 10 kills, idle 15 s, 100 reports (unless given)")  # fmt: skip
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON results file")
    parser.add_argument("--serve-recording-manager", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_recording_manager:
        serve_recording_manager(*args.serve_recording_manager)
        return 0
    quick = args.quick
    sizes = [int(x) for x in (args.n or ("10" if quick else "10,300")).split(",")]
    kills = args.kills or (10 if quick else 20)
    idle_s = args.idle or (15.0 if quick else 60.0)
    reports = args.reports or (100 if quick else 300)
    if kills < 1 or idle_s <= 0 or reports < 1 or min(sizes) < 1:
        parser.error("--n, --kills, --idle and --reports must be positive")
    began = time.monotonic()
    print(f"code {_code_version()}; load average {os.getloadavg()}", flush=True)
    supervisord, supervisord_version = ensure_supervisord_venv()
    warm_up()

    root = Path(tempfile.mkdtemp(prefix="hvrep-", dir="/tmp"))
    results: list[RunResult] = []
    states: dict[int, dict[str, Any]] = {}
    errors: list[str] = []
    manager_exit: int | None = None
    try:
        recording = RecordingManager(root)
        try:
            published = publish(
                recording.address, reports, root / "work-rec", "bench-rec", stamp_base(reports)
            )
        finally:
            recorded = recording.finish()
        (root / "ref").mkdir()
        reference = ReferenceManager(root / "ref")
        try:
            db_latency = manager_db_latency(reference, reports, root / "work-ref")
            for n in sizes:
                print(f"N={n}: standalone ...", flush=True)
                results.append(run_one(STANDALONE, ours_command, n, kills, idle_s, False))
                print(f"N={n}: with the Manager connection ...", flush=True)
                result, states[n] = run_with_manager(reference, n, kills, idle_s)
                results.append(result)
                print(f"N={n}: supervisord ...", flush=True)
                command = supervisord_command(supervisord)
                results.append(run_one(SUPERVISORD, command, n, kills, idle_s, False))
            if reference.proc.poll() is not None:
                errors.append(f"the reference Manager exited ({reference.proc.returncode})")
        finally:
            manager_exit = reference.finish()
            if errors or manager_exit:
                errors += reference.stderr_tail()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    rec_latency = recording_latency(recorded, published)
    figures: dict[int, dict[str, dict[str, float | None]]] = {}
    for r in results:
        figures.setdefault(r.n, {})[r.impl] = figures_of(r)
    print_table(figures)
    print()
    print_latency("report latency, recording Manager", "publication -> arrival", rec_latency)
    print_latency("report latency, reference Manager", "publication -> row readable",
                  db_latency)  # fmt: skip
    print_latency("report latency, reference Manager", "publication -> written",
                  db_latency["written"])  # fmt: skip
    for n, figure in states.items():
        print_latency(f"agent state, N={n}", "restart -> new PID readable", figure)
    worst = max(rec_latency.get("p99_ms", float("inf")), db_latency.get("p99_ms", float("inf")))
    print(f"target: report latency p99 < {TARGET_MS:.0f} ms:"
          f" {'met' if worst < TARGET_MS else 'NOT met'} ({worst:.2f} ms)")  # fmt: skip
    problems = [r for r in results if r.errors or r.leaked or r.exit_code or r.restart_failures]
    for r in problems:
        print(f"{r.impl} N={r.n}: errors {r.errors}, restart failures {r.restart_failures},"
              f" leaked {r.leaked}, exit {r.exit_code}")  # fmt: skip
        print("\n".join(r.stderr_tail))
    for line in errors:
        print(line)
    elapsed = time.monotonic() - began
    print(f"\n(benchmark took {elapsed:.0f} s; load average {os.getloadavg()})")

    args.output.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": "bench_report",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "code": _code_version(),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "loadavg_end": list(os.getloadavg()),
        "options": {"n": sizes, "kills": kills, "idle_s": idle_s, "reports": reports},
        "supervisord": supervisord_version,
        "figures": {str(n): by for n, by in figures.items()},
        "latency": {
            "target_ms": TARGET_MS,
            "recording": rec_latency,
            "manager_db": db_latency,
            "agent_state": {str(n): figure for n, figure in states.items()},
        },
        "recording_manager_counts": recorded["counts"],
        "reference_manager": {"exit": manager_exit, "errors": errors},
        "runs": [asdict(r) for r in results],
        "elapsed_s": elapsed,
    }
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    print(f"results written to {args.output}")
    incomplete = rec_latency.get("measured", 0) < reports
    return 1 if problems or errors or manager_exit or incomplete else 0


if __name__ == "__main__":
    sys.exit(main())
