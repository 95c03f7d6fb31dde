"""Idle CPU of the health checks: N agents with all four checks, beside the core alone.

Run with the project's interpreter::

    .venv/bin/python benchmarks/bench_health.py [--n 300] [--idle 120] [--warmup 35]
    .venv/bin/python benchmarks/bench_health.py --quick      # N=30, idle 20 s: a smoke run
    .venv/bin/python benchmarks/bench_health.py --variants core,heartbeat,resources,http

Issue 3's target: supervising 300 agents with all four checks enabled (heartbeats every
10 s, HTTP every 30 s) may cost at most 0.2 % of one core more than the core alone,
compared in the same run. The variants run one after the other, never at the same time:

* ``core``: our daemon (``hostvisor run --config FILE``, as ``bench_core.py``
  runs it) with every check turned off as far as the configuration allows
  (``heartbeat_timeout: 0s``, ``cpu_threshold: 0``, ``memory_threshold: 0``, no HTTP or
  TCP endpoint). The health monitor still runs: its two sockets, and the resource
  sampling of every agent on the 30 s interval tick.
* ``core-nomonitor``: the same agents under ``Supervisor(..., health_checks=False)`` in
  process (``_health_inproc.py``): the core without the monitor, which the configuration
  cannot express. The difference to ``core`` is the monitor's fixed cost.
* ``checks``: the daemon with all four checks: process (always), heartbeat
  (``heartbeat_timeout: 30s``, ``heartbeat_required: true``; every agent writes one JSON
  line over ``$HOSTVISOR_HEARTBEAT_SOCKET`` every 10 s), resources (``cpu_threshold: 90``,
  ``memory_threshold: 256MiB``, ``threshold_duration: 60s``, never reached) and HTTP
  (``http_endpoint`` probed every ``interval: 30s``).
* ``checks-inproc``: the same in process, to read the monitor's own counters
  (:class:`HealthStatistics`) over the window; the daemon does not expose them.
* only with ``--variants``, to see which check costs what: ``core-inproc`` (``core`` in
  process), and ``heartbeat``, ``resources``, ``http``: the daemon with the process check
  and that one check.

The agents are a tiny C program (``_health_agent.c``, compiled with ``gcc`` at start; a
Python fallback ``_health_agent.py`` when gcc is missing) that keeps one connection to
the heartbeat socket and otherwise sleeps. Their beats are spread evenly over the 10 s
period (``--beats aligned``: all at once). The HTTP endpoints are served by one small
HTTP server in this benchmark's own process on 127.0.0.1: agent ``aI`` is probed at
``/aI``, so 300 agents need no 300 web servers, and the server counts what it receives.

For each variant: start the supervisor with N agents, wait until every agent has
started and then ``--warmup`` seconds (one 30 s tick and probe round, the first beats),
then measure the supervisor process alone over ``--idle`` seconds: CPU time from
``/proc/PID/task/*/schedstat`` (nanoseconds) polled every second, so that worker
threads that end inside the window (the monitor samples ``/proc`` in a worker thread
that Trio keeps for 10 s) still count; psutil ``cpu_times`` of the whole process as a
cross-check (10 ms ticks); voluntary context switches per second (wake-ups). Also counted
in the window: heartbeats sent by the agents (their own counters, dumped on SIGUSR1),
HTTP requests received by the probe server (per 30 s round), the monitor's counters
(in-process variants), restarts and ``unhealthy`` log lines (expected: none).

After each variant the supervisor gets SIGTERM (it stops its agents); then every process
whose command line carries the run's marker is killed by PID and its absence checked,
also after a failure or Ctrl-C. Prints one table and the verdict; writes everything to
``benchmarks/results/health.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

import psutil
import yaml
from _core_workload import agent_ids, ours_document
from bench_core import (
    _fmt,
    cpu_seconds,
    launch,
    marked_processes,
    mib,
    read_starts,
    run_quiet,
    settle,
    stop,
    tail,
    task_delta,
    task_stats,
    wait_started,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "health.json"
AGENT_C = HERE / "_health_agent.c"
AGENT_PY = HERE / "_health_agent.py"
INPROC = HERE / "_health_inproc.py"

#: Issue 3: the checks may add at most this much CPU, in percent of one core.
BUDGET_PP = 0.2
TARGET_N = 300
HEARTBEAT_EVERY_S = 10
CHECK_INTERVAL = "30s"
#: The health_check block with every check off that the configuration can turn off.
CHECKS_OFF: dict[str, object] = {
    "interval": CHECK_INTERVAL,
    "heartbeat_timeout": "0s",
    "cpu_threshold": 0,
    "memory_threshold": 0,
}
#: What each check adds to it (the process check is always on). Thresholds an idle agent
#: never reaches; each agent adds its own http_endpoint.
CHECK_SETTINGS: dict[str, dict[str, object]] = {
    "heartbeat": {"heartbeat_timeout": "30s", "heartbeat_required": True},
    "resources": {"cpu_threshold": 90, "memory_threshold": "256MiB", "threshold_duration": "60s"},
    "http": {"timeout": "5s", "failures": 3},
}
ALL_CHECKS = frozenset(CHECK_SETTINGS)
#: Poll the supervisor's per-thread counters this often during the window.
POLL_S = 1.0
#: HTTP requests further apart than this belong to different probe rounds.
ROUND_GAP_S = 5.0
DUMP_TIMEOUT_S = 15.0


# --- variants ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """One way of running the same N agents."""

    key: str
    title: str
    daemon: bool  # hostvisor run; else _health_inproc.py
    monitor: bool  # the health monitor runs (only in process can it be off)
    checks: frozenset[str] = frozenset()  # of CHECK_SETTINGS, besides the process check

    @property
    def how(self) -> str:
        return "daemon" if self.daemon else "in process"


VARIANTS = {
    v.key: v
    for v in (
        Variant("core", "core: every check off by config", True, True),
        Variant("core-nomonitor", "core: health monitor off", False, False),
        Variant("checks", "all four checks", True, True, ALL_CHECKS),
        Variant("checks-inproc", "all four checks", False, True, ALL_CHECKS),
        Variant("core-inproc", "core: every check off by config", False, True),
        Variant("heartbeat", "process + heartbeat only", True, True, frozenset({"heartbeat"})),
        Variant("resources", "process + resources only", True, True, frozenset({"resources"})),
        Variant("http", "process + HTTP only", True, True, frozenset({"http"})),
    )
}
DEFAULT_VARIANTS = ("core", "core-nomonitor", "checks", "checks-inproc")


def health_document(
    root: Path, n: int, variant: Variant, agent_argv: list[str], port: int, spread: bool
) -> dict[str, Any]:
    """The configuration: bench_core's settings, our agents, and the variant's checks."""
    starts, stats = root / "starts", root / "stats"
    document = ours_document(str(root / "ours"), str(starts), n, root.name)
    block = dict(CHECKS_OFF)
    for check in sorted(variant.checks):
        block.update(CHECK_SETTINGS[check])
    document["agent_defaults"]["health_check"] = block
    every = HEARTBEAT_EVERY_S if "heartbeat" in variant.checks else 0
    agents: list[dict[str, object]] = []
    for i, agent in enumerate(agent_ids(n)):
        phase = every * i / n if spread else 0.0
        entry: dict[str, object] = {
            "id": agent,
            "binary_path": agent_argv[0],
            "args": [
                *agent_argv[1:],
                str(starts / agent),
                str(every),
                f"{phase:.3f}",
                str(stats / agent),
            ],
        }
        if "http" in variant.checks:
            entry["health_check"] = {"http_endpoint": f"http://127.0.0.1:{port}/{agent}"}
        agents.append(entry)
    document["agents"] = agents
    return document


def build_agent(build_dir: Path) -> tuple[list[str], str]:
    """The agent's command (binary and leading arguments) and a description of it."""
    gcc = shutil.which("gcc")
    if gcc is not None:
        binary = build_dir / "health-agent"
        run_quiet([gcc, "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(binary), str(AGENT_C)])
        return [str(binary)], "C (" + run_quiet([gcc, "-dumpfullversion"]).strip() + ")"
    print("gcc not found: the agents are Python processes (_health_agent.py)", flush=True)
    return [sys.executable, "-S", str(AGENT_PY)], f"Python {platform.python_version()}"


# --- the HTTP endpoint -------------------------------------------------------------------


class ProbeServer(ThreadingHTTPServer):
    """Answers every GET with 200 and records when each path was asked for."""

    daemon_threads = True
    request_queue_size = 512  # up to 32 probes connect at once

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ProbeHandler)
        self._lock = threading.Lock()
        self._hits: list[tuple[float, str]] = []

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def record(self, path: str) -> None:
        with self._lock:
            self._hits.append((time.monotonic(), path))

    def hits_between(self, t0: float, t1: float) -> list[tuple[float, str]]:
        with self._lock:
            return [(at, path) for at, path in self._hits if t0 <= at < t1]


class _ProbeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        assert isinstance(self.server, ProbeServer)
        self.server.record(self.path)
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def probe_server() -> Iterator[ProbeServer]:
    server = ProbeServer()
    thread = threading.Thread(target=server.serve_forever, name="probe-server", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def rounds(times: Sequence[float]) -> list[int]:
    """Requests per probe round: runs of requests less than ROUND_GAP_S apart."""
    counts: list[int] = []
    last: float | None = None
    for at in sorted(times):
        if last is None or at - last > ROUND_GAP_S:
            counts.append(0)
        counts[-1] += 1
        last = at
    return counts


# --- counters of the agents and of the in-process supervisor ------------------------------


def dump_agent_counters(marker: str, stats_dir: Path) -> dict[str, tuple[int, int, int]]:
    """SIGUSR1 to every agent of the run; their (sent, failed, connects) by agent id."""
    prefix = str(stats_dir) + os.sep
    targets: dict[str, tuple[psutil.Process, int | None]] = {}
    for proc in marked_processes(marker):
        try:
            cmdline = proc.cmdline()
        except psutil.NoSuchProcess:
            continue
        if cmdline and cmdline[-1].startswith(prefix):
            path = Path(cmdline[-1])
            with contextlib.suppress(FileNotFoundError):
                targets[path.name] = (proc, path.stat().st_ino)
                continue
            targets[path.name] = (proc, None)
    for proc, _ in targets.values():
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGUSR1)
    found: dict[str, tuple[int, int, int]] = {}
    deadline = time.monotonic() + DUMP_TIMEOUT_S
    while len(found) < len(targets) and time.monotonic() < deadline:
        for agent, (_, inode) in targets.items():
            path = stats_dir / agent
            if agent in found:
                continue
            try:
                if path.stat().st_ino == inode:
                    continue  # not rewritten yet (each dump is a new file, renamed)
                _, sent, failed, connects = map(int, path.read_text(encoding="ascii").split())
            except (FileNotFoundError, ValueError):
                continue
            found[agent] = (sent, failed, connects)
        time.sleep(0.02)
    return found


def request_statistics(proc: subprocess.Popen[bytes], path: Path, count: int) -> dict[str, Any]:
    """SIGUSR2 to the in-process runner; its ``count``-th statistics line."""
    proc.send_signal(signal.SIGUSR2)
    deadline = time.monotonic() + DUMP_TIMEOUT_S
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError):
            lines = path.read_text(encoding="utf-8").splitlines()
            if len(lines) >= count:
                found: dict[str, Any] = json.loads(lines[count - 1])
                return found
        time.sleep(0.02)
    raise RuntimeError(f"no statistics from the in-process runner within {DUMP_TIMEOUT_S} s")


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, int]:
    flat: dict[str, int] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        elif isinstance(value, int):
            flat[prefix + key] = value
    return flat


