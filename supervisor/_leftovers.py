"""Finding an agent's processes by their markers, and stopping the ones nobody owns.

A supervisor cannot trust its own records alone: it may be killed between a restart and
the write of its state, and an agent's main process may die while its children live on.
Every process an agent starts carries three markers in its environment (the owning
supervisor, the agent, the run: see :mod:`supervisor._process`), inherited by every
descendant, so a scan of ``/proc`` finds them all whatever the records say:

* :func:`find_agents` at start: every live marked process of this supervisor, grouped by
  agent, with each run's main process (its *leader*) told apart from the rest. The
  supervisor adopts at most one leader per agent and stops everything else.
* :func:`stop_leftovers` after a leader exited on its own: its group, the descendants
  that escaped it, and anything else marked with the agent, stopped within the stop
  timeout before a replacement may start. Never two generations of one agent side by side.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import trio

from ._proc import read_stat, scan_marked, tree_below
from ._process import (
    MARKERS,
    Child,
    OrphanReaper,
    ProcessIdentity,
    alive,
    group_of,
    identify,
    signal_group,
    signal_pid,
)

__all__ = ["Found", "Markers", "find_agents", "stop_leftovers", "stop_processes"]


@dataclass(frozen=True, slots=True)
class Markers:
    """The supervisor's markers in a process's environment ("" when absent).

    Attributes:
        owner: Which supervisor spawned the agent (a digest of its work directory).
        agent_id: The agent.
        run_id: The spawn.
        binary: The identity of the executable file at spawn (see ``file_identity``).
        restarts: The agent's restart count at that spawn ("" before markers had it).
        spec: The digest of the spec the spawn was started with ("" likewise).
    """

    owner: str
    agent_id: str
    run_id: str
    binary: str
    restarts: str
    spec: str

    @property
    def restart_count(self) -> int:
        """:attr:`restarts` as a number (0 when absent or garbled)."""
        return int(self.restarts) if self.restarts.isdigit() else 0


@dataclass(frozen=True, slots=True)
class Found:
    """The live processes of one agent found by their markers.

    Attributes:
        leaders: The main process of each run still alive (a marked process whose parent
            does not carry the same run marker), oldest first.
        others: Every other marked process: descendants of the leaders, and leftovers of
            runs whose main process is gone.
        markers: Each found process's markers.
    """

    leaders: tuple[ProcessIdentity, ...]
    others: tuple[int, ...]
    markers: Mapping[int, Markers]

    def run_of(self, pid: int) -> str:
        """The run marker of a found process ("" if it was not found)."""
        markers = self.markers.get(pid)
        return markers.run_id if markers is not None else ""

    def binary_of(self, pid: int) -> str:
        """The executable file identity a found process was spawned from ("" if unknown)."""
        markers = self.markers.get(pid)
        return markers.binary if markers is not None else ""

    def spec_of(self, pid: int) -> str:
        """The spec digest a found process was spawned with ("" if unknown)."""
        markers = self.markers.get(pid)
        return markers.spec if markers is not None else ""

    @property
    def restart_count(self) -> int:
        """The highest restart count any found process was spawned with."""
        return max((m.restart_count for m in self.markers.values()), default=0)

    def outside(self, run_id: str) -> list[int]:
        """Every found process that does not belong to the run ``run_id``."""
        return [pid for pid, markers in self.markers.items() if markers.run_id != run_id]


def find_agents(owner: str) -> dict[str, Found]:
    """Every live process carrying this supervisor's owner marker, by agent id.

    A scan of every process's environment: call it from a worker thread.
    """
    marked = {pid: Markers(*values) for pid, values in scan_marked(MARKERS, owner).items()}
    by_agent: dict[str, tuple[list[ProcessIdentity], list[int]]] = {}
    for pid, markers in marked.items():
        leaders, others = by_agent.setdefault(markers.agent_id, ([], []))
        stat = read_stat(pid)
        # A run's main process leads its own session (it was spawned with setsid) and its
        # parent is not of the same run. (A descendant that called setsid itself and lost
        # its parent looks the same: only a store that journals spawns can tell them apart.)
        parent = marked.get(stat.ppid) if stat is not None else None
        leads = stat is not None and stat.session == pid
        own_run = parent is not None and parent.run_id == markers.run_id
        identity = identify(pid) if leads and not own_run else None
        if identity is not None:
            leaders.append(identity)
        else:
            others.append(pid)
    return {
        agent_id: Found(
            tuple(sorted(leaders, key=lambda identity: identity.create_time)),
            tuple(others),
            {pid: marked[pid] for pid in (*(i.pid for i in leaders), *others)},
        )
        for agent_id, (leaders, others) in by_agent.items()
    }


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal(pids: Iterable[int], groups: Iterable[int], sig: int) -> None:
    for pgid in groups:
        signal_group(pgid, sig)
    for pid in pids:
        signal_pid(pid, sig)


async def stop_processes(
    pids: Iterable[int],
    *,
    groups: Iterable[int] = (),
    stop_signal: int,
    timeout_s: float,
) -> None:
    """Stop processes and process groups that have no supervised leader.

    The stop signal (then SIGCONT) to each group and to each process outside them, a wait
    of up to ``timeout_s`` for all of them (and their descendants) to go, then SIGKILL to
    whatever is left.
    """
    groups = list(groups)
    targets = [pid for pid in dict.fromkeys(pids) if group_of(pid) not in groups]
    watched = list(dict.fromkeys([*targets, *tree_below(targets)]))
    _signal(targets, groups, stop_signal)
    _signal(targets, groups, signal.SIGCONT)
    with trio.move_on_after(timeout_s):
        delay = 0.002
        while any(alive(pid) for pid in watched) or any(_group_alive(g) for g in groups):
            await trio.sleep(delay)
            delay = min(delay * 2, 0.1)
        return
    _signal([*watched, *tree_below(watched)], groups, signal.SIGKILL)


async def stop_leftovers(
    child: Child,
    *,
    owner: str,
    agent_id: str,
    stop_signal: int,
    timeout_s: float,
    reaper: OrphanReaper | None,
) -> int:
    """Stop what is left of an agent's processes after its leader exited on its own.

    The leader's process group, marked orphans of its run (as subreaper), and, when any
    of those is found or no reaper runs, every process marked with this supervisor and
    agent (descendants that left the group, leftovers of earlier runs).

    Returns:
        How many leftover processes were found (the group counts as one when it has
        members we could not otherwise see).
    """
    group_alive = _group_alive(child.pid)
    orphans = reaper.orphans_of(child.run_id) if reaper is not None else []
    pids: list[int] = list(orphans)
    if group_alive or orphans or reaper is None:
        found = await trio.to_thread.run_sync(find_agents, owner)
        if agent_id in found:
            entry = found[agent_id]
            pids.extend(i.pid for i in entry.leaders)
            pids.extend(entry.others)
    pids = [pid for pid in dict.fromkeys(pids) if pid != child.pid]
    if not pids and not group_alive:
        return 0
    await stop_processes(
        pids,
        groups=[child.pid] if group_alive else [],
        stop_signal=stop_signal,
        timeout_s=timeout_s,
    )
    return len(pids) or 1
