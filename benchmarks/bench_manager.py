"""The Manager under a simulated fleet: SQLite beside PostgreSQL beside the original's figures.

Run with the project's interpreter from the repository root::

    .venv/bin/python benchmarks/bench_manager.py --nodes 1000 --duration 60
    .venv/bin/python benchmarks/bench_manager.py --nodes 10000 --duration 150
    .venv/bin/python benchmarks/bench_manager.py --quick     # 200 nodes, compression 10, 20 s
    options: --databases sqlite,postgres  --sim-procs N  --compression C  --settle S
             --concurrency N  --workers N (grpc.workers; default 1 on SQLite, 2 on
             PostgreSQL)  --keep (keep tmp dirs)
             --output FILE

For each database in turn, the real Manager runs as its own process (``python -m
transport.manager run --config FILE``: gRPC and HTTP on 127.0.0.1, its data directory in a
temporary directory, ``grpc.workers`` from ``--workers``, by default the best setting
measured for 10,000 nodes on 2 cores: 1 on SQLite, 2 on PostgreSQL); for ``postgres`` on a
throwaway PostgreSQL cluster started here (``initdb``/``pg_ctl`` from
``/usr/lib/postgresql/*/bin``, as the ``postgres`` user when run as root; the test suite's
:class:`PostgresServer`, with ``fsync``, ``synchronous_commit`` and ``full_page_writes`` on,
as a production server runs) and stopped at the end. ``fleet_sim.py`` then drives it with
``--nodes`` simulated original daemons, in ``--sim-procs`` processes (each a shard of one
fleet, all starting at one wall-clock instant): registrations spread over the first
heartbeat interval (60 s), then heartbeat + metrics every 60 s and a full agent sync every
30 s per node, phases spread evenly. The measured window is ``--duration`` seconds after the
ramp and ``--settle`` seconds.

Sampled every second with psutil, over the window: the Manager's CPU (cores) and RSS
(peak; its gRPC worker processes included), PostgreSQL's processes' CPU (the postmaster
and every backend), the simulators' CPU, and the machine's busy CPU from ``/proc/stat``
less all of those (other load on the machine: the figures mean little when it is high).
From the simulators: calls per second, latency p50/p99/max of the steady calls (Heartbeat,
ReportMetrics, SyncAgentStates due in the window), per method, RegisterNode over the ramp,
failures by status, and how late calls started (a simulator that could not keep up). The
database's size (SQLite's pages in use, WAL included; PostgreSQL's ``pg_database_size``)
at the window's start and end: its growth over the window, at the seed's intervals, scaled
to a day and divided by the nodes, is the "database growth per node per day" (issue 15).

Prints one table (rows: figures; columns SQLite, PostgreSQL, the original Manager at
that fleet size, and the ratios to it) and writes every figure and the per-method tables to
``benchmarks/results/manager.json``. The original's figures (notes §3): 10,000 simulated
daemons, 60 s intervals, 2 cores, MariaDB beside it: no call failed, p99 120-675 ms, the
Manager 0.62 cores and 32-48 MiB, MariaDB 0.7 cores; 1,000 daemons: p99 33-41 ms.
Target (issue 13): 10,000 nodes with p99 under 100 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import fleet_sim
import psutil
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from tests.transport.manager.pg import PostgresServer, find_bindir  # noqa: E402

RESULTS = HERE / "results" / "manager.json"
MIB = 1024 * 1024
TARGET_P99_MS = 100.0
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
DEFAULT_WORKERS = {"sqlite": 1, "postgres": 2}
"""The Manager's ``grpc.workers`` per database unless ``--workers`` says, the best measured
at 10,000 nodes on 2 cores (benchmarks/README.md): on SQLite one process (one writer,
the largest batches; two workers spent 0.3 cores more on the same calls), on PostgreSQL
one per core (its path costs more CPU per call than one interpreter has)."""
ANCHORS: dict[int, dict[str, tuple[float, float]]] = {
    10_000: {
        "failures": (0, 0),
        "unsent": (0, 0),
        "p99_ms": (120, 675),
        "manager_cores": (0.62, 0.62),
        "manager_rss_mib": (32, 48),
        "db_cores": (0.7, 0.7),
    },
    1_000: {"p99_ms": (33, 41)},
}
"""The original Manager's figures (range between its runs), by fleet size."""


