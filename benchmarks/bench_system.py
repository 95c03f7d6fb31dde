"""Every figure of the whole system in one run, side by side with its anchors.

Run with the project's interpreter from the repository root, on a machine with nothing
else to do::

    .venv/bin/python benchmarks/bench_system.py            # full run, about 35 min
    .venv/bin/python benchmarks/bench_system.py --quick    # about 12 min
    .venv/bin/python benchmarks/bench_system.py --combine  # no runs: report the JSON in --dir
    options: --dir DIR (default benchmarks/results/system)  --output FILE
             (default benchmarks/results/system.json)  --only daemon,manager,chaos
             --chaos-duration S

It runs the other benchmarks one after the other, never two at once, each as its own
process writing its JSON into ``--dir`` and its output into ``--dir/NAME.log``:

============== ========================================== =================================
part           command (full)                             ``--quick``
============== ========================================== =================================
daemon         ``bench_report.py --n 10,300``             ``bench_report.py --quick`` (N=10)
manager-1000   ``bench_manager.py --nodes 1000``          ``--duration 30 --settle 5``
               ``--duration 60`` (SQLite, PostgreSQL)
manager-10000  ``bench_manager.py --nodes 10000``         left out
               ``--duration 150``
chaos          ``bench_system_chaos.py --duration 300``   ``--duration 60``
============== ========================================== =================================

Then it reads the JSON files and prints one report, markdown tables, with ratios against
the anchors: supervisord (measured in the same ``bench_report.py`` run) for the daemon,
the original Go Manager's figures that ``bench_manager.py`` records for the Manager, the
seed's 200 ms for report latency, and the chaos run's own invariants. A part that failed,
timed out or has not written its JSON is reported as missing, with why; the others are
still reported. Everything, with each part's exit status, duration and the machine's load
average before and after it, goes to ``benchmarks/results/system.json``.

The combining and printing functions are pure (``combine``, ``render``): the tests feed
them recorded JSON.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS_DIR = HERE / "results" / "system"
RESULTS = HERE / "results" / "system.json"
REPORT_TARGET_MS = 200.0
"""The seed's target for report latency, daemon -> Manager."""
STOP_GRACE_S = 120.0
"""After SIGINT at a part's timeout: how long it has to stop its own processes."""

Json = dict[str, Any]
Pair = tuple[float, float]


# --------------------------------------------------------------------------- the parts


@dataclass(frozen=True)
class Part:
    """One benchmark run: its script in ``benchmarks/``, arguments and JSON file."""

    name: str
    script: str
    args: tuple[str, ...]
    timeout_s: float

    @property
    def output(self) -> str:
        return f"{self.name}.json"


def plan(quick: bool, chaos_s: float | None = None) -> list[Part]:
    """The parts of a run, in order."""
    chaos = chaos_s if chaos_s is not None else 60.0 if quick else 300.0
    parts = [
        Part("daemon", "bench_report.py", ("--quick",) if quick else ("--n", "10,300"), 1800),
        Part(
            "manager-1000",
            "bench_manager.py",
            ("--nodes", "1000", "--duration", "30", "--settle", "5")
            if quick
            else ("--nodes", "1000", "--duration", "60"),
            1200,
        ),
    ]
    if not quick:
        parts.append(
            Part(
                "manager-10000", "bench_manager.py", ("--nodes", "10000", "--duration", "150"), 2400
            )
        )
    parts.append(Part("chaos", "bench_system_chaos.py", ("--duration", f"{chaos:g}"), chaos + 900))
    return parts


@dataclass
class Outcome:
    """How one part's run went."""

    name: str
    command: list[str]
    exit_code: int | None = None
    elapsed_s: float = 0.0
    loadavg_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    loadavg_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    log: str = ""
    problem: str = ""


def _loadavg() -> tuple[float, float, float]:
    one, five, fifteen = os.getloadavg()
    return round(one, 2), round(five, 2), round(fifteen, 2)


