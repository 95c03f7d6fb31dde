"""The supervision core side by side with supervisord and Circus: same workload, one run.

Run with the project's interpreter::

    .venv/bin/python benchmarks/bench_core.py [--n 10,100,300] [--kills 20] [--idle 30]
    .venv/bin/python benchmarks/bench_core.py --quick      # N=10, idle 5 s: a smoke run

For each N, our daemon (``hostvisor run --config FILE``, without gRPC), supervisord
(``supervisord -n -c FILE``) and Circus (``circusd FILE``) each supervise N copies of a
tiny shell child that appends its PID and start time (bash's ``$EPOCHREALTIME``) to its
own file, then ``exec``s ``sleep``. supervisord and Circus come from PyPI, each in its own
virtual environment built from this interpreter (``benchmarks/.venv-supervisord``,
``benchmarks/.venv-circus``, created or reused; supervisord's import name is
``supervisor``, like ours); when Circus cannot be installed or run, its columns are left
empty and the reason is printed. They run one after the other, never at the same time,
each with its modules' bytecode cached (as installed programs have it; see
``supervisor_env``). Measured, per supervisor:

* start-up time: from launching the supervisor process until every child has written
  its first line (the latest child's own timestamp minus the launch time);
* RSS of the supervisor process alone (psutil), once start-up has settled;
* idle CPU of the supervisor process alone over ``--idle`` seconds in which nothing
  happens (psutil ``cpu_times``, percent of one core; also from ``/proc/PID/task/*/
  schedstat``, nanosecond resolution, and voluntary context switches per second);
* restart latency: ``time.time()`` just before ``os.kill(pid, SIGKILL)`` of one child to
  its replacement's ``$EPOCHREALTIME``, ``--kills`` samples, median and p95 (nearest
  rank). Children are killed round-robin over distinct agents, an agent only once it has
  run 3.5 s (longer than our ``reset_after`` of 2 s and supervisord's ``startsecs`` of
  1 s), so every restart is a "first crash after a stable run" for both.

After each run the supervisor gets SIGTERM (both stop their children on exit); then
every process whose command line carries the run's unique marker is counted (those are
leaks), killed by PID, and the absence of any is checked; the temporary directory is
deleted. Our RSS is also measured for the supervision core alone, in process
(``_core_inproc.py``), with the bare-interpreter and ``import trio`` baselines.

Prints one table per figure (rows N; columns ours, supervisord, Circus, and the ratios
ours/supervisord and ours/Circus) and writes everything, raw samples included, to
``benchmarks/results/core.json``.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil
import yaml
from _core_workload import (
    RESET_AFTER,
    START_SECONDS,
    agent_ids,
    circus_config,
    ours_document,
    read_vmrss,
    supervisord_config,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SUPERVISORD_VENV = HERE / ".venv-supervisord"
CIRCUS_VENV = HERE / ".venv-circus"
RESULTS = HERE / "results" / "core.json"
#: Bytecode of every supervisor's modules, cached here (see supervisor_env).
PYCACHE = HERE / "results" / "pycache"

OURS = "ours"
SUPERVISORD = "supervisord"
CIRCUS = "circus"
#: The columns of every table, in order; ratios are ours over each of the others.
IMPLS = (OURS, SUPERVISORD, CIRCUS)

#: After the last child's first start, wait this long before measuring RSS and idle CPU:
#: every child is past start_seconds/startsecs, start-up work is over.
SETTLE_S = 3.0
#: A child is killed only after it has run this long (reset_after 2 s, startsecs 1 s).
MIN_UPTIME_S = RESET_AFTER + 1.5
#: Pause between one replacement's start and the next kill.
KILL_GAP_S = 0.25
#: A replacement not seen within this time counts as a failed restart.
RESTART_TIMEOUT_S = 15.0
STARTUP_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 60.0
#: A supervisor still running this long after SIGTERM gets it again: Circus (0.19, 300
#: watchers) drops a SIGTERM that arrives while its periodic check holds its command lock
#: ("arbiter is already running ... command") and would never exit.
RESEND_SIGTERM_S = 10.0
POLL_S = 0.002
MIB = 1024 * 1024


# --- utilities ---------------------------------------------------------------------------


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (p95 of 20 samples is the 19th smallest)."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def read_starts(path: Path) -> list[tuple[int, float]]:
    """The complete ``PID EPOCHREALTIME`` lines of one starts file (none if absent)."""
    try:
        data = path.read_text(encoding="ascii")
    except FileNotFoundError:
        return []
    entries = []
    for line in data.splitlines(keepends=True):
        if line.endswith("\n"):
            pid, started = line.split()
            entries.append((int(pid), float(started)))
    return entries


def cpu_seconds(proc: psutil.Process) -> float:
    """User + system CPU time of the process itself (children excluded), from psutil."""
    times = proc.cpu_times()
    return float(times.user) + float(times.system)


def task_stats(pid: int) -> dict[int, tuple[int, int]]:
    """Per live thread of ``pid``: (ns on CPU, voluntary context switches)."""
    stats = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat", encoding="ascii") as file:
                run_ns = int(file.read().split()[0])
            with open(f"/proc/{pid}/task/{task}/status", encoding="ascii") as file:
                switches = next(
                    int(line.split()[1])
                    for line in file
                    if line.startswith("voluntary_ctxt_switches:")
                )
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        stats[int(task)] = (run_ns, switches)
    return stats


def task_delta(
    before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]]
) -> tuple[int, int]:
    """(ns, switches) spent between two snapshots by the threads alive at the second.

    Threads that ended in between are left out: their counters vanish with them, and
    subtracting them would make the figure negative. Threads that started in between
    count from zero.
    """
    run_ns = switches = 0
    for tid, (ns1, sw1) in after.items():
        ns0, sw0 = before.get(tid, (0, 0))
        run_ns += ns1 - ns0
        switches += sw1 - sw0
    return run_ns, switches


def marked_processes(marker: str) -> list[psutil.Process]:
    """Every process whose command line contains ``marker`` (the run's unique name)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if proc.pid != os.getpid() and any(marker in part for part in cmdline):
            found.append(proc)
    return found


def kill_marked(marker: str) -> list[str]:
    """Kill (by PID, SIGKILL) every process of the run; return what was left before."""
    left: list[str] = []
    for _ in range(10):  # a dying supervisor may still spawn: repeat until none is left
        procs = marked_processes(marker)
        if not procs:
            return left
        for proc in procs:
            try:
                left.append(f"{proc.pid} {' '.join(proc.cmdline())[:120]}")
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(procs, timeout=5)
    survivors = marked_processes(marker)
    if survivors:
        raise RuntimeError(f"processes of run {marker} survive SIGKILL: {survivors}")
    return left


def tail(path: Path, lines: int = 25) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except FileNotFoundError:
        return []


def supervisor_env() -> dict[str, str]:
    """The environment of every supervisor run: ours, with bytecode caching on.

    Installed programs run from compiled bytecode (pip compiles it), but a development
    shell may set PYTHONDONTWRITEBYTECODE, and then our daemon would compile its ~100
    source files at every start (about 0.15 s) while supervisord and Circus, installed by
    pip, would not. So caching is switched on, into ``benchmarks/results/pycache`` (not
    the source tree), for all three alike; the warm-up run before the measurements fills
    the cache.
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    return env


def run_quiet(argv: Sequence[str], timeout: float = 600, env: dict[str, str] | None = None) -> str:
    """Run a command; return its stdout; raise with its output if it fails."""
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, check=False, env=env
    )
    if done.returncode != 0:
        raise RuntimeError(f"{argv} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


# --- the supervisors ---------------------------------------------------------------------


def ensure_supervisord_venv() -> tuple[Path, str]:
    """Create (or reuse) ``benchmarks/.venv-supervisord`` with supervisord from PyPI."""
    python = SUPERVISORD_VENV / "bin" / "python"
    supervisord = SUPERVISORD_VENV / "bin" / "supervisord"
    probe = "import importlib.metadata as m, supervisor.supervisord; print(m.version('supervisor'))"
    if python.exists() and supervisord.exists():
        try:
            return supervisord, run_quiet([str(python), "-I", "-c", probe]).strip()
        except RuntimeError:
            pass
    print(f"creating {SUPERVISORD_VENV} and installing supervisor from PyPI ...", flush=True)
    run_quiet([sys.executable, "-m", "venv", "--clear", str(SUPERVISORD_VENV)])
    run_quiet([str(python), "-m", "pip", "install", "--quiet", "supervisor"])
    return supervisord, run_quiet([str(python), "-I", "-c", probe]).strip()


def ensure_circus_venv() -> tuple[Path | None, str]:
    """Create (or reuse) ``benchmarks/.venv-circus`` with Circus from PyPI.

    Returns:
        ``circusd`` and Circus's version, or None and why Circus cannot be used here.
    """
    python = CIRCUS_VENV / "bin" / "python"
    circusd = CIRCUS_VENV / "bin" / "circusd"
    probe = "import importlib.metadata as m, circus.arbiter; print(m.version('circus'))"
    if python.exists() and circusd.exists():
        try:
            return circusd, run_quiet([str(python), "-I", "-c", probe]).strip()
        except RuntimeError:
            pass
    print(f"creating {CIRCUS_VENV} and installing circus from PyPI ...", flush=True)
    try:
        run_quiet([sys.executable, "-m", "venv", "--clear", str(CIRCUS_VENV)])
        run_quiet([str(python), "-m", "pip", "install", "--quiet", "circus"])
        return circusd, run_quiet([str(python), "-I", "-c", probe]).strip()
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        return None, f"Circus could not be installed or imported here ({reason})"


def ours_command(root: Path, starts: Path, n: int, marker: str) -> list[str]:
    config = root / "daemon.yaml"
    document = ours_document(str(root / "ours"), str(starts), n, marker)
    config.write_text(yaml.safe_dump(document, sort_keys=False))
    run_quiet([sys.executable, "-m", "transport.daemon", "check-config", str(config)])
    return [sys.executable, "-m", "transport.daemon", "run", "--config", str(config)]


def supervisord_command(supervisord: Path) -> Callable[[Path, Path, int, str], list[str]]:
    def command(root: Path, starts: Path, n: int, marker: str) -> list[str]:
        (root / "logs").mkdir()
        config = root / "supervisord.conf"
        config.write_text(supervisord_config(str(root), str(starts), n, marker))
        return [str(supervisord), "-n", "-c", str(config)]

    return command


def circus_command(circusd: Path) -> Callable[[Path, Path, int, str], list[str]]:
    def command(root: Path, starts: Path, n: int, marker: str) -> list[str]:
        (root / "logs").mkdir()
        config = root / "circus.ini"
        config.write_text(circus_config(str(root), str(starts), n, marker))
        return [str(circusd), str(config)]

    return command


# --- one run -----------------------------------------------------------------------------


@dataclass
class RunResult:
    """Everything measured for one supervisor at one N."""

    impl: str
    n: int
    startup_s: float | None = None
    rss_bytes: int | None = None
    uss_bytes: int | None = None
    idle_s: float | None = None
    idle_cpu_pct: float | None = None  # psutil cpu_times, percent of one core
    idle_cpu_pct_schedstat: float | None = None  # /proc/PID/task/*/schedstat
    idle_wakeups_per_s: float | None = None  # voluntary context switches
    threads: int | None = None  # when RSS is measured
    threads_ended_in_idle: int | None = None
    threads_after_idle: int | None = None
    rss_after_idle_bytes: int | None = None
    restart_latencies_s: list[float] = field(default_factory=list)
    restart_failures: list[str] = field(default_factory=list)
    rss_after_kills_bytes: int | None = None
    stop_s: float | None = None
    exit_code: int | None = None
    leaked: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stderr_tail: list[str] = field(default_factory=list)


def wait_started(
    starts: Path, ids: list[str], proc: subprocess.Popen[bytes]
) -> dict[str, tuple[int, float]]:
    """Wait until every agent's starts file has its first line; return those lines."""
    first: dict[str, tuple[int, float]] = {}
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while len(first) < len(ids):
        for agent in ids:
            if agent not in first:
                entries = read_starts(starts / agent)
                if entries:
                    first[agent] = entries[0]
        if proc.poll() is not None:
            raise RuntimeError(f"supervisor exited ({proc.returncode}) during start-up")
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(first)}/{len(ids)} agents started")
        time.sleep(0.01)
    return first