def counter_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    """Counters' growth between two snapshots (gauges such as connections_active: the end)."""
    old, new = flatten(before), flatten(after)
    return {
        key: value if key.endswith("_active") else value - old.get(key, 0)
        for key, value in new.items()
    }


# --- measuring one variant ---------------------------------------------------------------


@dataclass
class VariantResult:
    """Everything measured for one variant."""

    key: str
    title: str
    how: str
    n: int
    source_sha256: str = ""  # supervisor/**/*.py when this variant was launched
    startup_s: float | None = None
    rss_bytes: int | None = None
    threads_at_window: int | None = None
    idle_s: float | None = None
    cpu_pct: float | None = None  # schedstat per thread, polled: percent of one core
    cpu_pct_ticks: float | None = None  # psutil cpu_times of the whole process
    wakeups_per_s: float | None = None  # voluntary context switches
    threads_seen: int | None = None  # threads alive at some poll in the window
    threads_ended: int | None = None  # ... of which ended before the window's end
    http_requests: int | None = None  # received by the probe server in the window
    http_rounds: list[int] = field(default_factory=list)
    http_paths: int | None = None  # distinct agents probed in the window
    beats_sent: int | None = None  # by the agents, between the dumps around the window
    beats_failed: int | None = None
    connects: int | None = None
    agents_counted: int | None = None
    health: dict[str, int] | None = None  # HealthStatistics over the window (in process)
    restarts: int | None = None
    unhealthy_logged: int | None = None
    stop_s: float | None = None
    exit_code: int | None = None
    leaked: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stderr_tail: list[str] = field(default_factory=list)


