"""The supervision core alone, in process: RSS of ``Supervisor`` running N agents, step by step.

Run by ``bench_core.py`` with our interpreter (or by hand)::

    python benchmarks/_core_inproc.py N ROOT SETTLE_SECONDS

Does what ``hostvisor run`` does, minus the command line and YAML: defers ``ssl`` and
``hmac`` first (``transport/daemon/_lean.py``, which the daemon program installs before
trio is imported), imports trio, then ``supervisor`` and ``transport.daemon``, builds the
same configuration as the daemon's with ``parse_config``, runs
``Supervisor(..., store=StateFile(...), subreaper=True)``, waits until every agent is
RUNNING, settles, hands free heap pages back (``return_free_memory``, as the daemon does
after start-up) and prints one JSON line with its own RSS (VmRSS, bytes) after each step.
The agents are stopped on exit (``daemon.stop_agents_on_exit: true``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from functools import partial

from _core_workload import ours_document, read_vmrss

RSS_BARE = read_vmrss()  # interpreter + json, os, importlib.util and the workload module

# The daemon program's first step, taken alone: transport/daemon/__init__.py imports this
# module before anything else; loaded here under its own name, so that the package
# reuses it when it is imported below.
_LEAN = "transport.daemon._lean"
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location(
    _LEAN, os.path.join(_ROOT, "transport", "daemon", "_lean.py")
)
assert _spec is not None
assert _spec.loader is not None
sys.modules[_LEAN] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sys.modules[_LEAN])

import trio  # noqa: E402

RSS_TRIO = read_vmrss()

from supervisor import AgentState, Supervisor  # noqa: E402
from transport.daemon import StateFile, parse_config  # noqa: E402
from transport.daemon._run import return_free_memory  # noqa: E402

RSS_IMPORTED = read_vmrss()


async def measure(n: int, root: str, settle_s: float) -> dict[str, object]:
    """Run the core with ``n`` agents under ``root``; return the RSS figures."""
    marker = os.path.basename(root)
    starts = os.path.join(root, "starts")
    os.makedirs(starts, exist_ok=True)
    document = ours_document(os.path.join(root, "ours"), starts, n, marker)
    config = parse_config(document, source="bench_core")
    rss_configured = read_vmrss()
    work_dir = config.daemon.work_dir
    leave = not config.daemon.stop_agents_on_exit
    supervisor = Supervisor(
        config.agents,
        work_dir=work_dir,
        store=StateFile(os.path.join(work_dir, "state.json")),
        subreaper=True,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(supervisor.run, leave_running=leave))
        rss_started = read_vmrss()
        return_free_memory()
        for spec in config.agents:
            await supervisor.wait_state(spec.id, AgentState.RUNNING)
        await trio.sleep(settle_s)
        rss_running = read_vmrss()
        return_free_memory()
        rss_trimmed = read_vmrss()
        nursery.cancel_scope.cancel()
    return {
        "n": n,
        "rss_bare": RSS_BARE,
        "rss_imported_trio": RSS_TRIO,
        "rss_imported": RSS_IMPORTED,
        "rss_configured": rss_configured,
        "rss_started": rss_started,
        "rss_running": rss_running,
        "rss_running_trimmed": rss_trimmed,
        "ssl_loaded": "_ssl" in sys.modules,
        "hashlib_loaded": "_hashlib" in sys.modules,
        "yaml_loaded": "yaml" in sys.modules,
        "psutil_loaded": "psutil" in sys.modules,
        "modules": len(sys.modules),
    }


def main() -> None:
    n, root, settle = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    print(json.dumps(trio.run(measure, n, root, settle)), flush=True)


if __name__ == "__main__":
    main()