def launch(root: Path, argv: Sequence[str]) -> tuple[subprocess.Popen[bytes], float]:
    """Start a supervisor in its own session, output to files in ``root``; return it and when."""
    with (
        (root / "supervisor.stdout").open("wb") as stdout,
        (root / "supervisor.stderr").open("wb") as stderr,
    ):
        launched = time.time()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            cwd=root,
            env=supervisor_env(),
            start_new_session=True,
        )
    return proc, launched


def settle(first: dict[str, tuple[int, float]], launched: float, settle_s: float) -> float:
    """Wait until ``settle_s`` after the last agent started; return the start-up time."""
    last_start = max(started for _, started in first.values())
    time.sleep(max(0.0, last_start + settle_s - time.time()))
    return last_start - launched


def stop(
    proc: subprocess.Popen[bytes], marker: str
) -> tuple[int | None, float | None, list[str], list[str]]:
    """SIGTERM the supervisor and wait; then kill whatever carries the run's marker.

    Returns:
        Its exit code and stop time (None if it had to be killed), errors, and the
        processes that were left behind.
    """
    stopped = time.monotonic()
    deadline = stopped + STOP_TIMEOUT_S
    exit_code, stop_s, errors = None, None, []
    sent = 0
    try:
        while True:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                sent += 1
            try:
                wait_s = max(0.0, min(RESEND_SIGTERM_S, deadline - time.monotonic()))
                exit_code = proc.wait(timeout=wait_s)
                stop_s = time.monotonic() - stopped
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() >= deadline:
                    errors.append(f"supervisor still running {STOP_TIMEOUT_S} s after SIGTERM")
                    break
        if sent > 1:
            print(f"  (SIGTERM sent {sent} times before the supervisor exited)", flush=True)
    finally:
        leaked = kill_marked(marker)  # verifies that none is left
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return exit_code, stop_s, errors, leaked


