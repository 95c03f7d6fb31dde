"""Child processes owned by this one: they end when it ends, however it ends.

Used by ``hostvisor up`` (:mod:`transport._up`). A child must not outlive its parent,
even when the parent is SIGKILLed. :func:`spawn` starts each through a tiny Python prelude
that sets ``PR_SET_PDEATHSIG`` to SIGTERM, checks that the parent did not die before that,
and ``exec``\\ s the real program (the setting survives ``exec``). Linux sends the signal
when the *thread* that forked the child ends, so children are spawned with
:func:`os.posix_spawn` from the calling thread, which must be one that lives as long as
the process (the main thread, where Trio runs), never from a worker thread that could end
first. Each child gets its own process group: a Ctrl-C on the terminal reaches the parent
alone, which stops its children in the order it chooses.

A child is watched through a pidfd (readable once it has ended) and reaped with
``waitpid``, as :mod:`supervisor._process` does (:class:`Child`). A parent that calls
:func:`~supervisor._process.set_child_subreaper` also inherits the processes its children
leave behind (a killed daemon's agents): :func:`stop_orphans` ends and reaps them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

__all__ = ["STOP_TIMEOUT_S", "Child", "spawn", "stop_orphans"]

STOP_TIMEOUT_S = 30.0
"""How long each child has to end after SIGTERM before it is killed (the daemon stops
its agents first: the example's slowest takes about a second)."""

# The prelude every child runs first (see above): argv is
# [python, -I, -S, -c, PRELUDE, up's pid, program arguments...].
_PR_SET_PDEATHSIG = 1
_PRELUDE = f"""\
import ctypes, os, signal, sys
if ctypes.CDLL(None, use_errno=True).prctl({_PR_SET_PDEATHSIG}, signal.SIGTERM, 0, 0, 0):
    sys.exit("hostvisor up: prctl(PR_SET_PDEATHSIG) failed: " + os.strerror(ctypes.get_errno()))
if os.getppid() != int(sys.argv[1]):
    sys.exit("hostvisor up ended before this child started")
os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
"""


@dataclass(eq=False)
class Child:
    """A child process: its pid, a pidfd that tells when it ended, its status."""

    name: str
    pid: int
    log: Path
    pidfd: int
    status: int | None = None
    ended: trio.Event = field(default_factory=trio.Event)

    async def watch(self) -> None:
        """Wait for the child to end; reap it and record its status."""
        try:
            await trio.lowlevel.wait_readable(self.pidfd)
            self.status = _reap(self.pid)
        finally:
            os.close(self.pidfd)
            self.ended.set()

    async def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s``; return once it is reaped."""
        if self.status is None:
            _signal(self.pid, signal.SIGTERM)
            with trio.move_on_after(timeout_s):
                await self.ended.wait()
        if self.status is None:
            _signal(self.pid, signal.SIGKILL)
            await self.ended.wait()

    def describe_end(self) -> str:
        """``exited with status 3`` or ``was killed by SIGKILL``."""
        if self.status is None:
            return "is running"
        if self.status < 0:
            return f"was killed by {signal.Signals(-self.status).name}"
        return f"exited with status {self.status}"


def _reap(pid: int) -> int:
    """An ended child's exit code (negative: the signal that killed it).

    Called once its pidfd is readable: it is a zombie then, and ``waitpid`` returns at once.
    """
    _, raw = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(raw)


def _reap_if_ended(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def spawn(argv: Sequence[str], log: Path, stdin: bytes | None = None) -> tuple[int, int]:
    """Start ``python -m ...`` (``argv`` after the interpreter) owned by this process.

    Runs on the calling thread (it must be the main thread: see "Ownership"). Standard
    output and error are appended to ``log``; standard input is ``stdin`` (or /dev/null).

    Returns:
        The pid and a pidfd of the child.
    """
    prelude = [sys.executable, "-I", "-S", "-c", _PRELUDE, str(os.getpid())]
    log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    read_fd, write_fd = os.pipe() if stdin is not None else (-1, -1)
    try:
        actions: list[tuple[Any, ...]] = [
            (os.POSIX_SPAWN_DUP2, log_fd, 1),
            (os.POSIX_SPAWN_DUP2, log_fd, 2),
        ]
        if stdin is None:
            actions.append((os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0))
        else:
            actions.append((os.POSIX_SPAWN_DUP2, read_fd, 0))
        pid = os.posix_spawn(
            sys.executable,
            [*prelude, *argv],
            dict(os.environ),
            file_actions=actions,
            setpgroup=0,  # its own group: a Ctrl-C on the terminal reaches up alone
        )
        if stdin is not None:
            os.write(write_fd, stdin)  # a few bytes: never blocks on a fresh pipe
    finally:
        os.close(log_fd)
        for fd in (read_fd, write_fd):
            if fd >= 0:
                os.close(fd)
    return pid, os.pidfd_open(pid)


async def stop_orphans(timeout_s: float = STOP_TIMEOUT_S) -> int:
    """Stop and reap every remaining child of this process; how many there were.

    ``up`` is a child subreaper, so agents whose daemon was killed (a daemon leaves its
    agents running unless it stops them itself) become its children instead of init's.
    Each is an agent's process group leader: its group gets SIGTERM, then SIGKILL after
    ``timeout_s``. Processes orphaned in turn are handled in the next round. Call only once
    every child ``up`` watches is reaped: anything else is an orphan.
    """
    from supervisor import children_of

    stopped = 0
    for _ in range(_ORPHAN_ROUNDS):
        pids = children_of(os.getpid())
        if not pids:
            break
        stopped += len(pids)
        pinned = []
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                pinned.append((pid, os.pidfd_open(pid)))
        try:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                for pid, _fd in pinned:
                    _signal_group(pid, sig)
                with trio.move_on_after(timeout_s):
                    for _pid, fd in pinned:
                        await trio.lowlevel.wait_readable(fd)
        finally:
            for pid, fd in pinned:
                os.close(fd)
                _reap_if_ended(pid)
    return stopped


_ORPHAN_ROUNDS = 5


def _signal_group(pid: int, sig: int) -> None:
    """Signal ``pid``'s process group if it leads one, else ``pid`` alone."""
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
