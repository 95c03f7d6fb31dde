"""The supervision core in process, with or without its health monitor (bench_health's runner).

Run by ``bench_health.py`` with our interpreter::

    python benchmarks/_health_inproc.py CONFIG_JSON on|off STATS_FILE

Builds the configuration with ``parse_config`` from the JSON document bench_health wrote
(the document the daemon reads as YAML in the other variants), runs
``Supervisor(..., store=StateFile(...), subreaper=True, health_checks=...)`` as
``hostvisor run`` does, and serves until SIGTERM or SIGINT (the agents are
stopped on exit: ``daemon.stop_agents_on_exit: true``). ``off`` is the only way to run
the core without its health monitor: the configuration can turn every check off, but not
the monitor's sockets and its resource sampling on the interval tick.

Each SIGUSR2 appends one JSON line to STATS_FILE: :meth:`Supervisor.statistics`, with the
health monitor's counters (null when the monitor is off), so the benchmark can take their
difference over its idle window. Signals arrive through Trio's wake-up fd: no timer.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
from functools import partial

import trio

from supervisor import Supervisor
from transport.daemon import StateFile, parse_config


def snapshot(supervisor: Supervisor) -> dict[str, object]:
    """The supervisor's statistics as JSON-ready data."""
    stats = supervisor.statistics()
    return {
        "agents": stats.agents,
        "by_state": {state.value: count for state, count in stats.by_state.items()},
        "orphans_reaped": stats.orphans_reaped,
        "health": None if stats.health is None else dataclasses.asdict(stats.health),
    }


async def serve(config_path: str, health_checks: bool, stats_path: str) -> None:
    with open(config_path, encoding="utf-8") as file:
        document = json.load(file)
    config = parse_config(document, source=config_path)
    work_dir = config.daemon.work_dir
    leave = not config.daemon.stop_agents_on_exit
    supervisor = Supervisor(
        config.agents,
        work_dir=work_dir,
        store=StateFile(os.path.join(work_dir, "state.json")),
        subreaper=True,
        health_checks=health_checks,
    )
    watched = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)
    with trio.open_signal_receiver(*watched) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(supervisor.run, leave_running=leave))
            async for signum in signals:
                if signum != signal.SIGUSR2:
                    break
                with open(stats_path, "a", encoding="utf-8") as out:
                    out.write(json.dumps(snapshot(supervisor)) + "\n")
            nursery.cancel_scope.cancel()


def main() -> None:
    config_path, mode, stats_path = sys.argv[1:4]
    if mode not in ("on", "off"):
        raise SystemExit(f"mode must be on or off, not {mode!r}")
    trio.run(serve, config_path, mode == "on", stats_path)


if __name__ == "__main__":
    main()