def kill_order(n: int, kills: int) -> list[str]:
    """Round-robin over agents spread evenly across all N (distinct when kills <= N)."""
    if kills <= n:
        return [f"a{k * n // kills}" for k in range(kills)]
    return [f"a{k % n}" for k in range(kills)]


def measure_restarts(
    starts: Path, marker: str, kills: int, n: int, proc: subprocess.Popen[bytes], result: RunResult
) -> None:
    for agent in kill_order(n, kills):
        path = starts / agent
        before = read_starts(path)
        pid, started = before[-1]
        time.sleep(max(KILL_GAP_S, started + MIN_UPTIME_S - time.time()))
        try:
            child = psutil.Process(pid)
            if marker not in " ".join(child.cmdline()):
                raise psutil.NoSuchProcess(pid)
        except psutil.NoSuchProcess:
            result.restart_failures.append(f"{agent}: pid {pid} not running before the kill")
            continue
        killed_at = time.time()
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + RESTART_TIMEOUT_S
        while True:
            entries = read_starts(path)
            if len(entries) > len(before):
                result.restart_latencies_s.append(entries[len(before)][1] - killed_at)
                break
            if proc.poll() is not None:
                raise RuntimeError(f"supervisor exited ({proc.returncode}) during the kills")
            if time.monotonic() > deadline:
                result.restart_failures.append(f"{agent}: no restart in {RESTART_TIMEOUT_S} s")
                break
            time.sleep(POLL_S)


