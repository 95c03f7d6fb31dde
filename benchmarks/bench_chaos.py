"""A long chaos run of the real daemon (issue 9): kills, stops and reloads for minutes.

Runs ``tests/chaos.py`` (the same driver as the CI test) for ``--duration`` seconds with
``--agents`` agents and prints what was done and what was found: the actions, the spawns,
the daemon restarts, how long the daemon took to settle afterwards, and every problem
(none expected). Exit status 1 if any invariant was broken.

    python benchmarks/bench_chaos.py --duration 300 --agents 20 --seed 7
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.chaos import ChaosRun


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=180.0, help="seconds of chaos")
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hv-chaos-") as root:
        report = ChaosRun(Path(root), args.agents, args.seed).run(args.duration)
    print(f"chaos: {args.duration:g} s, {args.agents} agents, seed {args.seed}")
    for action, count in sorted(report.actions.items()):
        print(f"  {action:<18} {count:>6}")
    print(f"  spawns             {report.spawns:>6}")
    print(f"  daemon starts      {report.daemon_starts:>6}")
    print(f"  settled after      {report.settle_s:>6.2f} s")
    print(f"  problems           {len(report.problems):>6}")
    for problem in report.problems:
        print(f"    {problem}")
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