def run_part(part: Part, directory: Path) -> Outcome:
    """Run one part, its output to ``directory/NAME.log``; SIGINT it at its timeout.

    SIGINT, not SIGTERM: the benchmarks stop their Managers, databases and supervisors in
    ``finally`` blocks, which a KeyboardInterrupt runs and Python's default SIGTERM does
    not. Ctrl-C at the terminal reaches the part too (same process group).
    """
    script = HERE / part.script
    output = directory / part.output
    command = [sys.executable, str(script), *part.args, "--output", str(output)]
    log = directory / f"{part.name}.log"
    outcome = Outcome(part.name, command, log=str(log), loadavg_before=_loadavg())
    if not script.exists():
        outcome.problem = f"{script.relative_to(ROOT)} does not exist"
        return outcome
    output.unlink(missing_ok=True)  # never report a previous run's figures as this one's
    began = time.monotonic()
    with log.open("wb") as sink:
        proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            outcome.exit_code = proc.wait(timeout=part.timeout_s)
        except subprocess.TimeoutExpired:
            outcome.problem = f"timed out after {part.timeout_s:g} s"
            proc.send_signal(signal.SIGINT)
            try:
                outcome.exit_code = proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                outcome.exit_code = proc.wait()
    outcome.elapsed_s = time.monotonic() - began
    outcome.loadavg_after = _loadavg()
    if outcome.exit_code and not outcome.problem:
        lines = log.read_text(errors="replace").strip().splitlines()
        last = f": {lines[-1].strip()}" if lines else ""
        outcome.problem = f"exit status {outcome.exit_code}{last} (see {log})"
    return outcome


def load(directory: Path, name: str) -> tuple[Json | None, str]:
    """A part's JSON, or None and why not."""
    path = directory / f"{name}.json"
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        return None, f"{path} was not written"
    except (OSError, ValueError) as exc:
        return None, f"{path} cannot be read: {exc}"
    if not isinstance(document, dict):
        return None, f"{path} does not hold a JSON object"
    return document, ""


# --------------------------------------------------------------------------- combining


def ratio(value: float | None, anchor: float | None) -> float | None:
    """``value / anchor``, or None when either is missing or the anchor is 0."""
    if value is None or anchor is None or anchor == 0 or math.isnan(value) or math.isnan(anchor):
        return None
    return value / anchor


def range_ratio(value: float | None, anchor: Pair | None) -> Pair | None:
    """``value`` over an anchor's range (low, high): (value / high, value / low)."""
    if anchor is None:
        return None
    low, high = ratio(value, anchor[1]), ratio(value, anchor[0])
    return None if low is None or high is None else (low, high)


DAEMON_VARIANTS = ("standalone", "manager", "supervisord")
DAEMON_RATIOS = (
    ("manager", "standalone"),
    ("standalone", "supervisord"),
    ("manager", "supervisord"),
)
DAEMON_FIGURES = (
    ("restart latency, median (ms)", "restart_median_ms", 2),
    ("restart latency, p95 (ms)", "restart_p95_ms", 2),
    ("idle CPU (% of a core, schedstat)", "idle_cpu_pct", 3),
    ("RSS (MiB)", "rss_mib", 1),
)


def combine_daemon(report: Json) -> Json:
    """bench_report's figures per N, with the ratios between its three columns."""
    combined: Json = {}
    for n, by in sorted(report["figures"].items(), key=lambda item: int(item[0])):
        ratios = {
            f"{a}/{b}": {
                key: ratio(by.get(a, {}).get(key), by.get(b, {}).get(key))
                for _, key, _ in DAEMON_FIGURES
            }
            for a, b in DAEMON_RATIOS
        }
        combined[n] = {v: by.get(v, {}) for v in DAEMON_VARIANTS} | {"ratios": ratios}
    return combined


def _steady(run: Json, key: str) -> float | None:
    value = run.get("figures", {}).get("steady", {}).get(key)
    return None if value is None else float(value)