@dataclass
class Run:
    """One database's run."""

    database: str
    nodes: int
    window_s: float
    figures: dict[str, dict[str, float]] = field(default_factory=dict)
    failures: dict[str, dict[str, int]] = field(default_factory=dict)
    lag_p99_ms: float = math.nan
    lag_max_ms: float = math.nan
    register_requests: int = 0
    unsent: dict[str, int] = field(default_factory=dict)
    manager_cores: float = math.nan
    manager_rss_mib: float = math.nan
    db_cores: float = math.nan
    sim_cores: float = math.nan
    other_cores: float = math.nan
    loadavg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    db_bytes: tuple[float, float] = (math.nan, math.nan)
    db_bytes_per_node_day: float = math.nan
    workers: int = 1
    manager_exit: int | None = None
    errors: list[str] = field(default_factory=list)
    stderr_tail: list[str] = field(default_factory=list)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --------------------------------------------------------------------------- sampling


def _busy_s() -> float:
    """The machine's busy CPU seconds so far (/proc/stat: all but idle and iowait)."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    return (sum(fields) - fields[3] - fields[4]) / ticks


class Sampler:
    """Cumulative CPU seconds of process groups, RSS of the Manager, every second.

    A group's CPU is the sum over every process seen in it of its last reading, so a
    process that ends keeps what it used; children are found anew at each sample. The
    Manager's group holds its gRPC workers, and its RSS is theirs and its own summed.
    """

    def __init__(self, manager: int, postmaster: int | None, sims: Sequence[int]) -> None:
        self.roots = {
            "manager": [manager],
            "db": [postmaster] if postmaster else [],
            "sim": [*sims],
        }
        self.last: dict[str, dict[int, float]] = {name: {} for name in self.roots}
        self.samples: list[tuple[float, dict[str, float], float, int]] = []
        self.manager = manager
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(1.0)

    def sample(self) -> None:
        totals: dict[str, float] = {}
        rss = 0
        for name, pids in self.roots.items():
            seen = self.last[name]
            for pid in pids:
                try:
                    root = psutil.Process(pid)
                    family = [root] + (root.children(recursive=True) if name != "sim" else [])
                except psutil.Error:
                    continue
                for proc in family:
                    try:
                        times = proc.cpu_times()
                        seen[proc.pid] = float(times.user) + float(times.system)
                        if name == "manager":
                            rss += int(proc.memory_info().rss)
                    except psutil.Error:
                        pass
            totals[name] = sum(seen.values())
        self.samples.append((time.time(), totals, _busy_s(), rss))

    def over(self, start: float, end: float) -> tuple[dict[str, float], float, int]:
        """Cores per group and of the machine over [start, end], and the peak RSS."""
        inside = [s for s in self.samples if start <= s[0] <= end]
        if len(inside) < 2:
            return {}, math.nan, 0
        (t0, first, busy0, _), (t1, last, busy1, _) = inside[0], inside[-1]
        span = t1 - t0
        cores = {name: (last[name] - first[name]) / span for name in last}
        return cores, (busy1 - busy0) / span, max(s[3] for s in inside)


# --------------------------------------------------------------------------- the Manager


def manager_config(root: Path, dsn: str | None, workers: int) -> tuple[Path, int, int]:
    """Write the Manager's configuration; return its path, gRPC and HTTP ports."""
    grpc_port, http_port = free_port(), free_port()
    database: dict[str, Any] = {"driver": "postgres", "dsn": dsn} if dsn else {"driver": "sqlite"}
    document = {
        "data_dir": str(root / "data"),
        "server": {"host": "127.0.0.1", "port": http_port},
        "grpc": {"host": "127.0.0.1", "port": grpc_port, "workers": workers},
        "database": database,
        "jwt": {"secret": "bench-" + root.name},
    }
    path = root / "manager.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path, grpc_port, http_port


def database_bytes(database: str, root: Path, dsn: str | None) -> float:
    """The database's size now, in bytes: SQLite's pages in use (the WAL's included, free
    pages not), or PostgreSQL's ``pg_database_size``."""
    if database == "postgres":
        import psycopg

        assert dsn is not None
        with psycopg.connect(dsn.replace("postgresql+psycopg://", "postgresql://")) as conn:
            row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        return float(row[0]) if row else math.nan
    import sqlite3

    with contextlib.closing(sqlite3.connect(root / "data" / "manager.db", timeout=30)) as conn:
        pages, free, size = (
            conn.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("page_count", "freelist_count", "page_size")
        )
    return float((pages - free) * size)


