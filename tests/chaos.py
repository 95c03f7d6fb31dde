"""A chaos run of the real daemon: random kills, stops and reloads; then the invariants.

Used by ``tests/supervisor/test_chaos.py`` (a short run in CI) and by
``benchmarks/bench_chaos.py`` (a longer run that prints its figures). Everything is real:
``hostvisor run`` as a subprocess, shell agents that each keep a child in their process
group and one that escaped it with ``setsid``, signals sent with ``os.kill``.

What happens, at random, every 50 to 250 ms for ``duration_s``:

* SIGKILL to an agent's main process, or to its whole process group;
* SIGKILL to the daemon (it is started again 0 to 0.5 s later);
* SIGSTOP to the daemon, SIGCONT 0.1 to 0.5 s later;
* SIGSTOP to an agent's main process, SIGCONT later;
* SIGHUP to the daemon (a reload of an unchanged file).

Afterwards the daemon is given time to settle and asked to exit (SIGTERM, agents left
running), and the checks are:

* every agent runs exactly once: all live processes marked with the agent belong to one
  run, whose main process is the one the daemon's state file names, with both its
  children (nothing of an earlier run survives: no orphan);
* no zombie is left among the daemon's children (checked before it exits);
* restart counts add up: for every agent, the spawns it recorded (each run appends its
  PID to a file) are one more than the daemon's restart count.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import yaml

from supervisor._proc import read_stat, scan_marked
from supervisor._process import MARKERS, owner_marker


@dataclass
class ChaosReport:
    """What a chaos run did and what it found."""

    actions: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    spawns: int = 0
    daemon_starts: int = 0
    settle_s: float = 0.0


def _agent_script(starts: Path, agent_id: str) -> str:
    return f'echo "$$" >> {starts / agent_id}; sleep 1000 & setsid sleep 1000 & exec sleep 1000'


def write_config(root: Path, agents: int) -> Path:
    """A daemon.yaml for ``agents`` shell agents under ``root``; return its path."""
    starts = root / "starts"
    starts.mkdir(parents=True, exist_ok=True)
    document = {
        "daemon": {"work_dir": str(root / "work"), "log_level": "info"},
        "agent_defaults": {
            "binary_path": "/bin/sh",
            "start_seconds": "0s",
            "stop_timeout": "2s",
            "restart": {
                "policy": "always",
                "max_retries": -1,
                "backoff_base": "100ms",
                "backoff_max": "200ms",
            },
            "health_check": {"heartbeat_timeout": "0s"},
        },
        "agents": [
            {"id": f"c{index}", "args": ["-c", _agent_script(starts, f"c{index}")]}
            for index in range(agents)
        ],
    }
    path = root / "daemon.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def marked(owner: str) -> dict[int, tuple[str, str]]:
    """Live processes with this owner marker: pid -> (agent id, run id)."""
    return {pid: (m[1], m[2]) for pid, m in scan_marked(MARKERS, owner).items()}


class ChaosRun:
    """One chaos run in ``root`` with ``agents`` agents."""

    def __init__(self, root: Path, agents: int, seed: int) -> None:
        self.root = root
        self.agents = [f"c{index}" for index in range(agents)]
        self.config = write_config(root, agents)
        self.work = root / "work"
        self.owner = owner_marker(str(self.work))
        self.random = random.Random(seed)
        self.report = ChaosReport()
        self.daemon: subprocess.Popen[bytes] | None = None
        self.stopped: list[int] = []

    # -- the daemon ------------------------------------------------------------------

    def start_daemon(self) -> None:
        log = (self.root / "daemon.log").open("ab")
        self.daemon = subprocess.Popen(
            [sys.executable, "-m", "transport.daemon", "run", "--config", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        self.report.daemon_starts += 1

    def _daemon_pid(self) -> int | None:
        if self.daemon is None or self.daemon.poll() is not None:
            return None
        return self.daemon.pid

    # -- chaos -------------------------------------------------------------------------

    def _leaders(self) -> dict[str, int]:
        """Each agent's main process as the processes themselves tell (parent unmarked)."""
        found = marked(self.owner)
        leaders = {}
        for pid, (agent_id, run_id) in found.items():
            stat = read_stat(pid)
            parent = found.get(stat.ppid) if stat is not None else None
            if parent is None or parent[1] != run_id:
                leaders[agent_id] = pid
        return leaders

    def _act(self) -> None:
        roll = self.random.random()
        daemon = self._daemon_pid()
        leaders = self._leaders()
        target = self.random.choice(sorted(leaders.values())) if leaders else None
        if roll < 0.35 and target is not None:
            self._send(target, signal.SIGKILL, "kill agent")
        elif roll < 0.55 and target is not None:
            try:
                os.killpg(target, signal.SIGKILL)
                self.report.actions["kill agent group"] += 1
            except ProcessLookupError:
                pass
        elif roll < 0.65 and daemon is not None:
            self._send(daemon, signal.SIGKILL, "kill daemon")
            assert self.daemon is not None
            self.daemon.wait()
            time.sleep(self.random.uniform(0, 0.5))
            self.start_daemon()
        elif roll < 0.75 and daemon is not None:
            self._pause(daemon, "stop daemon")
        elif roll < 0.85 and target is not None:
            self._pause(target, "stop agent")
        elif daemon is not None:
            self._send(daemon, signal.SIGHUP, "reload daemon")

    def _send(self, pid: int, sig: int, what: str) -> None:
        try:
            os.kill(pid, sig)
            self.report.actions[what] += 1
        except ProcessLookupError:
            pass

    def _pause(self, pid: int, what: str) -> None:
        self._send(pid, signal.SIGSTOP, what)
        time.sleep(self.random.uniform(0.1, 0.5))
        self._send(pid, signal.SIGCONT, "continue")

    def run(self, duration_s: float, settle_timeout_s: float = 60.0) -> ChaosReport:
        """Run the chaos for ``duration_s``, settle, check; always clean up."""
        try:
            self.start_daemon()
            self._wait_all_started(settle_timeout_s)
            end = time.monotonic() + duration_s
            while time.monotonic() < end:
                self._act()
                time.sleep(self.random.uniform(0.05, 0.25))
            self._settle(settle_timeout_s)
            self._check()
        finally:
            self._cleanup()
        return self.report

    # -- checks --------------------------------------------------------------------------

    def _spawns(self, agent_id: str) -> int:
        try:
            return len((self.root / "starts" / agent_id).read_text().split())
        except FileNotFoundError:
            return 0

    def _wait_all_started(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not all(self._spawns(a) for a in self.agents):
            if time.monotonic() > deadline:
                raise AssertionError("the agents did not start")
            time.sleep(0.02)

    def _settled(self) -> bool:
        found = marked(self.owner)
        runs: dict[str, set[str]] = {}
        count: Counter[str] = Counter()
        for agent_id, run_id in found.values():
            runs.setdefault(agent_id, set()).add(run_id)
            count[agent_id] += 1
        return all(len(runs.get(a, ())) == 1 and count[a] == 3 for a in self.agents)

    def _settle(self, timeout_s: float) -> None:
        started = time.monotonic()
        if self._daemon_pid() is None:
            self.start_daemon()
        deadline = started + timeout_s
        while not self._settled():
            if time.monotonic() > deadline:
                self.report.problems.append(f"not settled after {timeout_s:g} s: {self._census()}")
                return
            time.sleep(0.05)
        time.sleep(0.5)  # a last restart may still be on its way: it must not come
        self.report.settle_s = time.monotonic() - started

    def _census(self) -> dict[str, list[tuple[int, str]]]:
        census: dict[str, list[tuple[int, str]]] = {}
        for pid, (agent_id, run_id) in marked(self.owner).items():
            census.setdefault(agent_id, []).append((pid, run_id[:8]))
        return census

    def _check(self) -> None:
        daemon = self._daemon_pid()
        assert daemon is not None and self.daemon is not None
        zombies = [
            p.pid for p in psutil.Process(daemon).children() if p.status() == psutil.STATUS_ZOMBIE
        ]
        if zombies:
            self.report.problems.append(f"zombie children of the daemon: {zombies}")
        self.daemon.send_signal(signal.SIGTERM)
        if self.daemon.wait(timeout=60) != 0:
            self.report.problems.append(f"the daemon exited with {self.daemon.returncode}")
        state = json.loads((self.work / "state.json").read_text())["agents"]
        found = marked(self.owner)
        leaders = self._leaders()
        for agent_id in self.agents:
            runs = {run for pid, (a, run) in found.items() if a == agent_id}
            members = [pid for pid, (a, _) in found.items() if a == agent_id]
            record = state.get(agent_id, {})
            recorded_pid = (record.get("process") or {}).get("pid")
            if len(runs) != 1 or len(members) != 3:
                self.report.problems.append(
                    f"{agent_id}: {len(members)} processes in {len(runs)} run(s)"
                )
            if leaders.get(agent_id) != recorded_pid:
                self.report.problems.append(
                    f"{agent_id}: runs as {leaders.get(agent_id)}, state says {recorded_pid}"
                )
            spawns = self._spawns(agent_id)
            self.report.spawns += spawns
            if spawns - 1 != record.get("restart_count"):
                self.report.problems.append(
                    f"{agent_id}: {spawns} spawns but restart_count {record.get('restart_count')}"
                )

    def _cleanup(self) -> None:
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGCONT)
            self.daemon.kill()
            self.daemon.wait()
        for pid in marked(self.owner):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