def _total(run: Json, key: str) -> float:
    """The number of failed (``failures``: {method: {code: n}}) or unsent calls."""
    value = run.get(key) or {}
    return float(sum(sum(v.values()) if isinstance(v, dict) else v for v in value.values()))


def _number(run: Json, key: str) -> float | None:
    value = run.get(key)
    return None if value is None else float(value)


def _kib_per_node_day(run: Json) -> float | None:
    value = _number(run, "db_bytes_per_node_day")
    return None if value is None else value / 1024


#: The Manager's figures: label, key (the original's anchors use the same keys), reader.
MANAGER_FIGURES: tuple[tuple[str, str, Callable[[Json], float | None]], ...] = (
    ("calls/s answered (steady)", "calls_per_s", lambda r: _steady(r, "per_s")),
    ("p50 (ms)", "p50_ms", lambda r: _steady(r, "p50")),
    ("p99 (ms)", "p99_ms", lambda r: _steady(r, "p99")),
    ("max (ms)", "max_ms", lambda r: _steady(r, "max")),
    ("failed calls", "failures", lambda r: _total(r, "failures")),
    ("calls never sent", "unsent", lambda r: _total(r, "unsent")),
    ("Manager CPU (cores)", "manager_cores", lambda r: _number(r, "manager_cores")),
    ("Manager RSS peak (MiB)", "manager_rss_mib", lambda r: _number(r, "manager_rss_mib")),
    ("database CPU (cores)", "db_cores", lambda r: _number(r, "db_cores")),
    ("database growth per node per day (KiB)", "db_kib_per_node_day", _kib_per_node_day),
    ("other load on the machine (cores)", "other_cores", lambda r: _number(r, "other_cores")),
    ("the Manager's gRPC workers (grpc.workers)", "workers", lambda r: _number(r, "workers")),
)
DATABASES = ("sqlite", "postgres")


def combine_manager(document: Json) -> Json:
    """One bench_manager run (one fleet size): each database's figures and their ratios."""
    nodes = int(document["arguments"]["nodes"])
    anchors: dict[str, Pair] = {
        key: (float(pair[0]), float(pair[1]))
        for key, pair in document.get("anchors", {}).get(str(nodes), {}).items()
    }
    combined: Json = {"nodes": nodes, "anchor": anchors, "when": document.get("when")}
    for run in document["runs"]:
        values = {key: read(run) for _, key, read in MANAGER_FIGURES}
        values = {k: None if v is not None and math.isnan(v) else v for k, v in values.items()}
        combined[run["database"]] = {
            "values": values,
            "ratios": {key: range_ratio(values[key], anchors.get(key)) for key in values},
            "loadavg": run.get("loadavg"),
            "errors": run.get("errors", []),
        }
    return combined


LATENCY_PATHS = (
    ("recording", "publication -> arrival at a recording Manager"),
    ("manager_db", "publication -> row readable in the reference Manager's SQLite"),
)


def combine_latency(report: Json) -> Json:
    """bench_report's latencies against the seed's 200 ms."""
    latency = report["latency"]
    paths: Json = {name: latency.get(name, {}) for name, _ in LATENCY_PATHS}
    for figures in paths.values():
        figures["p99_over_target"] = ratio(figures.get("p99_ms"), REPORT_TARGET_MS)
    # Shown beside the reports, not held to their target: when the Manager's writer stamped
    # the row (a part of the readable path), and agent states, which the daemon syncs within
    # its 0.5 s debounce of a change, by design.
    if "written" in paths["manager_db"]:
        paths["manager_db_written"] = paths["manager_db"].pop("written")
    for n, figures in sorted(latency.get("agent_state", {}).items(), key=lambda i: int(i[0])):
        paths[f"agent_state_{n}"] = figures
    reports = [paths[name].get("p99_ms") for name, _ in LATENCY_PATHS]
    measured = [p99 for p99 in reports if p99 is not None]
    met = bool(measured) and len(measured) == len(reports) and max(measured) < REPORT_TARGET_MS
    return {"target_ms": REPORT_TARGET_MS, "paths": paths, "met": met}


