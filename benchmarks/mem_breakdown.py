"""Where our daemon's memory goes: imports, and each supervised agent (a diagnostic).

Run with the project's interpreter from the repository root::

    .venv/bin/python benchmarks/mem_breakdown.py steps            # RSS after each import step
    .venv/bin/python benchmarks/mem_breakdown.py modules [--top 30]  # RSS each module adds
    .venv/bin/python benchmarks/mem_breakdown.py marginal decimal,fractions h11 ...
    .venv/bin/python benchmarks/mem_breakdown.py agents [--n 10,300] [--lines]
    .venv/bin/python benchmarks/mem_breakdown.py structures       # sizes of per-agent pieces

* ``steps``: a fresh interpreter per step (median of 3), each importing more: the bare
  interpreter, trio (as a library imports it, and as the daemon does, with ``ssl`` and
  ``hmac`` deferred by ``transport/daemon/_lean.py``), ``supervisor``,
  ``transport.daemon``, and whether OpenSSL (``_hashlib``, ``_ssl``) got loaded.
* ``modules``: one interpreter imports ``transport.daemon`` (the daemon's way) and
  measures VmRSS before and after each module's code runs; a module's own figure is its
  total minus its imports'. Page and arena granularity make single figures noisy (a
  module that happens to open a new 1 MiB pymalloc arena is charged for it): read the
  large ones, and confirm with ``marginal``.
* ``marginal``: what importing each named group of modules adds to an interpreter that
  already holds trio (deferred) and the standard modules the daemon needs anyway (median
  of 3 fresh interpreters): the saving if that group were imported only when used.
* ``agents``: runs the supervision core in process (as ``_core_inproc.py``) with each N,
  traces Python allocations (tracemalloc) from before the configuration is built until
  every agent has run 2 s, and prints the bytes per agent by file (``--lines``: by line)
  from the difference between the largest and the smallest N. (tracemalloc's own
  bookkeeping inflates RSS here: RSS per agent comes from ``_core_inproc.py``.)
* ``structures``: ``sys.getsizeof``-level sizes of the pieces each agent owns (a Trio task
  waiting on a pidfd, a resource history after an hour, an empty deque or list).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MIB = 1024 * 1024

# Loads transport/daemon/_lean.py alone, as transport.daemon does first.
DEFER = (
    "import importlib.util, sys\n"
    "spec = importlib.util.spec_from_file_location("
    "'transport.daemon._lean', 'transport/daemon/_lean.py')\n"
    "sys.modules[spec.name] = m = importlib.util.module_from_spec(spec)\n"
    "spec.loader.exec_module(m)\n"
)
READ_RSS = (
    "import re\nprint(re.search(r'VmRSS:\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n"
)
STEPS = (
    ("bare interpreter", ""),
    ("import trio (a library's way: ssl eager)", "import trio\n"),
    ("import trio (the daemon's way: ssl, hmac deferred)", DEFER + "import trio\n"),
    ("+ import supervisor", DEFER + "import trio, supervisor\n"),
    ("+ import transport.daemon", "import transport.daemon\n"),
    ("+ yaml (read the configuration)", "import transport.daemon, yaml\n"),
)
#: What the daemon imports whatever happens (the base of ``marginal``).
NEEDED = (
    "import trio, logging, json, subprocess, socket, select, signal, shutil, tempfile, "
    "contextlib, dataclasses, enum, functools, collections, math, re, stat, struct, errno, "
    "urllib.parse, ipaddress, base64, typing, argparse, attrs\n"
)


def fresh_kib(code: str) -> int:
    """VmRSS (KiB) of a fresh interpreter after running ``code`` (median of 3)."""
    runs = [
        int(
            subprocess.run(
                [sys.executable, "-c", code + READ_RSS],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        for _ in range(3)
    ]
    return int(statistics.median(runs))


def steps() -> None:
    print("RSS of a fresh interpreter after each step (median of 3):")
    for label, code in STEPS:
        print(f"  {fresh_kib(code) / 1024:6.1f} MiB  {label}")
    probe = (
        "import sys, transport.daemon\n"
        "print(sorted(m for m in ('_ssl', '_hashlib', 'hmac', 'secrets', 'decimal', "
        "'fractions', 'h11', 'tomllib', 'difflib', 'datetime') "
        "if m in sys.modules and type(sys.modules[m]).__name__ == 'module'))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    print(f"  loaded after import transport.daemon: {loaded}")


MODULES_SCRIPT = """
import os, sys
_statm = os.open("/proc/self/statm", os.O_RDONLY)
PAGE = os.sysconf("SC_PAGE_SIZE")

