"""The one reader of ``/proc``: named fields, no psutil, no decisions.

Everything the supervision core learns about processes it did not just spawn comes from
here: a process's status line (:func:`read_stat`), its children and descendants (read
from the tree's own ``/proc/PID/task/*/children`` files, never a scan of every process),
the supervisor's markers in its environment (:func:`read_markers`), and, when a whole
scan is really needed (adoption at start, leftovers after a crash), :func:`scan_marked`.
Reading ``/proc`` directly keeps psutil (1.3 MiB) out of the core.

Every function returns None or an empty result for a process that is gone (or whose files
we may not read): processes come and go between two reads, and callers treat "gone" as a
normal answer.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "CLOCK_TICKS",
    "PAGE_SIZE",
    "ProcStat",
    "boot_time",
    "children_of",
    "count_fds",
    "read_io",
    "read_markers",
    "read_stat",
    "scan_marked",
    "tree_below",
]

#: Kernel clock ticks per second (the unit of /proc CPU times and start times).
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
#: Bytes per page (the unit of /proc RSS).
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True, slots=True)
class ProcStat:
    """The fields of ``/proc/PID/stat`` the supervisor uses (proc(5) numbering in brackets).

    Attributes:
        pid: The process id [1].
        state: One letter: R, S, D, T, Z, X, ... [3].
        ppid: The parent [4].
        pgrp: The process group [5].
        session: The session [6].
        utime: User CPU time, in clock ticks [14].
        stime: System CPU time, in clock ticks [15].
        starttime: Start time after boot, in clock ticks [22].
        vsize: Virtual memory size, in bytes [23].
        rss_pages: Resident set size, in pages [24].
    """

    pid: int
    state: str
    ppid: int
    pgrp: int
    session: int
    utime: int
    stime: int
    starttime: int
    vsize: int
    rss_pages: int

    @property
    def alive(self) -> bool:
        """Not a zombie (a zombie has nothing left to stop or measure)."""
        return self.state not in ("Z", "X")

    @property
    def cpu_ticks(self) -> int:
        """User plus system CPU time, in clock ticks."""
        return self.utime + self.stime

    @property
    def create_time(self) -> float:
        """Start time in seconds since the epoch, as psutil computes it (10 ms resolution)."""
        return round(boot_time() + self.starttime / CLOCK_TICKS, 2)


def read_stat(pid: int) -> ProcStat | None:
    """Parse ``/proc/PID/stat``; None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name is in parentheses and may itself contain ")" or spaces.
    fields = data[data.rfind(b")") + 2 :].split()
    if len(fields) < 22:
        return None
    return ProcStat(
        pid=pid,
        state=fields[0].decode(),
        ppid=int(fields[1]),
        pgrp=int(fields[2]),
        session=int(fields[3]),
        utime=int(fields[11]),
        stime=int(fields[12]),
        starttime=int(fields[19]),
        vsize=int(fields[20]),
        rss_pages=int(fields[21]),
    )


@functools.cache
def boot_time() -> float:
    """When the machine booted, in seconds since the epoch (``btime`` of /proc/stat)."""
    with open("/proc/stat", "rb") as f:
        for line in f:
            if line.startswith(b"btime "):
                return float(line.split()[1])
    raise OSError("no btime in /proc/stat")  # pragma: no cover - every Linux has it


def read_io(pid: int) -> tuple[int, int] | None:
    """Bytes the process read from and wrote to storage (``read_bytes``, ``write_bytes``
    of ``/proc/PID/io``); None if gone or not ours to read."""
    try:
        with open(f"/proc/{pid}/io", "rb") as f:
            data = f.read()
    except OSError:
        return None
    read = write = 0
    for line in data.splitlines():
        if line.startswith(b"read_bytes:"):
            read = int(line.split()[1])
        elif line.startswith(b"write_bytes:"):
            write = int(line.split()[1])
    return read, write


def count_fds(pid: int) -> int | None:
    """How many files the process has open; None if gone or not ours to read."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def children_of(pid: int) -> list[int]:
    """A process's children, from its threads' ``/proc`` children lists."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    children: list[int] = []
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                children.extend(int(p) for p in f.read().split())
        except OSError:
            continue
    return children


def tree_below(pids: Iterable[int]) -> list[int]:
    """Every descendant of ``pids`` (not ``pids`` themselves), each once."""
    found: dict[int, None] = {}
    pending = list(pids)
    while pending:
        for child in children_of(pending.pop()):
            if child not in found:
                found[child] = None
                pending.append(child)
    return list(found)


def read_markers(pid: int, names: tuple[str, ...]) -> tuple[str, ...] | None:
    """The values of the environment variables ``names`` in a process's environment
    ("" for each one absent); None if the process is gone or its environment unreadable."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            data = f.read()
    except OSError:
        return None
    prefixes = [f"{name}=".encode() for name in names]
    values = [""] * len(names)
    for item in data.split(b"\0"):
        for index, prefix in enumerate(prefixes):
            if item.startswith(prefix):
                values[index] = item[len(prefix) :].decode(errors="replace")
    return tuple(values)


def scan_marked(names: tuple[str, ...], owner: str) -> dict[int, tuple[str, ...]]:
    """Every live process whose environment has ``owner`` in ``names[0]`` and a non-empty
    ``names[1]``, with the values of all ``names``.

    A scan of every process's environment: used at start (adoption) and after an agent's
    main process died (its leftovers), never on a hot path.
    """
    found: dict[int, tuple[str, ...]] = {}
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        pid = int(entry)
        markers = read_markers(pid, names)
        if markers is None or markers[0] != owner or not markers[1]:
            continue
        stat = read_stat(pid)
        if stat is not None and stat.alive:
            found[pid] = markers
    return found
