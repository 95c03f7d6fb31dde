"""benchmarks/bench_system.py without the long benchmarks: recorded JSON (the shapes
bench_report.py and bench_manager.py write, trimmed) through its combining and printing, and
one real part run as a process.

The benchmark itself is not run here (about 12 minutes with ``--quick``); see
benchmarks/README.md, "The whole system"."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, strategies as st

from tests.benchmark_scripts import load_benchmark

bench_system = load_benchmark("bench_system")

#: bench_report.py --quick's JSON (2026-12-03), without its raw runs.
REPORT: dict[str, Any] = {
    "benchmark": "bench_report",
    "date": "2026-12-03T15:39:55+00:00",
    "code": "cf98f1d+dirty",
    "options": {"n": [10], "kills": 3, "idle_s": 5.0, "reports": 30},
    "figures": {
        "10": {
            "standalone": {
                "restart_median_ms": 5.284786224365234,
                "restart_p95_ms": 6.863594055175781,
                "restarts": 3.0,
                "rss_mib": 24.73828125,
                "idle_cpu_pct": 0.0,
                "idle_cpu_pct_psutil": 0.0,
                "startup_s": 0.47102832794189453,
            },
            "manager": {
                "restart_median_ms": 5.456209182739258,
                "restart_p95_ms": 5.760431289672852,
                "restarts": 3.0,
                "rss_mib": 52.80078125,
                "idle_cpu_pct": 0.02491601238477463,
                "idle_cpu_pct_psutil": 0.0,
                "startup_s": 0.6204700469970703,
            },
            "supervisord": {
                "restart_median_ms": 1026.9172191619873,
                "restart_p95_ms": 1042.9251194000244,
                "restarts": 3.0,
                "rss_mib": 24.83984375,
                "idle_cpu_pct": 0.019298864976144053,
                "idle_cpu_pct_psutil": 0.0,
                "startup_s": 1.1997432708740234,
            },
        }
    },
    "latency": {
        "target_ms": 200.0,
        "recording": {
            "p50_ms": 2.7661070016620215,
            "p99_ms": 3.399854998860974,
            "max_ms": 3.399854998860974,
            "measured": 30.0,
            "expected": 30.0,
        },
        "manager_db": {
            "p50_ms": 29.472955997334793,
            "p99_ms": 35.414437003055355,
            "max_ms": 35.414437003055355,
            "measured": 30.0,
            "expected": 30.0,
            "written": {
                "p50_ms": 25.9,
                "p99_ms": 30.98,
                "max_ms": 30.98,
                "measured": 30.0,
                "expected": 30.0,
            },
            "poll_s": 0.005,
            "polls": 196,
        },
        "agent_state": {
            "10": {
                "p50_ms": 254.73499298095703,
                "p99_ms": 511.94095611572266,
                "max_ms": 511.94095611572266,
                "measured": 2.0,
                "expected": 3.0,
                "first_sync_after_launch_s": 0.6732544898986816,
            }
        },
    },
}


def _manager_run(database: str, p99: float, db_cores: float) -> dict[str, Any]:
    """One run of bench_manager.py's JSON (its 1,000-node run of 2026-12-03, trimmed)."""
    return {
        "database": database,
        "nodes": 1000,
        "window_s": 60.0,
        "figures": {
            "Heartbeat": {
                "calls": 1000.0,
                "per_s": 16.67,
                "p50": 9.1,
                "p99": 25.0,
                "max": 90.0,
                "failures": 0.0,
            },
            "steady": {
                "calls": 4000.0,
                "per_s": 66.66666666666667,
                "p50": 16.25,
                "p99": p99,
                "max": 289.55,
                "failures": 0.0,
            },
        },
        "failures": {"SyncAgentStates": {"DEADLINE_EXCEEDED": 2}, "Heartbeat": {"UNAVAILABLE": 1}},
        "unsent": {"RegisterNode": 0, "Heartbeat": 4, "ReportMetrics": 0, "SyncAgentStates": 1},
        "manager_cores": 0.30,
        "manager_rss_mib": 116.9,
        "db_cores": db_cores,
        "sim_cores": 0.06,
        "other_cores": 1.6,
        "loadavg": [4.56, 4.29, 3.92],
        "db_bytes": [1_000_000.0, 1_500_000.0],
        "db_bytes_per_node_day": 720_000.0,
        "workers": 2,
        "manager_exit": 0,
        "errors": [],
        "stderr_tail": [],
    }


MANAGER_1000: dict[str, Any] = {
    "arguments": {"nodes": 1000, "duration": 60.0, "databases": "sqlite,postgres"},
    "runs": [_manager_run("sqlite", 75.93, math.nan), _manager_run("postgres", 33.0, 0.05)],
    "anchors": {
        "10000": {"failures": [0, 0], "p99_ms": [120, 675], "manager_cores": [0.62, 0.62]},
        "1000": {"p99_ms": [33, 41]},
    },
    "when": "2026-12-03T14:02:11+0000",
}