def run_one(
    impl: str,
    command: Callable[[Path, Path, int, str], list[str]],
    n: int,
    kills: int,
    idle_s: float,
    keep: bool,
) -> RunResult:
    """Launch one supervisor with N agents, measure it, stop it, clean up."""
    result = RunResult(impl=impl, n=n)
    root = Path(tempfile.mkdtemp(prefix=f"hvbench-{impl}-{n}-"))
    marker = root.name  # unique: in every command line of the run
    starts = root / "starts"
    starts.mkdir()
    ids = agent_ids(n)
    try:
        argv = command(root, starts, n, marker)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    proc, launched = launch(root, argv)
    try:
        first = wait_started(starts, ids, proc)
        result.startup_s = settle(first, launched, SETTLE_S)

        me = psutil.Process(proc.pid)
        result.rss_bytes = int(me.memory_info().rss)
        result.uss_bytes = int(me.memory_full_info().uss)
        result.threads = int(me.num_threads())

        cpu0, tasks0, t0 = cpu_seconds(me), task_stats(proc.pid), time.monotonic()
        time.sleep(idle_s)
        cpu1, tasks1, t1 = cpu_seconds(me), task_stats(proc.pid), time.monotonic()
        run_ns, switches = task_delta(tasks0, tasks1)
        result.idle_s = t1 - t0
        result.idle_cpu_pct = 100 * (cpu1 - cpu0) / (t1 - t0)
        result.idle_cpu_pct_schedstat = 100 * run_ns / 1e9 / (t1 - t0)
        result.idle_wakeups_per_s = switches / (t1 - t0)
        result.threads_ended_in_idle = len(set(tasks0) - set(tasks1))
        result.threads_after_idle = int(me.num_threads())
        result.rss_after_idle_bytes = int(me.memory_info().rss)

        measure_restarts(starts, marker, kills, n, proc, result)
        result.rss_after_kills_bytes = int(me.memory_info().rss)
    except Exception as exc:
        result.errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        result.exit_code, result.stop_s, error, result.leaked = stop(proc, marker)
        result.errors += error
        if result.errors or result.restart_failures or result.leaked or result.exit_code:
            result.stderr_tail = tail(root / "supervisor.stderr")
        if keep:
            print(f"  kept {root}", flush=True)
        else:
            shutil.rmtree(root, ignore_errors=True)
    return result


