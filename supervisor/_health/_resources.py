"""CPU and memory of an agent's whole process tree, read from /proc without psutil.

Two layers:

* :func:`tree_usage` (IO) walks the agent's tree through ``/proc/PID/task/*/children``
  (only the tree's own files, never a scan of every process) and sums, over the tree,
  the CPU time (``utime + stime`` from ``/proc/PID/stat``, in clock ticks) and the
  resident memory (``/proc/PID/statm``). A few syscalls per process: cheap enough to run
  for 300 agents on one shared tick.
* :class:`CpuMeter` (pure) turns successive tick totals into a CPU percentage: the ticks
  used between two samples over the time between them (100 % = one core). When a process
  of the tree exits its ticks leave the sum, so the total can go down; that interval is
  then reported as 0 and the meter restarts from the new total: a percentage is never
  negative and never invented.
"""

from __future__ import annotations

from dataclasses import dataclass

from supervisor._proc import CLOCK_TICKS, PAGE_SIZE, count_fds, read_io, read_stat, tree_below

__all__ = ["CLOCK_TICKS", "CpuMeter", "TreeUsage", "tree_usage"]


@dataclass(frozen=True, slots=True)
class TreeUsage:
    """Resources of a process tree at one moment.

    Attributes:
        processes: How many processes were counted.
        cpu_ticks: Their CPU time so far (user + system), in clock ticks.
        rss_bytes: Their resident memory, summed.
        vms_bytes: Their virtual memory, summed.
        read_bytes: Bytes they read from storage so far (those we may read the counters of).
        write_bytes: Bytes they wrote to storage so far (likewise).
        open_files: Files they have open now (descriptors of every kind).
    """

    processes: int
    cpu_ticks: int
    rss_bytes: int
    vms_bytes: int = 0
    read_bytes: int = 0
    write_bytes: int = 0
    open_files: int = 0


def _usage_of(pid: int) -> tuple[int, int, int, int, int, int] | None:
    stat = read_stat(pid)
    if stat is None or not stat.alive:
        return None  # gone meanwhile, or a zombie
    io = read_io(pid) or (0, 0)
    fds = count_fds(pid) or 0
    return stat.cpu_ticks, stat.rss_pages * PAGE_SIZE, stat.vsize, io[0], io[1], fds


def tree_usage(leader: int) -> TreeUsage | None:
    """Sum CPU ticks, memory, storage IO and open files over ``leader`` and its descendants.

    Returns:
        None when the leader itself is gone.
    """
    first = _usage_of(leader)
    if first is None:
        return None
    totals, count = list(first), 1
    for pid in tree_below([leader]):
        usage = _usage_of(pid)
        if usage is not None:
            totals = [a + b for a, b in zip(totals, usage, strict=True)]
            count += 1
    ticks, rss, vms, read, write, fds = totals
    return TreeUsage(count, ticks, rss, vms, read, write, fds)


@dataclass(slots=True)
class CpuMeter:
    """CPU percent of one core from successive tick totals (pure; time is an argument).

    Args:
        ticks_per_second: The unit of the totals (defaults to the kernel's clock ticks).
    """

    ticks_per_second: float = float(CLOCK_TICKS)
    _last: tuple[float, int] | None = None

    def update(self, now: float, total_ticks: int) -> float | None:
        """Feed one sample; return the CPU percent since the previous one.

        Args:
            now: Monotonic seconds.
            total_ticks: The tree's CPU time so far.

        Returns:
            None for the first sample (or when no time has passed), else a percentage
            ``>= 0`` (100 per fully used core).
        """
        last, self._last = self._last, (now, total_ticks)
        if last is None or now <= last[0]:
            return None
        used = total_ticks - last[1]
        if used < 0:  # a process of the tree exited and took its ticks along
            return 0.0
        return used / self.ticks_per_second / (now - last[0]) * 100.0

    def reset(self) -> None:
        """Forget the previous sample (a new process was started)."""
        self._last = None