#: bench_system_chaos.py's JSON (a 10 s run of 2026-12-03, 2 nodes x 2 agents).
CHAOS: dict[str, Any] = {
    "actions": {
        "kill agent": 12,
        "kill agent group": 10,
        "kill daemon": 1,
        "kill manager": 1,
        "stop daemon": 3,
    },
    "agents_per_node": 2,
    "daemon_starts": 3,
    "duration_s": 10.0,
    "elapsed_s": 30.2,
    "explained_gaps": 4,
    "gap_limit_s": 3,
    "load": [5.5, 6.52, 3.85],
    "longest_outage_s": 7.0,
    "manager_starts": 2,
    "nodes": 2,
    "points": 117,
    "problems": [],
    "restarts": 21,
    "seed": 7,
    "settle_s": 0.9,
    "phases_s": {"start": 8.1, "chaos": 10.2, "settle": 0.9, "check": 9.4},
    "spawns": 25,
    "spool_bound": {"max_age": "1h", "max_bytes": "64MiB"},
    "spool_peak_bytes": 20582,
    "spooled_points": 65,
    "spooled_reports": 17,
    "unread_reports": 0,
}


def test_daemon_ratios_divide_the_columns_of_one_run() -> None:
    """Each ratio is one column's figure over another's, for the same N and figure."""
    daemon = bench_system.combine_daemon(copy.deepcopy(REPORT))
    by = REPORT["figures"]["10"]
    ratios = daemon["10"]["ratios"]
    assert ratios["manager/standalone"]["rss_mib"] == pytest.approx(52.80078125 / 24.73828125)
    assert ratios["standalone/supervisord"]["restart_p95_ms"] == pytest.approx(
        by["standalone"]["restart_p95_ms"] / by["supervisord"]["restart_p95_ms"]
    )
    assert ratios["manager/supervisord"]["idle_cpu_pct"] == pytest.approx(
        0.02491601238477463 / 0.019298864976144053
    )
    # Standalone's idle CPU was 0 over its short window: no ratio rather than a division.
    assert ratios["manager/standalone"]["idle_cpu_pct"] is None
    assert ratios["standalone/supervisord"]["idle_cpu_pct"] == 0.0


def test_manager_figures_and_ratios_to_the_original() -> None:
    """Failures and unsent calls are summed, the database growth is in KiB, a value is set
    against the original's range (low ratio over its high end), and what the original
    never measured has no ratio."""
    manager = bench_system.combine_manager(copy.deepcopy(MANAGER_1000))
    sqlite, postgres = manager["sqlite"], manager["postgres"]
    assert manager["nodes"] == 1000
    assert sqlite["values"]["failures"] == 3
    assert sqlite["values"]["unsent"] == 5
    assert sqlite["values"]["db_kib_per_node_day"] == pytest.approx(720_000 / 1024)
    assert sqlite["values"]["calls_per_s"] == pytest.approx(66.66666666666667)
    assert sqlite["values"]["db_cores"] is None  # NaN in the JSON: in the Manager's process
    assert postgres["values"]["db_cores"] == 0.05
    low, high = sqlite["ratios"]["p99_ms"]
    assert (low, high) == (pytest.approx(75.93 / 41), pytest.approx(75.93 / 33))
    assert postgres["ratios"]["p99_ms"] == (pytest.approx(33 / 41), pytest.approx(1.0))
    assert sqlite["ratios"]["manager_cores"] is None  # no 1,000-node anchor


def test_latency_target_needs_every_report_path_under_200_ms() -> None:
    """The verdict is on the report paths; the writer's stamp and the agent-state path (its
    0.5 s debounce) are shown but not held to the target."""
    met = bench_system.combine_latency(copy.deepcopy(REPORT))
    assert met["met"] is True
    assert met["paths"]["manager_db"]["p99_over_target"] == pytest.approx(35.414437003055355 / 200)
    assert "p99_over_target" not in met["paths"]["agent_state_10"]
    assert met["paths"]["manager_db_written"]["p99_ms"] == 30.98
    assert "p99_over_target" not in met["paths"]["manager_db_written"]

    slow = copy.deepcopy(REPORT)
    slow["latency"]["manager_db"]["p99_ms"] = 250.0
    assert bench_system.combine_latency(slow)["met"] is False

    unmeasured = copy.deepcopy(REPORT)
    unmeasured["latency"]["recording"] = {"measured": 0.0, "expected": 30.0}
    assert bench_system.combine_latency(unmeasured)["met"] is False