def watch_idle(pid: int, seconds: float) -> tuple[int, int, float, int, int]:
    """Watch a process for ``seconds``; (ns on CPU, voluntary switches, elapsed, threads
    seen, threads ended). Each thread's last polled counters count, so a thread that ends
    in the window loses at most one poll interval (it is only missed if it lives shorter
    than that)."""
    first = task_stats(pid)
    last = dict(first)
    started = time.monotonic()
    end = started + seconds
    while (now := time.monotonic()) < end:
        time.sleep(min(POLL_S, end - now))
        last.update(task_stats(pid))
    elapsed = time.monotonic() - started
    alive = task_stats(pid)
    last.update(alive)
    run_ns, switches = task_delta(first, last)
    return run_ns, switches, elapsed, len(last), len(set(last) - set(alive))


def count_unhealthy(path: Path) -> int:
    try:
        return path.read_text(errors="replace").count(": unhealthy: ")
    except FileNotFoundError:
        return 0


def run_variant(
    variant: Variant,
    n: int,
    agent_argv: list[str],
    server: ProbeServer,
    idle_s: float,
    warmup_s: float,
    spread: bool,
    keep: bool,
) -> VariantResult:
    """Start one supervisor with N agents, measure its idle window, stop it, clean up."""
    result = VariantResult(
        key=variant.key, title=variant.title, how=variant.how, n=n, source_sha256=source_digest()
    )
    root = Path(tempfile.mkdtemp(prefix=f"hvbench-health-{variant.key}-{n}-"))
    marker = root.name  # in every command line of the run (paths of files under root)
    starts, stats = root / "starts", root / "stats"
    starts.mkdir()
    stats.mkdir()
    ids = agent_ids(n)
    document = health_document(root, n, variant, agent_argv, server.port, spread)
    statistics = root / "statistics.jsonl"
    if variant.daemon:
        config = root / "daemon.yaml"
        config.write_text(yaml.safe_dump(document, sort_keys=False))
        run_quiet([sys.executable, "-m", "transport.daemon", "check-config", str(config)])
        argv = [sys.executable, "-m", "transport.daemon", "run", "--config", str(config)]
    else:
        config = root / "config.json"
        config.write_text(json.dumps(document, indent=1))
        mode = "on" if variant.monitor else "off"
        argv = [sys.executable, str(INPROC), str(config), mode, str(statistics)]
    proc, launched = launch(root, argv)
    try:
        first = wait_started(starts, ids, proc)
        result.startup_s = settle(first, launched, warmup_s)
        me = psutil.Process(proc.pid)
        result.rss_bytes = int(me.memory_info().rss)
        result.threads_at_window = int(me.num_threads())

        beating = "heartbeat" in variant.checks
        beats0 = dump_agent_counters(marker, stats) if beating else {}
        health0 = None if variant.daemon else request_statistics(proc, statistics, 1)
        ticks0, t0 = cpu_seconds(me), time.monotonic()
        run_ns, switches, elapsed, seen, ended = watch_idle(proc.pid, idle_s)
        ticks1, t1 = cpu_seconds(me), time.monotonic()
        health1 = None if variant.daemon else request_statistics(proc, statistics, 2)
        beats1 = dump_agent_counters(marker, stats) if beating else {}

        result.idle_s = elapsed
        result.cpu_pct = 100 * run_ns / 1e9 / elapsed
        result.cpu_pct_ticks = 100 * (ticks1 - ticks0) / (t1 - t0)
        result.wakeups_per_s = switches / elapsed
        result.threads_seen, result.threads_ended = seen, ended
        hits = server.hits_between(t0, t1)
        result.http_requests = len(hits)
        result.http_rounds = rounds([at for at, _ in hits])
        result.http_paths = len({path for _, path in hits})
        if beating:
            common = beats0.keys() & beats1.keys()
            result.agents_counted = len(common)
            result.beats_sent = sum(beats1[a][0] - beats0[a][0] for a in common)
            result.beats_failed = sum(beats1[a][1] - beats0[a][1] for a in common)
            result.connects = sum(beats1[a][2] - beats0[a][2] for a in common)
            if len(common) < n:
                result.errors.append(f"only {len(common)}/{n} agents reported their counters")
        if health0 is not None and health1 is not None and health1["health"] is not None:
            result.health = counter_delta(health0["health"], health1["health"])
        result.restarts = sum(max(0, len(read_starts(starts / a)) - 1) for a in ids)
        if proc.poll() is not None:
            raise RuntimeError(f"supervisor exited ({proc.returncode}) during the window")
    except Exception as exc:
        result.errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        result.exit_code, result.stop_s, error, result.leaked = stop(proc, marker)
        result.errors += error
        result.unhealthy_logged = count_unhealthy(root / "supervisor.stderr")
        if result.errors or result.leaked or result.exit_code:
            result.stderr_tail = tail(root / "supervisor.stderr")
        if keep:
            print(f"  kept {root}", flush=True)
        else:
            shutil.rmtree(root, ignore_errors=True)
    return result