#: The chaos run's figures (bench_system_chaos.py's JSON): label, key.
CHAOS_FIGURES = (
    ("chaos (s)", "duration_s"),
    ("nodes x agents", "agents"),
    ("agent spawns", "spawns"),
    ("agent restarts (state files)", "restarts"),
    ("daemon starts", "daemon_starts"),
    ("Manager starts", "manager_starts"),
    ("longest Manager outage (s)", "longest_outage_s"),
    ("spool peak (KiB)", "spool_peak_kib"),
    ("reports through the spools (unread)", "spooled_reports"),
    ("spooled points, each found in the Manager", "spooled_points"),
    ("metric points stored", "points"),
    ("gaps explained by a daemon's kill or stop", "explained_gaps"),
    ("settled after (s)", "settle_s"),
    ("phases (s)", "phases"),
    ("load average at the end", "load"),
    ("problems", "problem_count"),
)


def combine_chaos(chaos: Json) -> Json:
    """The chaos run's figures, actions, problems and verdict (no problem: every invariant
    held: every agent runs once, the Manager's view matches the hosts, nothing was lost)."""
    problems = [str(p) for p in chaos.get("problems", [])]
    figures = {key: chaos.get(key) for _, key in CHAOS_FIGURES}
    figures["agents"] = f"{chaos.get('nodes')} x {chaos.get('agents_per_node')}"
    peak = chaos.get("spool_peak_bytes")
    figures["spool_peak_kib"] = None if peak is None else round(peak / 1024, 1)
    figures["spooled_reports"] = f"{chaos.get('spooled_reports')} ({chaos.get('unread_reports')})"
    figures["problem_count"] = len(problems)
    phases = chaos.get("phases_s", {})
    figures["phases"] = ", ".join(f"{name} {seconds:.0f}" for name, seconds in phases.items())
    return {
        "figures": figures,
        "actions": dict(chaos.get("actions", {})),
        "problems": problems,
        "passed": not problems and "spawns" in chaos,
        "seed": chaos.get("seed"),
        "spool_bound": chaos.get("spool_bound"),
    }


def combine(documents: dict[str, Json | None], why: dict[str, str]) -> Json:
    """Every part's figures, ratios and verdicts (JSON-able); missing parts with why."""
    combined: Json = {"missing": {}}
    report = documents.get("daemon")
    if report is not None:
        combined["daemon"] = combine_daemon(report)
        combined["latency"] = combine_latency(report)
        combined["daemon_run"] = {k: report.get(k) for k in ("date", "code", "options")}
    else:
        combined["missing"]["daemon"] = why.get("daemon", "not run")
    combined["manager"] = {}
    for name in sorted(
        (n for n in documents if n.startswith("manager-")), key=lambda n: int(n.split("-")[1])
    ):
        document = documents[name]
        if document is None:
            combined["missing"][name] = why.get(name, "not run")
        else:
            combined["manager"][name.split("-")[1]] = combine_manager(document)
    chaos = documents.get("chaos")
    if chaos is not None:
        combined["chaos"] = combine_chaos(chaos)
    elif "chaos" in documents:
        combined["missing"]["chaos"] = why.get("chaos", "not run")
    return combined


# --------------------------------------------------------------------------- the report


def cell(value: float | None, digits: int = 2) -> str:
    if value is None or math.isnan(value):
        return "-"
    if abs(value) >= 1000 or float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def ratio_cell(value: float | Sequence[float] | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, int | float):
        return f"{value:.3g}"
    low, high = value
    return f"{low:.3g}" if math.isclose(low, high) else f"{low:.3g}-{high:.3g}"


def table(head: Sequence[str], rows: Sequence[Sequence[str]], right_from: int = 1) -> list[str]:
    """A markdown table; columns from ``right_from`` on are right-aligned."""
    align = ["---" if i < right_from else "---:" for i in range(len(head))]
    lines = [head, align, *rows]
    return ["| " + " | ".join(line) + " |" for line in lines]