# --- our RSS: the core alone, in process, and baselines ----------------------------------

#: Each baseline: what a fresh interpreter imports before reading its own RSS.
BASELINES = (
    ("bare_interpreter", ""),
    ("import_trio", "import trio\n"),
    (
        "import_trio_deferred",  # as the daemon imports it: ssl and hmac deferred first
        "import importlib.util, sys\n"
        "spec = importlib.util.spec_from_file_location("
        "'transport.daemon._lean', 'transport/daemon/_lean.py')\n"
        "sys.modules[spec.name] = m = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(m)\n"
        "import trio\n",
    ),
    ("import_supervisor", "import supervisor\n"),
    ("daemon_imports", "import transport.daemon, yaml\n"),
)


def our_baselines() -> dict[str, int]:
    """RSS of a fresh interpreter after each of :data:`BASELINES` (median of 3)."""
    read = (
        "import re\n"
        "print(re.search(r'VmRSS:\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n"
    )
    figures = {}
    for label, prefix in BASELINES:
        argv = [sys.executable, "-c", prefix + read]
        runs = [int(run_quiet(argv, env=supervisor_env())) * 1024 for _ in range(3)]
        figures[label] = int(statistics.median(runs))
    return figures


def core_inproc(n: int) -> dict[str, object]:
    """Run ``_core_inproc.py`` with N agents; return its figures (agents cleaned up)."""
    root = Path(tempfile.mkdtemp(prefix=f"hvbench-core-{n}-"))
    try:
        argv = [sys.executable, str(HERE / "_core_inproc.py"), str(n), str(root), "2"]
        out = run_quiet(argv, env=supervisor_env())
        figures: dict[str, object] = json.loads(out.strip().splitlines()[-1])
        figures["leaked"] = kill_marked(root.name)
        return figures
    finally:
        kill_marked(root.name)
        shutil.rmtree(root, ignore_errors=True)


# --- report ------------------------------------------------------------------------------

Row = tuple[int, dict[str, float | None]]


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ratio(ours: float | None, theirs: float | None) -> str:
    return "-" if ours is None or not theirs else f"{ours / theirs:.3g}"


def print_table(title: str, rows: list[Row], digits: int) -> None:
    others = IMPLS[1:]
    print(f"\n{title}")
    print(
        f"  {'N':>5}"
        + "".join(f"  {impl:>12}" for impl in IMPLS)
        + "".join(f"  {'ours/' + impl[:6]:>12}" for impl in others)
    )
    for n, values in rows:
        print(
            f"  {n:>5}"
            + "".join(f"  {_fmt(values.get(impl), digits):>12}" for impl in IMPLS)
            + "".join(f"  {_ratio(values.get(OURS), values.get(impl)):>12}" for impl in others)
        )


def figure_rows(
    results: list[RunResult], ns: list[int], get: Callable[[RunResult], float | None]
) -> list[Row]:
    by_key = {(r.impl, r.n): r for r in results}
    return [
        (n, {impl: get(by_key[impl, n]) if (impl, n) in by_key else None for impl in IMPLS})
        for n in ns
    ]