def test_missing_parts_are_reported_with_why() -> None:
    """A part without JSON is listed as missing with its reason; the others still are reported."""
    documents = {"daemon": copy.deepcopy(REPORT), "manager-1000": None, "chaos": None}
    why = {"manager-1000": "timed out after 1200 s", "chaos": "benchmarks/x.py does not exist"}
    combined = bench_system.combine(documents, why)
    assert combined["missing"] == why
    text = bench_system.render(combined)
    assert "MISSING chaos: benchmarks/x.py does not exist" in text
    assert "| RSS (MiB) | 10 | 24.7 | 52.8 | 24.8 | 2.13 | 0.996 | 2.13 |" in text


def test_combine_only_reads_the_directory_and_writes_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--combine`` runs nothing: it reports the JSON in --dir, says what is missing (a
    file that is not JSON), and exits 1 because something is."""
    (tmp_path / "daemon.json").write_text(json.dumps(REPORT))
    (tmp_path / "manager-1000.json").write_text(json.dumps(MANAGER_1000))
    (tmp_path / "manager-10000.json").write_text("{not json")
    (tmp_path / "chaos.json").write_text(json.dumps(CHAOS))
    output = tmp_path / "system.json"
    status = bench_system.main(["--combine", "--dir", str(tmp_path), "--output", str(output)])
    assert status == 1
    printed = capsys.readouterr().out
    assert "| p99 (ms) | 1,000 | 75.93 | 33 | 33-41 | 1.85-2.3 | 0.805-1 |" in printed
    assert "Target: report p99 < 200 ms (the seed's): met." in printed
    document = json.loads(output.read_text())
    missing = document["combined"]["missing"]
    assert list(missing) == ["manager-10000"]
    assert "cannot be read" in missing["manager-10000"]
    assert document["combined"]["chaos"]["passed"] is True
    assert document["combined"]["manager"]["1000"]["sqlite"]["values"]["failures"] == 3


def test_a_part_runs_as_a_process_with_its_log(tmp_path: Path) -> None:
    """run_part runs the script with ``--output`` in the directory and keeps its output; a
    failure is a problem that quotes the output's last line; a script that does not exist is
    a problem, not a crash."""
    part = bench_system.Part("help", "bench_system.py", ("--help",), 60)
    outcome = bench_system.run_part(part, tmp_path)
    assert outcome.exit_code == 0 and outcome.problem == ""
    assert "--output" in outcome.command and str(tmp_path / "help.json") in outcome.command
    assert "--combine" in (tmp_path / "help.log").read_text()

    bad = bench_system.run_part(
        bench_system.Part("bad", "bench_system.py", ("--only", "x"), 60), tmp_path
    )
    assert bad.exit_code == 2
    assert bad.problem.startswith("exit status 2: ")
    assert "--only: unknown part(s) x" in bad.problem

    absent = bench_system.run_part(bench_system.Part("x", "no_such.py", (), 60), tmp_path)
    assert absent.exit_code is None
    assert absent.problem == "benchmarks/no_such.py does not exist"


def test_quick_plan_leaves_out_the_long_parts() -> None:
    quick = {p.name: p for p in bench_system.plan(quick=True)}
    full = {p.name: p for p in bench_system.plan(quick=False)}
    assert list(quick) == ["daemon", "manager-1000", "chaos"]
    assert list(full) == ["daemon", "manager-1000", "manager-10000", "chaos"]
    assert quick["chaos"].args == ("--duration", "60")
    assert full["chaos"].args == ("--duration", "300")


@given(
    value=st.floats(0.001, 1e6),
    low=st.floats(0.001, 1e6),
    spread=st.floats(1.0, 100.0),
)
def test_range_ratio_is_the_value_over_the_ends_of_the_range(
    value: float, low: float, spread: float
) -> None:
    high = low * spread
    result = bench_system.range_ratio(value, (low, high))
    assert result is not None
    assert result[0] <= result[1]
    assert result == (pytest.approx(value / high), pytest.approx(value / low))


def test_chaos_verdict_is_its_problems() -> None:
    """The chaos run passes when it found no problem; each problem is listed."""
    passed = bench_system.combine_chaos(copy.deepcopy(CHAOS))
    assert passed["passed"] is True
    assert passed["figures"]["agents"] == "2 x 2"
    assert passed["figures"]["spool_peak_kib"] == pytest.approx(20582 / 1024, abs=0.05)
    text = "\n".join(bench_system.render_chaos(passed))
    assert "| kill manager | 1 |" in text
    assert "| phases (s) | start 8, chaos 10, settle 1, check 9 |" in text
    assert "Invariants: held" in text

    broken = copy.deepcopy(CHAOS)
    broken["problems"] = ["node-1: agent a0 runs twice"]
    failed = bench_system.combine_chaos(broken)
    assert failed["passed"] is False
    text = "\n".join(bench_system.render_chaos(failed))
    assert "Invariants: BROKEN: 1 problem(s)." in text
    assert "* node-1: agent a0 runs twice" in text