def render_daemon(daemon: Json) -> list[str]:
    head = ["figure", "N", "standalone", "with Manager", "supervisord"]
    head += [f"{a}/{b}" for a, b in DAEMON_RATIOS]
    rows = []
    for label, key, digits in DAEMON_FIGURES:
        for i, (n, by) in enumerate(daemon.items()):
            rows.append(
                [
                    label if i == 0 else "",
                    n,
                    *(cell(by[v].get(key), digits) for v in DAEMON_VARIANTS),
                    *(ratio_cell(by["ratios"][f"{a}/{b}"][key]) for a, b in DAEMON_RATIOS),
                ]
            )
    return [
        "## The daemon (bench_report.py): ours standalone, with the Manager connection,"
        " supervisord",
        "",
        *table(head, rows, right_from=1),
    ]


def render_manager(manager: Json) -> list[str]:
    head = ["figure", "nodes", "SQLite", "PostgreSQL", "original"]
    head += ["SQLite/original", "PostgreSQL/original"]
    rows = []
    loads = []
    for label, key, _ in MANAGER_FIGURES:
        for i, (nodes, run) in enumerate(manager.items()):
            anchor = run["anchor"].get(key)
            original = (
                "-"
                if anchor is None
                else (
                    cell(anchor[0])
                    if anchor[0] == anchor[1]
                    else f"{cell(anchor[0])}-{cell(anchor[1])}"
                )
            )
            by = {db: run.get(db, {"values": {}, "ratios": {}}) for db in DATABASES}
            rows.append(
                [
                    label if i == 0 else "",
                    f"{int(nodes):,}",
                    *(cell(by[db]["values"].get(key)) for db in DATABASES),
                    original,
                    *(ratio_cell(by[db]["ratios"].get(key)) for db in DATABASES),
                ]
            )
    for nodes, run in manager.items():
        for db in DATABASES:
            if db in run:
                errors = f"; errors: {run[db]['errors']}" if run[db]["errors"] else ""
                loads.append(
                    f"{int(nodes):,} nodes, {db}: load average at the end"
                    f" {run[db]['loadavg']}{errors}"
                )
    return [
        "## The Manager (bench_manager.py): the fleet simulator, SQLite beside PostgreSQL"
        " beside the original",
        "",
        *table(head, rows),
        "",
        *loads,
    ]


def render_latency(latency: Json) -> list[str]:
    what = dict(LATENCY_PATHS)
    what["manager_db_written"] = "publication -> stamped by the reference Manager's writer"
    head = ["path", "p50 (ms)", "p99 (ms)", "max (ms)", "samples", "p99 / 200 ms"]
    rows = []
    for name, figures in latency["paths"].items():
        label = what.get(name) or (
            f"agent restart -> new PID readable in the Manager, N={name.rsplit('_', 1)[1]}"
            " (within the daemon's 0.5 s debounce, by design)"
        )
        samples = f"{figures.get('measured', 0):.0f}/{figures.get('expected', 0):.0f}"
        rows.append(
            [
                label,
                cell(figures.get("p50_ms")),
                cell(figures.get("p99_ms")),
                cell(figures.get("max_ms")),
                samples,
                ratio_cell(figures.get("p99_over_target")),
            ]
        )
    verdict = "met" if latency["met"] else "NOT met"
    return [
        "## Report latency, daemon -> Manager (bench_report.py)",
        "",
        *table(head, rows),
        "",
        f"Target: report p99 < {latency['target_ms']:.0f} ms (the seed's): {verdict}.",
    ]