def latency(q: float | None) -> Callable[[RunResult], float | None]:
    def get(r: RunResult) -> float | None:
        if not r.restart_latencies_s:
            return None
        samples = r.restart_latencies_s
        return 1e3 * (statistics.median(samples) if q is None else percentile(samples, q))

    return get


def mib(value: int | None) -> float | None:
    return None if value is None else value / MIB


#: Every table: title, what it reads from a run, digits.
TABLES: tuple[tuple[str, Callable[[RunResult], float | None], int], ...] = (
    ("Restart latency, median (ms)", latency(None), 2),
    ("Restart latency, p95 (ms)", latency(0.95), 2),
    ("Start-up time of N agents (s)", lambda r: r.startup_s, 3),
    ("Supervisor RSS (MiB)", lambda r: mib(r.rss_bytes), 1),
    ("Idle CPU, psutil cpu_times (% of one core)", lambda r: r.idle_cpu_pct, 3),
    ("Idle CPU, schedstat (% of one core, ns resolution)", lambda r: r.idle_cpu_pct_schedstat, 3),
    ("Idle wake-ups (voluntary context switches / s)", lambda r: r.idle_wakeups_per_s, 2),
    ("Time to stop N agents and exit after SIGTERM (s)", lambda r: r.stop_s, 3),
)

#: The in-process helper's steps (``_core_inproc.py``), in order.
INPROC_STEPS = (
    ("rss_bare", "bare"),
    ("rss_imported_trio", "trio"),
    ("rss_imported", "imports"),
    ("rss_configured", "config"),
    ("rss_running", "running"),
    ("rss_running_trimmed", "trimmed"),
)


def report_ours_rss(
    results: list[RunResult],
    ns: list[int],
    core: dict[int, dict[str, object]],
    baselines: dict[str, int],
) -> None:
    print("\nOur RSS (MiB): the daemon, and the supervision core alone in process")
    print(
        f"  baselines (fresh interpreters): bare {baselines['bare_interpreter'] / MIB:.1f},"
        f" import trio {baselines['import_trio'] / MIB:.1f},"
        f" import trio with ssl and hmac deferred (the daemon's way)"
        f" {baselines['import_trio_deferred'] / MIB:.1f},"
        f" import supervisor {baselines['import_supervisor'] / MIB:.1f},"
        f" the daemon's imports (transport.daemon, yaml) {baselines['daemon_imports'] / MIB:.1f}"
    )
    print(
        f"  {'N':>5}  {'daemon':>7}  {'after idle':>10}  {'threads':>8}  in process, after each"
        f" step: " + " -> ".join(label for _, label in INPROC_STEPS)
    )
    by_key = {(r.impl, r.n): r for r in results}
    for n in ns:
        figures = core.get(n, {})
        steps = " -> ".join(
            _fmt(v / MIB if isinstance(v := figures.get(key), int) else None, 1)
            for key, _ in INPROC_STEPS
        )
        daemon = by_key[OURS, n]
        threads = f"{daemon.threads}->{daemon.threads_after_idle}"
        print(
            f"  {n:>5}  {_fmt(mib(daemon.rss_bytes), 1):>7}"
            f"  {_fmt(mib(daemon.rss_after_idle_bytes), 1):>10}  {threads:>8}  {steps}"
        )
    print("  (threads: the daemon's threads when RSS is measured -> at the end of the idle window)")


