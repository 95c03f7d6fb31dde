"""A long chaos run of the whole system (issue 15): a Manager and daemons killed for minutes.

Runs ``tests/system_chaos.py`` (the same driver as the CI test) for ``--duration`` seconds
with ``--nodes`` daemons of ``--agents`` agents each and prints what was done and what was
found: the actions, the agents' spawns and restarts, the daemon and Manager starts, the
longest Manager outage, what went through the spools, the metric points checked, how long
the fleet took to settle, the load average (the machine may be shared) and every problem
(none expected). Writes the same as JSON to ``--output``. Exit status 1 if any invariant
was broken.

    python benchmarks/bench_system_chaos.py --duration 300 --nodes 3 --agents 5 --seed 7
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.system_chaos import GAP_LIMIT_S, SPOOL_BOUND, SystemChaosRun

RESULTS = Path(__file__).resolve().parent / "results" / "system-chaos.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of chaos")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--agents", type=int, default=5, help="agents per node")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--tls", action="store_true", help="mutual TLS to the Manager")
    parser.add_argument("--output", type=Path, default=RESULTS, help="the JSON results")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="hvsc-", dir="/tmp"))  # short: socket paths
    began = time.monotonic()
    try:
        run = SystemChaosRun(
            root, nodes=args.nodes, agents_per_node=args.agents, seed=args.seed, tls=args.tls
        )
        report = run.run(args.duration)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    elapsed = time.monotonic() - began
    print(
        f"system chaos: {args.duration:g} s, {args.nodes} nodes x {args.agents} agents,"
        f" seed {args.seed}{', TLS' if args.tls else ''} ({elapsed:.0f} s in all)"
    )
    for action, count in sorted(report.actions.items()):
        print(f"  {action:<22} {count:>7}")
    rows = [
        ("spawns", f"{report.spawns}"),
        ("agent restarts", f"{report.restarts}"),
        ("daemon starts", f"{report.daemon_starts}"),
        ("manager starts", f"{report.manager_starts}"),
        ("longest outage", f"{report.longest_outage_s:.1f} s"),
        ("  longest stop", f"{report.longest_stop_s:.1f} s"),
        ("  longest start", f"{report.longest_start_s:.1f} s"),
        ("spool peak", f"{report.spool_peak_bytes / 1024:.1f} KiB"),
        ("spooled reports", f"{report.spooled_reports} ({report.unread_reports} unread)"),
        ("spooled points", f"{report.spooled_points}"),
        ("stored points", f"{report.points}"),
        ("explained gaps", f"{report.explained_gaps}"),
        ("settled after", f"{report.settle_s:.2f} s"),
        ("load average", " ".join(f"{x:.2f}" for x in report.load)),
        ("phases", ", ".join(f"{k} {v:.0f} s" for k, v in report.phases_s.items())),
        ("problems", f"{len(report.problems)}"),
    ]
    for name, value in rows:
        print(f"  {name:<22} {value:>7}")
    for problem in report.problems:
        print(f"    {problem}")
    result = {
        "duration_s": args.duration,
        "nodes": args.nodes,
        "agents_per_node": args.agents,
        "seed": args.seed,
        "tls": args.tls,
        "elapsed_s": round(elapsed, 1),
        "spool_bound": SPOOL_BOUND,
        "gap_limit_s": GAP_LIMIT_S,
        **{f.name: getattr(report, f.name) for f in dataclasses.fields(report)},
        "actions": dict(report.actions),  # (asdict would rebuild the Counter from pairs)
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(f"  written to {args.output}")
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