def rss():
    return int(os.pread(_statm, 100, 0).split()[1]) * PAGE

from importlib import _bootstrap_external as be
stack, results = [], {}

def wrap(original):
    def exec_module(self, module):
        stack.append(0)
        before = rss()
        try:
            original(self, module)
        finally:
            total = rss() - before
            children = stack.pop()
            results[module.__name__] = (total - children, total)
            if stack:
                stack[-1] += total
    return exec_module

be._LoaderBasics.exec_module = wrap(be._LoaderBasics.exec_module)
be.ExtensionFileLoader.exec_module = wrap(be.ExtensionFileLoader.exec_module)
base = rss()
import transport.daemon
print(base, rss())
for name, (own, total) in sorted(results.items(), key=lambda kv: -kv[1][0])[:TOP]:
    print(own, total, name)
"""


def modules(top: int) -> None:
    out = subprocess.run(
        [sys.executable, "-c", MODULES_SCRIPT.replace("TOP", str(top))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    base, end = (int(v) for v in out[0].split())
    print(f"import transport.daemon: {base / MIB:.1f} -> {end / MIB:.1f} MiB; by module:")
    print(f"  {'own KiB':>8}  {'with imports':>12}  module")
    for line in out[1:]:
        own, total, name = line.split()
        print(f"  {int(own) // 1024:8d}  {int(total) // 1024:12d}  {name}")


def marginal(groups: list[str]) -> None:
    base = fresh_kib(DEFER + NEEDED)
    print(f"base (trio deferred + what the daemon needs anyway): {base / 1024:.1f} MiB")
    for group in groups:
        names = [name for name in group.split(",") if name]
        code = DEFER + NEEDED + "".join(f"import {name}\n" for name in names)
        print(f"  +{fresh_kib(code) - base:6d} KiB  {group}")


AGENTS_SCRIPT = """
import gc, json, os, sys, tracemalloc
sys.path.insert(0, HERE)
import transport.daemon  # the hook first, as the daemon
import trio
from functools import partial
from _core_workload import ours_document
from supervisor import AgentState, Supervisor
from transport.daemon import StateFile, parse_config

async def run(n, root, key):
    gc.collect()
    before = tracemalloc.take_snapshot()
    starts = os.path.join(root, "starts")
    os.makedirs(starts, exist_ok=True)
    document = ours_document(os.path.join(root, "ours"), starts, n, os.path.basename(root))
    config = parse_config(document, source="mem_breakdown")
    work = config.daemon.work_dir
    supervisor = Supervisor(
        config.agents, work_dir=work, store=StateFile(os.path.join(work, "state.json")),
        subreaper=True,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(supervisor.run, leave_running=False))
        for spec in config.agents:
            await supervisor.wait_state(spec.id, AgentState.RUNNING)
        await trio.sleep(2)
        gc.collect()
        after = tracemalloc.take_snapshot()
        skip = [tracemalloc.Filter(False, tracemalloc.__file__)]
        stats = after.filter_traces(skip).compare_to(before.filter_traces(skip), key)
        print(json.dumps({str(s.traceback): [s.size_diff, s.count_diff] for s in stats}))
        nursery.cancel_scope.cancel()

