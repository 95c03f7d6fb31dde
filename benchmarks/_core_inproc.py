"""The supervision core alone, in process: RSS of ``Supervisor`` running N agents.

Run by ``bench_core.py`` with our interpreter::

    python benchmarks/_core_inproc.py N ROOT SETTLE_SECONDS

Imports only ``supervisor`` (plus trio, which it runs on, and the standard-library
workload module), builds the same configuration as the daemon's with ``parse_config``
(no YAML), runs ``Supervisor(..., store=StateFile(...), subreaper=True)`` exactly as
``hostvisor run`` does, waits until every agent is RUNNING, settles, and
prints one JSON line with its own RSS (VmRSS) at each step. The agents are stopped
on exit (``daemon.stop_agents_on_exit: true``).
"""

from __future__ import annotations

import json
import os
import sys
from functools import partial

import trio
from _core_workload import ours_document, read_vmrss

RSS_IMPORTED = read_vmrss()  # before supervisor: interpreter + trio + this module

from supervisor import AgentState, Supervisor  # noqa: E402
from transport.daemon import StateFile, parse_config  # noqa: E402


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
        for spec in config.agents:
            await supervisor.wait_state(spec.id, AgentState.RUNNING)
        await trio.sleep(settle_s)
        rss_running = read_vmrss()
        nursery.cancel_scope.cancel()
    return {
        "n": n,
        "rss_imported_trio": RSS_IMPORTED,
        "rss_configured": rss_configured,
        "rss_running": rss_running,
        "yaml_loaded": "yaml" in sys.modules,
        "psutil_loaded": "psutil" in sys.modules,
        "modules": len(sys.modules),
    }


def main() -> None:
    n, root, settle = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    print(json.dumps(trio.run(measure, n, root, settle)), flush=True)


if __name__ == "__main__":
    main()