# --- report ------------------------------------------------------------------------------


#: Further differences reported when both variants ran: (label, variant, minus variant).
COMPARISONS = (
    *(
        (f"{key} check alone (daemon, process + {key} - core)", key, "core")
        for key in ("heartbeat", "resources", "http")
    ),
    (
        "health monitor's fixed cost (core, daemon - monitor off, in process)",
        "core",
        "core-nomonitor",
    ),
    (
        "health monitor's fixed cost in process (checks off - monitor off)",
        "core-inproc",
        "core-nomonitor",
    ),
    (
        "health checks in all, in process (all four - monitor off)",
        "checks-inproc",
        "core-nomonitor",
    ),
)


def _diff(b: VariantResult | None, a: VariantResult | None) -> float | None:
    if b is None or a is None or b.cpu_pct is None or a.cpu_pct is None:
        return None
    return b.cpu_pct - a.cpu_pct


def report(
    results: list[VariantResult], n: int, idle_s: float, warmup_s: float, summary: str
) -> list[str]:
    """Print the tables; return the verdicts."""
    print(f"\n{summary}")
    print(
        f"\nIdle CPU of the supervisor process, N={n}: {idle_s:g} s window after a"
        f" {warmup_s:g} s warm-up (percent of one core)"
    )
    print(
        f"  {'variant':<34} {'run by':<10} {'CPU %':>7} {'ticks %':>8} {'wake/s':>7}"
        f" {'threads':>8} {'RSS MiB':>8}"
    )
    for r in results:
        threads = f"{r.threads_at_window}/{r.threads_seen}" if r.threads_seen else "-"
        print(
            f"  {r.title:<34} {r.how:<10} {_fmt(r.cpu_pct, 3):>7} {_fmt(r.cpu_pct_ticks, 3):>8}"
            f" {_fmt(r.wakeups_per_s, 2):>7} {threads:>8} {_fmt(mib(r.rss_bytes), 1):>8}"
        )
    print(
        "  (CPU %: schedstat ns, all threads, polled each second; ticks %: psutil cpu_times,"
        " 10 ms ticks;\n   wake/s: voluntary context switches; threads: at the window's start"
        " / seen in it)"
    )

    print("\nActivity in the window")
    for r in results:
        parts = []
        if r.beats_sent is not None:
            parts.append(
                f"heartbeats sent {r.beats_sent} by {r.agents_counted} agents"
                f" ({r.beats_failed} failed, {r.connects} new connections)"
            )
        if r.http_requests:
            parts.append(
                f"HTTP requests received {r.http_requests} for {r.http_paths} agents,"
                f" per round {r.http_rounds}"
            )
        parts.append(f"restarts {r.restarts}, 'unhealthy' logged {r.unhealthy_logged}")
        print(f"  {r.key} ({r.how}): " + "; ".join(parts))
    for r in results:
        if r.health is not None:
            shown = {k: v for k, v in r.health.items() if v or k.startswith("heartbeat.heart")}
            print(f"  {r.key}: health monitor counters over the window: {shown}")

    by_key = {r.key: r for r in results}
    verdicts = []
    core, checks = by_key.get("core"), by_key.get("checks")
    cost = _diff(checks, core)
    if cost is not None and core is not None and checks is not None:
        ok = cost <= BUDGET_PP
        ratio = "-" if not core.cpu_pct else f"{(core.cpu_pct + cost) / core.cpu_pct:.1f}"
        verdicts.append(
            f"checks' cost at N={n} (daemon, all four checks - core): {_fmt(checks.cpu_pct, 3)}"
            f" % - {_fmt(core.cpu_pct, 3)} % = {cost:+.3f} pp of one core; budget {BUDGET_PP} pp:"
            f" {'PASS' if ok else 'FAIL'}; ratio checks/core {ratio}"
            + ("" if n == TARGET_N else f" (the target is stated for N={TARGET_N})")
        )
    for label, key, base in COMPARISONS:
        diff = _diff(by_key.get(key), by_key.get(base))
        if diff is not None:
            verdicts.append(f"{label}: {diff:+.3f} pp")
    print("\nVerdict:")
    for verdict in verdicts:
        print(f"  {verdict}")

    sources = {r.source_sha256 for r in results}
    if len(sources) > 1:
        changed = ", ".join(f"{r.key} {r.source_sha256}" for r in results)
        verdicts.append(f"INVALID: supervisor/ changed during the run ({changed})")
        print(f"  {verdicts[-1]}")

    problems = [r for r in results if r.errors or r.leaked or r.exit_code]
    for r in problems:
        print(f"\nPROBLEM {r.key} ({r.how}): exit code {r.exit_code}")
        for line in r.errors:
            print(f"  {line}")
        if r.leaked:
            print(f"  {len(r.leaked)} process(es) left after the supervisor exited, e.g.:")
            for line in r.leaked[:5]:
                print(f"    {line}")
        for line in r.stderr_tail:
            print(f"  | {line}")
    if not problems:
        print("Clean-up: every supervisor exited with 0 and left no process behind.")
    return verdicts