tracemalloc.start()
trio.run(run, int(sys.argv[1]), sys.argv[2], sys.argv[3])
"""


def kill_marked(marker: str) -> None:
    """SIGKILL, by PID, every process whose command line holds the run's marker."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as file:
                if marker.encode() in file.read():
                    os.kill(int(entry), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            continue


def agents(ns: list[int], key: str, top: int) -> None:
    found = {}
    for n in ns:
        root = tempfile.mkdtemp(prefix=f"hvmem-{n}-")
        try:
            out = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    AGENTS_SCRIPT.replace("HERE", repr(str(HERE))),
                    str(n),
                    root,
                    key,
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            found[n] = json.loads(out.strip().splitlines()[-1])
        finally:
            kill_marked(os.path.basename(root))
            subprocess.run(["rm", "-rf", root], check=False)
    small, large = min(ns), max(ns)
    agents_more = large - small
    by_small, by_large = found[small], found[large]
    rows = []
    for where, (size, count) in by_large.items():
        size0, count0 = by_small.get(where, [0, 0])
        rows.append(((size - size0) / agents_more, (count - count0) / agents_more, where))
    rows.sort(reverse=True)
    traced = sum(row[0] for row in rows)
    print(f"Per agent, from N={small} to N={large}: {traced:.0f} B of Python objects")
    print(f"  {'B/agent':>8}  {'objects':>7}  where")
    for size, count, where in rows[:top]:
        print(f"  {size:8.0f}  {count:7.1f}  {where.replace(str(ROOT) + '/', '')}")


def structures() -> None:
    import collections
    import tracemalloc

    import trio

    from supervisor import ResourceHistory

    def traced(build: object) -> float:
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        kept = build() if callable(build) else None
        gc.collect()
        size = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        del kept
        return size

    print("Per-agent pieces (tracemalloc, bytes):")
    print(f"  {traced(collections.deque):8.0f}  an empty collections.deque")
    print(f"  {traced(list):8.0f}  an empty list (an agent's inbox)")
    print(f"  {traced(ResourceHistory):8.0f}  an empty ResourceHistory (three arrays)")

    def history_after_an_hour() -> list[ResourceHistory]:
        histories = [ResourceHistory() for _ in range(100)]
        for history in histories:
            for i in range(120):  # an hour of samples at the default 30 s interval
                history.record(i * 30.0, 1.5, 50_000_000 + i)
        return histories

    print(f"  {traced(history_after_an_hour) / 100:8.0f}  a ResourceHistory after 1 h at 30 s")

    async def tasks() -> None:
        pipes = [os.pipe() for _ in range(100)]
        try:
            async with trio.open_nursery() as nursery:

                async def watcher(fd: int) -> None:
                    with trio.CancelScope(shield=True):
                        await trio.lowlevel.wait_readable(fd)

                gc.collect()
                tracemalloc.start()
                before = tracemalloc.get_traced_memory()[0]
                for read, _ in pipes:
                    nursery.start_soon(watcher, read)
                await trio.sleep(0.1)
                gc.collect()
                size = (tracemalloc.get_traced_memory()[0] - before) / len(pipes)
                tracemalloc.stop()
                print(f"  {size:8.0f}  a Trio task in a shielded scope, waiting on a descriptor")
                for _, write in pipes:
                    os.write(write, b"x")
        finally:
            for read, write in pipes:
                os.close(read)
                os.close(write)

    trio.run(tasks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("steps")
    modules_parser = sub.add_parser("modules")
    modules_parser.add_argument("--top", type=int, default=30)
    marginal_parser = sub.add_parser("marginal")
    marginal_parser.add_argument("groups", nargs="+", help="comma-separated module groups")
    agents_parser = sub.add_parser("agents")
    agents_parser.add_argument("--n", default="10,300")
    agents_parser.add_argument("--lines", action="store_true", help="by line, not by file")
    agents_parser.add_argument("--top", type=int, default=30)
    sub.add_parser("structures")
    args = parser.parse_args()
    if args.what == "steps":
        steps()
    elif args.what == "modules":
        modules(args.top)
    elif args.what == "marginal":
        marginal(args.groups)
    elif args.what == "agents":
        ns = sorted(int(part) for part in args.n.split(","))
        agents(ns, "lineno" if args.lines else "filename", args.top)
    else:
        structures()


if __name__ == "__main__":
    main()