class SizeProbe:
    """The database's size at the window's start and end, read in a thread of its own."""

    def __init__(self, database: str, root: Path, dsn: str | None, at: Sequence[float]) -> None:
        self.sizes = [math.nan] * len(at)
        self.errors: list[str] = []
        self._thread = threading.Thread(
            target=self._loop, args=(database, root, dsn, at), daemon=True
        )
        self._thread.start()

    def _loop(self, database: str, root: Path, dsn: str | None, at: Sequence[float]) -> None:
        for index, when in enumerate(at):
            time.sleep(max(0.0, when - time.time()))
            try:
                self.sizes[index] = database_bytes(database, root, dsn)
            except Exception as exc:
                self.errors.append(f"database size: {type(exc).__name__}: {exc}")

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


def start_manager(root: Path, config: Path) -> subprocess.Popen[bytes]:
    """Start the Manager and wait until its gRPC server listens."""
    argv = [sys.executable, "-m", "transport.manager", "run", "--config", str(config)]
    with (root / "manager.out").open("wb") as out, (root / "manager.err").open("wb") as err:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=ROOT, start_new_session=True
        )
    deadline = time.monotonic() + READY_TIMEOUT_S
    while "gRPC listening on" not in (root / "manager.out").read_text(errors="replace"):
        if proc.poll() is not None:
            raise RuntimeError(f"the Manager exited with status {proc.returncode} at start")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the Manager did not listen within {READY_TIMEOUT_S} s")
        time.sleep(0.1)
    return proc