# --- main --------------------------------------------------------------------------------


def source_digest() -> str:
    """A hash of ``supervisor/**/*.py``: which code of ours was measured."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "supervisor").rglob("*.py")):
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def versions_of(agent: str) -> dict[str, str]:
    import trio  # only for its version: the benchmark itself does not run Trio

    found = {
        "python": platform.python_version(),
        "trio": trio.__version__,
        "psutil": psutil.__version__,
        "kernel": platform.release(),
        "cpus": str(os.cpu_count()),
        "agent": agent,
        "ours_source_sha256": source_digest(),
    }
    found["summary"] = (
        f"Python {found['python']}, trio {found['trio']}, Linux {found['kernel']},"
        f" {found['cpus']} CPUs; agents: {agent}; supervisor/ sha256 at start"
        f" {found['ours_source_sha256']}"
    )
    return found


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through every clean-up


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--n", type=int, help="number of agents (default 300)")
    parser.add_argument("--idle", type=float, help="idle window in seconds (default 120)")
    parser.add_argument("--warmup", type=float, help="seconds after start-up (default 35)")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: N=30, idle 20 s, warm-up 12 s"
    )
    parser.add_argument(
        "--variants",
        default=",".join(DEFAULT_VARIANTS),
        help=f"comma-separated, run in this order, from {', '.join(VARIANTS)}",
    )
    parser.add_argument(
        "--beats",
        choices=("spread", "aligned"),
        default="spread",
        help="agents' heartbeats spread evenly over the 10 s period, or all at once",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directories")
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON results file")
    args = parser.parse_args(argv)
    n = args.n if args.n is not None else 30 if args.quick else 300
    idle_s = args.idle if args.idle is not None else 20.0 if args.quick else 120.0
    warmup_s = args.warmup if args.warmup is not None else 12.0 if args.quick else 35.0
    keys = [key.strip() for key in args.variants.split(",") if key.strip()]
    unknown = [key for key in keys if key not in VARIANTS]
    if unknown or not keys:
        parser.error(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    if n < 1 or idle_s <= 0 or warmup_s < 0:
        parser.error("--n and --idle must be positive, --warmup not negative")
    signal.signal(signal.SIGTERM, _terminate)
    began = time.monotonic()

    build_dir = Path(tempfile.mkdtemp(prefix="hvbench-health-build-"))
    try:
        agent_argv, agent = build_agent(build_dir)
        versions = versions_of(agent)
        print(versions["summary"], flush=True)
        run_quiet([sys.executable, "-c", "import transport.daemon"])  # warm the page cache
        results: list[VariantResult] = []
        with probe_server() as server:
            for key in keys:
                variant = VARIANTS[key]
                print(f"{variant.key}: {variant.title} ({variant.how}), N={n} ...", flush=True)
                result = run_variant(
                    variant,
                    n,
                    agent_argv,
                    server,
                    idle_s,
                    warmup_s,
                    args.beats == "spread",
                    args.keep,
                )
                results.append(result)
                print(
                    f"  start-up {_fmt(result.startup_s, 2)} s, idle CPU {_fmt(result.cpu_pct, 3)}"
                    f" % ({_fmt(result.cpu_pct_ticks, 3)} % by ticks),"
                    f" {_fmt(result.wakeups_per_s, 2)} wake-ups/s"
                    + (f", ERRORS {result.errors}" if result.errors else ""),
                    flush=True,
                )
    finally:
        shutil.rmtree(build_dir, ignore_errors=True)

    verdicts = report(results, n, idle_s, warmup_s, versions["summary"])
    elapsed = time.monotonic() - began
    print(f"\n(benchmark took {elapsed:.0f} s)")

    args.output.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": "bench_health",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "options": {
            "n": n,
            "idle_s": idle_s,
            "warmup_s": warmup_s,
            "variants": keys,
            "beats": args.beats,
        },
        "versions": versions,
        "settings": {
            "budget_pp": BUDGET_PP,
            "heartbeat_every_s": HEARTBEAT_EVERY_S,
            "checks_off": CHECKS_OFF,
            "check_settings": CHECK_SETTINGS,
            "poll_s": POLL_S,
        },
        "runs": [asdict(r) for r in results],
        "verdicts": verdicts,
        "elapsed_s": elapsed,
    }
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    print(f"results written to {args.output}")
    return 1 if any(r.errors or r.leaked for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