def report(
    results: list[RunResult],
    ns: list[int],
    core: dict[int, dict[str, object]],
    baselines: dict[str, int],
    versions: dict[str, str],
) -> list[str]:
    """Print every table; return the target verdicts."""
    print(f"\n{versions['summary']}")
    if versions.get("circus_note"):
        print(f"NOTE: {versions['circus_note']}: its columns are empty.")
    for title, get, digits in TABLES:
        print_table(title, figure_rows(results, ns, get), digits)
    report_ours_rss(results, ns, core, baselines)

    print(
        "\nRestart samples: "
        + "; ".join(
            f"{r.impl} N={r.n}: {len(r.restart_latencies_s)} ok, {len(r.restart_failures)} failed"
            for r in results
        )
    )
    problems = [r for r in results if r.errors or r.leaked or r.restart_failures or r.exit_code]
    for r in problems:
        print(f"\nPROBLEM {r.impl} N={r.n}: exit code {r.exit_code}")
        for line in r.errors + r.restart_failures:
            print(f"  {line}")
        if r.leaked:
            print(f"  {len(r.leaked)} process(es) left after the supervisor exited, e.g.:")
            for line in r.leaked[:5]:
                print(f"    {line}")
        for line in r.stderr_tail:
            print(f"  | {line}")
    if not problems:
        print("Clean-up: every supervisor exited with 0 and left no process behind.")

    by_key = {(r.impl, r.n): r for r in results}
    verdicts = []
    p95 = [latency(0.95)(by_key[OURS, n]) for n in ns]
    worst = max((v for v in p95 if v is not None), default=None)
    verdicts.append(
        f"restart p95 < 10 ms: {'PASS' if worst is not None and worst < 10 else 'FAIL'}"
        f" (worst {_fmt(worst, 2)} ms)"
    )
    big = max(ns)
    ours_idle = by_key[OURS, big].idle_cpu_pct_schedstat
    their_idle = by_key[SUPERVISORD, big].idle_cpu_pct_schedstat
    ok = ours_idle is not None and their_idle is not None and ours_idle <= their_idle
    verdicts.append(
        f"idle CPU at N={big} <= supervisord's: {'PASS' if ok else 'FAIL'}"
        f" ({_fmt(ours_idle, 3)} % vs {_fmt(their_idle, 3)} % by schedstat;"
        f" {_fmt(by_key[OURS, big].idle_cpu_pct, 3)} % vs"
        f" {_fmt(by_key[SUPERVISORD, big].idle_cpu_pct, 3)} % by psutil cpu_times)"
    )
    startup = by_key[OURS, big].startup_s
    if big >= 300:
        ok = startup is not None and startup < 0.5
        verdicts.append(
            f"start-up of {big} agents < 0.5 s: {'PASS' if ok else 'FAIL'} ({_fmt(startup, 3)} s)"
        )
    rss = [r.rss_bytes for r in results if r.impl == OURS and r.rss_bytes is not None]
    worst_rss = max(rss, default=None)
    ok = worst_rss is not None and worst_rss < 30 * MIB
    strict = worst_rss is not None and worst_rss < 30_000_000
    in_mb = None if worst_rss is None else worst_rss / 1e6
    verdicts.append(
        f"RSS of the daemon (without gRPC) < 30 MiB: {'PASS' if ok else 'FAIL'}"
        f" (largest: {_fmt(mib(worst_rss), 1)} MiB = {_fmt(in_mb, 1)} MB"
        f"{'' if ok == strict else '; not under 30 MB'})"
    )
    print("\nTargets:")
    for verdict in verdicts:
        print(f"  {verdict}")
    return verdicts


# --- main --------------------------------------------------------------------------------


def source_of_ours() -> dict[str, str]:
    """Which code of ours was measured: git HEAD, whether it differs, a hash of the sources.

    The hash covers ``supervisor/**/*.py`` and ``transport/daemon/*.py`` (the daemon).
    """
    paths = sorted((ROOT / "supervisor").rglob("*.py"))
    paths += sorted((ROOT / "transport" / "daemon").glob("*.py"))
    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    found = {"ours_source_sha256": digest.hexdigest()[:16]}
    try:
        found["ours_git_head"] = run_quiet(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
        changed = run_quiet(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "supervisor", "transport"]
        )
        found["ours_git_head"] = found["ours_git_head"].strip() + ("+dirty" if changed else "")
    except (OSError, RuntimeError):
        found["ours_git_head"] = "unknown"
    return found