def stop_process(proc: subprocess.Popen[bytes]) -> int | None:
    """SIGTERM, then SIGKILL after STOP_TIMEOUT_S; the exit status (None: killed)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None


def start_sims(root: Path, target: str, args: argparse.Namespace, start_at: float) -> list[Any]:
    """The simulator processes, each a shard of one fleet; (process, its JSON path)."""
    procs = []
    shard = math.ceil(args.nodes / args.sim_procs)
    for number, first in enumerate(range(0, args.nodes, shard)):
        out = root / f"sim{number}.json"
        argv = [
            sys.executable,
            str(HERE / "fleet_sim.py"),
            *("--target", target, "--nodes", str(min(shard, args.nodes - first))),
            *("--first", str(first), "--total", str(args.nodes)),
            *("--duration", str(args.duration), "--compression", str(args.compression)),
            *("--settle", str(args.settle), "--concurrency", str(args.concurrency)),
            *("--start-at", repr(start_at), "--json", str(out), "--quiet"),
        ]
        log = (root / f"sim{number}.err").open("wb")
        procs.append((subprocess.Popen(argv, stdout=log, stderr=log, cwd=ROOT), out, log))
    return procs


def run_one(database: str, args: argparse.Namespace) -> Run:
    """One database: start it and the Manager, drive the fleet, measure, stop."""
    workers = args.workers or DEFAULT_WORKERS[database]
    result = Run(database=database, nodes=args.nodes, window_s=args.duration, workers=workers)
    root = Path(tempfile.mkdtemp(prefix=f"hv-bench-manager-{database}-", dir="/tmp"))
    server: PostgresServer | None = None
    manager: subprocess.Popen[bytes] | None = None
    sims: list[Any] = []
    try:
        dsn = None
        if database == "postgres":
            bindir = find_bindir()
            if bindir is None:
                raise RuntimeError("PostgreSQL's initdb/pg_ctl not found: install postgresql")
            server = PostgresServer(bindir, durable=True)
            server.start()
            dsn = server.url(server.create_database())
        config, grpc_port, _ = manager_config(root, dsn, workers)
        manager = start_manager(root, config)
        start_at = time.time() + 3.0
        sims = start_sims(root, f"127.0.0.1:{grpc_port}", args, start_at)
        postmaster = _postmaster(server)
        sampler = Sampler(manager.pid, postmaster, [p.pid for p, _, _ in sims])
        sampler.start()
        config_sim = fleet_sim.FleetConfig(
            target="", nodes=args.nodes, duration_s=args.duration, compression=args.compression
        )
        window = config_sim.ramp_s + args.settle
        begin = start_at + window
        sizes = SizeProbe(database, root, dsn, (begin, begin + args.duration))
        limit = start_at + window + args.duration + 120
        for proc, _, _ in sims:
            proc.wait(timeout=max(1.0, limit - time.time()))
        sampler.stop()
        sizes.join(timeout=60)
        result.errors += sizes.errors
        result.db_bytes = (sizes.sizes[0], sizes.sizes[1])
        # The growth over the window, at the seed's intervals (compressed runs are
        # compression times faster), as a day's, per node.
        day_s = 86400.0 / args.compression
        growth = (sizes.sizes[1] - sizes.sizes[0]) / args.duration * day_s
        result.db_bytes_per_node_day = growth / args.nodes
        cores, busy, rss = sampler.over(begin, begin + args.duration)
        result.manager_cores = cores.get("manager", math.nan)
        result.db_cores = cores.get("db", math.nan) if server else math.nan
        result.sim_cores = cores.get("sim", math.nan)
        result.other_cores = busy - sum(v for v in cores.values() if not math.isnan(v))
        result.manager_rss_mib = rss / MIB
        one, five, fifteen = os.getloadavg()
        result.loadavg = (round(one, 2), round(five, 2), round(fifteen, 2))
        shards = [fleet_sim.from_json(json.loads(out.read_text())) for _, out, _ in sims]
        merged = fleet_sim.merge(shards)
        result.figures = fleet_sim.figures(merged)
        result.failures = merged.failures
        result.lag_p99_ms = 1000 * fleet_sim.percentile(merged.lag, 0.99)
        result.lag_max_ms = 1000 * max(merged.lag, default=math.nan)
        result.register_requests = merged.register_requests
        result.unsent = merged.unsent
        if manager.poll() is not None:
            result.errors.append(f"the Manager exited ({manager.returncode}) during the run")
    except Exception as exc:
        result.errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        for proc, _, log in sims:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
        if manager is not None:
            result.manager_exit = stop_process(manager)
        if result.errors or result.manager_exit:
            result.stderr_tail = _tail(root / "manager.err")
        if server is not None:
            server.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return result


def _postmaster(server: PostgresServer | None) -> int | None:
    if server is None:
        return None
    return int((server.data / "postmaster.pid").read_text().split()[0])


def _tail(path: Path, lines: int = 30) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except FileNotFoundError:
        return []


# --------------------------------------------------------------------------- the report


def _values(run: Run | None) -> dict[str, float]:
    if run is None or not run.figures:
        return {}
    steady = run.figures["steady"]
    return {
        "nodes": float(run.nodes),
        "calls_per_s": steady["per_s"],
        "p50_ms": steady["p50"],
        "p99_ms": steady["p99"],
        "max_ms": steady["max"],
        "failures": float(sum(sum(codes.values()) for codes in run.failures.values())),
        "unsent": float(sum(run.unsent.values())),
        "manager_cores": run.manager_cores,
        "manager_rss_mib": run.manager_rss_mib,
        "db_cores": run.db_cores,
        "sim_cores": run.sim_cores,
        "other_cores": run.other_cores,
        "db_kib_per_node_day": run.db_bytes_per_node_day / 1024,
        "db_mib": run.db_bytes[1] / MIB,
    }


def _cell(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.2f}"


def _range(pair: tuple[float, float] | None) -> str:
    if pair is None:
        return "-"
    low, high = pair
    return _cell(low) if low == high else f"{_cell(low)}-{_cell(high)}"


def _ratio(value: float | None, pair: tuple[float, float] | None) -> str:
    if value is None or pair is None or math.isnan(value) or pair[0] == 0 or pair[1] == 0:
        return "-"
    low, high = value / pair[1], value / pair[0]
    return f"{low:.2f}" if math.isclose(low, high) else f"{low:.2f}-{high:.2f}"


def report(runs: list[Run], nodes: int) -> None:
    """Print the side-by-side table and the per-method latencies."""
    by = {r.database: _values(r) for r in runs}
    anchor = ANCHORS.get(nodes, {})
    rows = (
        ("nodes", "nodes"),
        ("calls/s (steady)", "calls_per_s"),
        ("p50 (ms)", "p50_ms"),
        ("p99 (ms)", "p99_ms"),
        ("max (ms)", "max_ms"),
        ("failed calls", "failures"),
        ("calls never sent", "unsent"),
        ("Manager CPU (cores)", "manager_cores"),
        ("Manager RSS peak (MiB)", "manager_rss_mib"),
        ("database CPU (cores)", "db_cores"),
        ("simulators' CPU (cores)", "sim_cores"),
        ("other load (cores)", "other_cores"),
        ("database MiB (at end)", "db_mib"),
        ("DB KiB per node per day", "db_kib_per_node_day"),
    )
    sqlite, postgres = by.get("sqlite", {}), by.get("postgres", {})
    head = ("figure", "SQLite", "PostgreSQL", "original", "SQLite/orig", "PG/orig")
    workers = ", ".join(f"{r.database} {r.workers}" for r in runs)
    print(f"\nManager at {nodes} simulated daemons (steady window), grpc.workers {workers}")
    print(f"{head[0]:<24} {head[1]:>9} {head[2]:>10} {head[3]:>9} {head[4]:>11} {head[5]:>9}")
    for label, key in rows:
        pair = (float(nodes), float(nodes)) if key == "nodes" else anchor.get(key)
        print(
            f"{label:<24} {_cell(sqlite.get(key)):>9} {_cell(postgres.get(key)):>10}"
            f" {_range(pair):>9} {_ratio(sqlite.get(key), pair):>11}"
            f" {_ratio(postgres.get(key), pair):>9}"
        )
    print("\nPer method: calls, p50 / p99 / max (ms); RegisterNode over the ramp")
    for r in runs:
        for method, row in r.figures.items():
            print(
                f"  {r.database:<8} {method:<16} {row['calls']:>7.0f}  {row['p50']:>7.2f} /"
                f" {row['p99']:>7.2f} / {row['max']:>8.2f}  failed {row['failures']:.0f}"
            )
        print(
            f"  {r.database:<8} start lag p99 {r.lag_p99_ms:.1f} ms, max {r.lag_max_ms:.1f} ms;"
            f" register requests {r.register_requests}; load average {r.loadavg}"
        )
    for r in runs:
        p99 = by.get(r.database, {}).get("p99_ms", math.nan)
        verdict = "met" if p99 < TARGET_P99_MS else "NOT met"
        print(f"target p99 < {TARGET_P99_MS:.0f} ms at {nodes} nodes, {r.database}: {verdict}")
        if r.errors or r.manager_exit:
            print(f"{r.database}: Manager exit {r.manager_exit}, errors {r.errors}")
            print("\n".join(r.stderr_tail))


def _code_version() -> str:
    """git HEAD, ``+dirty`` when ``transport/`` has uncommitted or untracked changes."""
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    status = subprocess.run(
        ["git", "status", "--porcelain", "transport"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    return head + ("+dirty" if status else "")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=60.0, help="measured window, s")
    parser.add_argument("--settle", type=float, default=10.0, help="s after the ramp")
    parser.add_argument("--compression", type=float, default=1.0)
    parser.add_argument("--databases", default="sqlite,postgres")
    parser.add_argument("--sim-procs", type=int, default=0, help="0: 1 per 10,000 nodes")
    parser.add_argument("--concurrency", type=int, default=256, help="per simulator")
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="the Manager's grpc.workers (0: 1 on SQLite, 2 on PostgreSQL)",
    )
    parser.add_argument("--quick", action="store_true", help="200 nodes, compression 10, 20 s")
    parser.add_argument("--keep", action="store_true", help="keep the tmp dirs")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.nodes, args.compression, args.duration, args.settle = 200, 10.0, 20.0, 2.0
    # One simulator carries 10,000 nodes (about 0.5 cores); a second process on a 2-core
    # machine adds a process to the run queue and measured no better.
    args.sim_procs = args.sim_procs or max(1, math.ceil(args.nodes / 10_000))
    workers = args.workers or ", ".join(f"{db} {n}" for db, n in DEFAULT_WORKERS.items())
    print(f"code {_code_version()}; grpc.workers {workers}", flush=True)
    runs = []
    for database in args.databases.split(","):
        print(f"running {database} with {args.nodes} nodes ...", flush=True)
        runs.append(run_one(database, args))
    report(runs, args.nodes)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "arguments": vars(args) | {"output": str(args.output)},
                "runs": [asdict(r) for r in runs],
                "anchors": {str(k): v for k, v in ANCHORS.items()},
                "code": _code_version(),
                "python": sys.version,
                "machine": platform.platform(),
                "cpus": os.cpu_count(),
                "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
            indent=2,
            default=str,
        )
    )
    print(f"\nwritten to {args.output}")
    return 1 if any(r.errors or r.manager_exit for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