def render_chaos(chaos: Json) -> list[str]:
    def show(value: object) -> str:
        if isinstance(value, list):
            return " ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in value)
        return "-" if value is None else cell(value) if isinstance(value, float) else str(value)

    rows = [[label, show(chaos["figures"][key])] for label, key in CHAOS_FIGURES]
    actions = [[name, str(count)] for name, count in sorted(chaos["actions"].items())]
    verdict = (
        "held: every agent runs exactly once, the Manager's view matches the hosts, nothing"
        f" was lost within the spool bound ({chaos['spool_bound']})"
        if chaos["passed"]
        else f"BROKEN: {len(chaos['problems'])} problem(s)"
    )
    return [
        f"## Chaos run of the whole system (bench_system_chaos.py, seed {chaos['seed']})",
        "",
        *table(["figure", "value"], rows),
        "",
        *table(["action", "times"], actions),
        "",
        f"Invariants: {verdict}.",
        *(f"* {problem}" for problem in chaos["problems"]),
    ]


def render(combined: Json, outcomes: Sequence[Json] = ()) -> str:
    """The whole report, markdown."""
    lines = ["# The whole system, one run (bench_system.py)", ""]
    if outcomes:
        head = ["part", "problem", "exit", "time (s)", "load before", "load after"]
        rows = [
            [
                o["name"],
                o["problem"] or "-",
                str(o["exit_code"]),
                f"{o['elapsed_s']:.0f}",
                " ".join(f"{x:.2f}" for x in o["loadavg_before"]),
                " ".join(f"{x:.2f}" for x in o["loadavg_after"]),
            ]
            for o in outcomes
        ]
        lines += [*table(head, rows, right_from=2), ""]
    if "daemon" in combined:
        lines += [*render_daemon(combined["daemon"]), ""]
    if combined["manager"]:
        lines += [*render_manager(combined["manager"]), ""]
    if "latency" in combined:
        lines += [*render_latency(combined["latency"]), ""]
    if "chaos" in combined:
        lines += [*render_chaos(combined["chaos"]), ""]
    for name, why in combined["missing"].items():
        lines.append(f"MISSING {name}: {why}")
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="short runs: N=10, 1,000 nodes only, 60 s of chaos"
    )
    parser.add_argument(
        "--combine", action="store_true", help="run nothing: report the JSON files already in --dir"
    )
    parser.add_argument("--only", help="comma-separated: daemon, manager, chaos")
    parser.add_argument("--chaos-duration", type=float, help="s (default 300; --quick 60)")
    parser.add_argument("--dir", type=Path, default=RESULTS_DIR, help="the parts' JSON and logs")
    parser.add_argument("--output", type=Path, default=RESULTS, help="the combined JSON")
    args = parser.parse_args(argv)
    parts = plan(args.quick, args.chaos_duration)
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {"daemon", "manager", "chaos"}
        if unknown:
            parser.error(f"--only: unknown part(s) {', '.join(sorted(unknown))}")
        parts = [p for p in parts if p.name.split("-")[0] in wanted]
    args.dir.mkdir(parents=True, exist_ok=True)

    outcomes: list[Outcome] = []
    if not args.combine:
        for part in parts:
            print(f"{part.name}: {part.script} {' '.join(part.args)} ...", flush=True)
            outcome = run_part(part, args.dir)
            outcomes.append(outcome)
            print(
                f"  {outcome.problem or 'done'} ({outcome.elapsed_s:.0f} s, load average"
                f" {outcome.loadavg_after})",
                flush=True,
            )
    documents: dict[str, Json | None] = {}
    why: dict[str, str] = {}
    for part in parts:
        documents[part.name], reason = load(args.dir, part.name)
        done = next((o for o in outcomes if o.name == part.name), None)
        why[part.name] = (done.problem if done and done.problem else "") or reason
    combined = combine(documents, why)
    outcome_dicts = [asdict(o) for o in outcomes]
    print()
    print(render(combined, outcome_dicts), end="")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "benchmark": "bench_system",
                "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "quick": args.quick,
                "parts": outcome_dicts,
                "combined": combined,
            },
            indent=2,
            default=str,
        )
        + "\n"
    )
    print(f"\nwritten to {args.output}")
    return 1 if combined["missing"] or any(o.problem for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
