"""What a supervisor remembers of its agents across restarts, and where it keeps it.

A program that leaves agents running when it exits (``Supervisor.run(leave_running=True)``)
and adopts them when it starts again gives the supervisor an :class:`AgentStore`. The
supervisor loads the records once, before it starts or adopts anything, and saves them
(coalesced, from a worker thread) whenever an agent's process, wanted state or spec
changes, and once more when it ends. The store decides where and how the records live: the
reference daemon keeps them in ``{work_dir}/state.json``, replaced atomically
(:mod:`transport.daemon`).

The records are hints, not the truth: adoption never trusts a PID from a record alone.
Every live process that carries an agent's marker in its environment is found by a scan
of ``/proc`` (see :mod:`supervisor._process`), exactly one is adopted and the others are
stopped, whatever the records say.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from ._process import ProcessIdentity, digest_hex
from ._spec import AgentSpec

__all__ = ["AgentRecord", "AgentStore", "SpawnJournal", "spec_digest"]


@dataclass(frozen=True, slots=True)
class AgentRecord:
    """What the supervisor remembers of one agent across its own restarts.

    Attributes:
        desired: "running" or "stopped": what the user (or the configuration) last asked.
        process: The agent's process, if one was running.
        run_id: The marker of that process's spawn; without a process, of the last spawn
            ("" if the agent never ran).
        digest: :func:`spec_digest` of the spec it was started with.
        restart_count: Restarts so far, carried over for the status.
        enabled: The spec's ``enabled`` when the record was written. A change of
            ``enabled`` in the configuration since then wins over ``desired``.
        spawns: Processes started for the agent so far (0: it never ran).
    """

    desired: str
    process: ProcessIdentity | None = None
    run_id: str = ""
    digest: str = ""
    restart_count: int = 0
    enabled: bool = True
    spawns: int = 0


class AgentStore(Protocol):
    """Where a :class:`~supervisor.Supervisor` keeps its :class:`AgentRecord` s.

    ``save`` is called from a worker thread, never concurrently with itself; both methods
    may raise :class:`~supervisor.StateFileError` (a load failure ends ``run``, a save
    failure is logged and retried at the next change).
    """

    def load(self) -> Mapping[str, AgentRecord]:
        """The records saved last, by agent id; empty when there are none."""
        ...

    def save(self, records: Mapping[str, AgentRecord]) -> None:
        """Replace the saved records with these, durably."""
        ...


class SpawnJournal(Protocol):
    """An optional addition to :class:`AgentStore`: told of every spawn as it happens.

    Records are saved a moment after a change; a supervisor killed in that moment would
    forget the spawn: restart counts would not add up, and the next supervisor would not
    know which live process is the agent's main one (a child whose parent died looks the
    same from outside). A store with this method is told synchronously, right after each
    spawn, with the agent's new record, so that its next :meth:`AgentStore.load` returns it
    (an ``O_APPEND`` write is enough: it must survive the supervisor, not the machine).
    With such a store the supervisor adopts only the processes its records name.
    """

    def note_spawn(self, agent_id: str, record: AgentRecord) -> None:
        """The agent has just started the process ``record`` names (``record.spawns``-th)."""
        ...


def spec_digest(spec: AgentSpec) -> str:
    """A stable digest of the fields that define an agent's process."""
    data = json.dumps([str(part) for part in spec.process_key()], sort_keys=True)
    return digest_hex(data.encode())[:32]
