"""The floor of bench_core's start-up figure on this machine: its children, started by nothing.

Run with the project's interpreter from the repository root (a diagnostic)::

    .venv/bin/python benchmarks/startup_floor.py [--n 300] [--runs 3]

Starts the N children of ``bench_core.py``'s workload (same command lines, a work
directory and an appended log file each) from a bare interpreter that imports nothing
else, in two ways, and reports, as bench_core does, the latest child's own start time
(bash's ``$EPOCHREALTIME``) minus the launch of that interpreter:

* ``posix_spawn``: one thread, ``os.posix_spawn`` in a loop: the least a spawner can do.
* ``popen x4``: ``subprocess.Popen`` from four threads, as the daemon spawns (without
  its imports, its configuration and its bookkeeping).

No supervisor can start the workload faster than these on the same machine; the
difference to bench_core's figure is what the supervisor itself costs. The children are
killed by PID (from their starts files) after each run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _core_workload import BASH, child_script

SPAWNER = {
    "posix_spawn": """
import os, sys
root, starts, marker, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
for i in range(n):
    work = f"{root}/agents/a{i}"
    os.makedirs(work, exist_ok=True)
    fd = os.open(f"{root}/logs/a{i}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    script = SCRIPT.format(starts=starts, agent=f"a{i}", marker=marker)
    actions = [(os.POSIX_SPAWN_DUP2, fd, 1), (os.POSIX_SPAWN_DUP2, fd, 2)]
    os.chdir(work)
    os.posix_spawn(BASH, [BASH, "-c", script], os.environ, file_actions=actions, setsid=True)
    os.close(fd)
""",
    "popen x4": """
import os, subprocess, sys, threading
root, starts, marker, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
def spawn(i):
    work = f"{root}/agents/a{i}"
    os.makedirs(work, exist_ok=True)
    fd = os.open(f"{root}/logs/a{i}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    script = SCRIPT.format(starts=starts, agent=f"a{i}", marker=marker)
    subprocess.Popen([BASH, "-c", script], cwd=work, stdin=subprocess.DEVNULL, stdout=fd,
                     stderr=fd, start_new_session=True, close_fds=True)
    os.close(fd)
def worker(k):
    for i in range(k, n, 4):
        spawn(i)
threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
for t in threads: t.start()
for t in threads: t.join()
""",
}


def one_run(way: str, n: int) -> float:
    """Start the workload ``way``; return the latest child's start minus the launch (s)."""
    root = Path(tempfile.mkdtemp(prefix="hvfloor-"))
    starts, marker = root / "starts", root.name
    for sub in (starts, root / "logs", root / "agents"):
        sub.mkdir()
    template = child_script("{starts}", "{agent}", "{marker}")
    code = f"BASH = {BASH!r}\nSCRIPT = {template!r}\n" + SPAWNER[way]
    pids: list[int] = []
    try:
        launched = time.time()
        subprocess.run(
            [sys.executable, "-S", "-c", code, str(root), str(starts), marker, str(n)],
            check=True,
        )
        lines: dict[str, str] = {}
        deadline = time.monotonic() + 60
        while len(lines) < n and time.monotonic() < deadline:
            for entry in os.listdir(starts):
                if entry not in lines:
                    text = (starts / entry).read_text()
                    if text.endswith("\n"):
                        lines[entry] = text
            time.sleep(0.01)
        pids = [int(text.split()[0]) for text in lines.values()]
        if len(lines) < n:
            raise RuntimeError(f"only {len(lines)}/{n} children started")
        return max(float(text.split()[1]) for text in lines.values()) - launched
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[float]] = {way: [] for way in SPAWNER}
    for _ in range(args.runs):  # interleaved: the machine's load changes
        for way in SPAWNER:
            results[way].append(one_run(way, args.n))
    print(f"start-up of {args.n} children with no supervisor (s), {args.runs} runs each:")
    for way, values in results.items():
        shown = ", ".join(f"{v:.3f}" for v in values)
        print(f"  {way:12s} median {statistics.median(values):.3f}  ({shown})")


if __name__ == "__main__":
    main()
