"""Helpers for tests that run real agent processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import psutil
import trio

from supervisor import AgentRecord, AgentSpec, LogSpec, RestartSpec

SH = "/bin/sh"
#: Safety limit for waits on real processes and sockets (never a timing assertion).
GUARD_S = 10.0


def shell_agent(agent_id: str, script: str, tmp: Path, **kw: object) -> AgentSpec:
    """An agent running ``sh -c script``, with its log under ``tmp``."""
    kw.setdefault("start_seconds_s", 0.0)
    kw.setdefault("stop_timeout_s", 10.0)
    kw.setdefault("restart", RestartSpec(backoff_base_s=1.0, backoff_max_s=4.0))
    return AgentSpec(
        id=agent_id,
        binary_path=SH,
        args=("-c", script),
        work_dir=str(tmp / "agents" / agent_id),
        log=LogSpec(file=str(tmp / "logs" / f"{agent_id}.log")),
        **kw,  # type: ignore[arg-type]
    )


async def wait_for_file(path: Path, text: str, *, lines: int = 1) -> list[str]:
    """Poll until ``path`` has ``lines`` lines containing ``text``; return those lines.

    Polls with short sleeps, so it works under both the real clock and an autojump
    MockClock (where each sleep passes instantly in virtual time).
    """
    while True:
        try:
            found = [line for line in path.read_text().splitlines() if text in line]
        except FileNotFoundError:
            found = []
        if len(found) >= lines:
            return found
        await trio.sleep(0.005)


def free_port() -> int:
    """A port on 127.0.0.1 that nobody listens on (for the moment)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def kill_all(pids: Iterable[int]) -> None:
    """Last-resort cleanup for processes a failed test may leave behind."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Poll ``predicate`` (there is no event for "another process did it")."""
    with trio.fail_after(GUARD_S):
        while not predicate():
            await trio.sleep(0.01)


async def start_gated_child(nursery: trio.Nursery, code: str, env: dict[str, str]) -> trio.Process:
    """A Python child, owned by ``nursery``, that runs ``code`` once :func:`release` says go.

    The gate lets a test register the child's pid (say, as an agent) before it acts.
    """
    gated = "import sys\nsys.stdin.readline()\n" + code
    process: trio.Process = await nursery.start(
        partial(
            trio.run_process,
            [sys.executable, "-c", gated],
            stdin=subprocess.PIPE,
            env={**os.environ, **env},
        )
    )
    return process


async def release(process: trio.Process) -> None:
    """Let a :func:`start_gated_child` child run its code."""
    assert process.stdin is not None
    await process.stdin.send_all(b"go\n")


class MemoryStore:
    """An :class:`supervisor.AgentStore` kept in memory (what a test needs of a store)."""

    def __init__(self) -> None:
        self.saved: dict[str, AgentRecord] = {}
        self.saves = 0

    def load(self) -> dict[str, AgentRecord]:
        return dict(self.saved)

    def save(self, records: Mapping[str, AgentRecord]) -> None:
        self.saved = dict(records)
        self.saves += 1


def across_runs(tmp: Path, store: MemoryStore | None = None) -> dict[str, Any]:
    """``open_supervisor`` options for runs that leave agents to the next one: a work dir
    under ``tmp``, a store (a fresh one unless given) and ``leave_running``."""
    return {"work_dir": str(tmp), "store": store or MemoryStore(), "leave_running": True}


def binary_agent(agent_id: str, binary: Path, tmp: Path, *args: str) -> AgentSpec:
    """An agent running ``binary`` itself (not through a shell), with its log under ``tmp``."""
    return AgentSpec(
        id=agent_id,
        binary_path=str(binary),
        args=args,
        start_seconds_s=0.0,
        work_dir=str(tmp / "agents" / agent_id),
        log=LogSpec(file=str(tmp / "logs" / f"{agent_id}.log")),
    )