def versions_of(supervisord_version: str, circus_version: str | None) -> dict[str, str]:
    import trio  # only for its version: the benchmark itself does not run Trio

    found = {
        "python": platform.python_version(),
        "trio": trio.__version__,
        "psutil": psutil.__version__,
        "supervisord": supervisord_version,
        "circus": circus_version or "-",
        "kernel": platform.release(),
        "cpus": str(os.cpu_count()),
    }
    found.update(source_of_ours())
    found["summary"] = (
        f"Python {found['python']}, trio {found['trio']}, supervisord {supervisord_version},"
        f" Circus {found['circus']}, Linux {found['kernel']}, {found['cpus']} CPUs; ours at"
        f" {found['ours_git_head']} (supervisor/ and transport/daemon/ sha256"
        f" {found['ours_source_sha256']})"
    )
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--n", help="comma-separated agent counts (default 10,100,300)")
    parser.add_argument("--kills", type=int, default=20, help="restart samples per run")
    parser.add_argument("--idle", type=float, help="idle CPU window in seconds (default 30)")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: N=10 only, idle 5 s (unless given)"
    )
    parser.add_argument("--no-circus", action="store_true", help="leave Circus out")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directories")
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON results file")
    args = parser.parse_args(argv)
    ns = [int(part) for part in (args.n or ("10" if args.quick else "10,100,300")).split(",")]
    idle_s = args.idle if args.idle is not None else 5.0 if args.quick else 30.0
    if args.kills < 1 or idle_s <= 0 or min(ns) < 1:
        parser.error("--n, --kills and --idle must be positive")
    began = time.monotonic()

    supervisord, supervisord_version = ensure_supervisord_venv()
    circusd: Path | None
    if args.no_circus:
        circusd, circus_info = None, "Circus left out (--no-circus)"
    else:
        circusd, circus_info = ensure_circus_venv()
    versions = versions_of(supervisord_version, circus_info if circusd else None)
    if circusd is None:
        versions["circus_note"] = circus_info
        print(f"NOTE: {circus_info}; it is skipped.", flush=True)
    print(versions["summary"], flush=True)
    # Warm the page cache and fill the bytecode cache for every supervisor (not measured;
    # -P: not our tree's "supervisor" package from the working directory).
    env = supervisor_env()
    run_quiet([sys.executable, "-c", "import transport.daemon, yaml"], env=env)
    supervisord_python = str(SUPERVISORD_VENV / "bin" / "python")
    run_quiet([supervisord_python, "-P", "-c", "import supervisor.supervisord"], env=env)
    commands = {OURS: ours_command, SUPERVISORD: supervisord_command(supervisord)}
    if circusd is not None:
        circus_python = str(CIRCUS_VENV / "bin" / "python")
        run_quiet([circus_python, "-P", "-c", "import circus.arbiter, circus.stream"], env=env)
        commands[CIRCUS] = circus_command(circusd)

    results: list[RunResult] = []
    core: dict[int, dict[str, object]] = {}
    for n in ns:
        for impl, command in commands.items():
            print(f"N={n}: {impl} ...", flush=True)
            result = run_one(impl, command, n, args.kills, idle_s, args.keep)
            results.append(result)
            lat = latency(None)(result)
            print(
                f"  start-up {_fmt(result.startup_s, 3)} s, RSS {_fmt(mib(result.rss_bytes), 1)}"
                f" MiB, idle {_fmt(result.idle_cpu_pct_schedstat, 3)} %, restart median "
                f"{_fmt(lat, 1)} ms ({len(result.restart_latencies_s)} samples)"
                + (f", ERRORS {result.errors}" if result.errors else ""),
                flush=True,
            )
        print(f"N={n}: core in process ...", flush=True)
        core[n] = core_inproc(n)
    baselines = our_baselines()

    verdicts = report(results, ns, core, baselines, versions)
    elapsed = time.monotonic() - began
    print(f"\n(benchmark took {elapsed:.0f} s)")

    args.output.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": "bench_core",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "options": {"n": ns, "kills": args.kills, "idle_s": idle_s},
        "versions": versions,
        "settings": {
            "settle_s": SETTLE_S,
            "min_uptime_before_kill_s": MIN_UPTIME_S,
            "kill_gap_s": KILL_GAP_S,
            "start_seconds": START_SECONDS,
            "reset_after_s": RESET_AFTER,
        },
        "runs": [asdict(r) for r in results],
        "ours_core_inprocess": {str(n): figures for n, figures in core.items()},
        "ours_rss_baselines": baselines,
        "bench_rss_self": read_vmrss(),
        "targets": verdicts,
        "elapsed_s": elapsed,
    }
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    print(f"results written to {args.output}")
    failed = any(r.errors or r.leaked for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
