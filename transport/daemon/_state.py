"""The daemon's persisted state: which agent runs as which process, and what the user wants.

The daemon leaves agents running when it exits (seed 3.1.2). The next daemon reads this
file (through :class:`StateFile`, the supervisor's :class:`~supervisor.AgentStore`) to
adopt them instead of starting duplicates, and to keep an agent the user stopped stopped
(supervisord forgets that, issue #591).

The file is JSON, replaced atomically (write a temporary file, fsync it, rename it over
the old one, fsync the directory): after a crash or power loss it is the old or the new
version, never a mix. A daemon lock (``flock``) on the work directory makes sure only one
daemon supervises it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from supervisor import AgentRecord, ProcessIdentity, StateFileError, atomic_write

from ._errors import DaemonLockedError

__all__ = ["DaemonLock", "StateFile", "read_state", "write_state"]

_VERSION = 1


class StateFile:
    """The daemon's :class:`~supervisor.AgentStore`: ``{work_dir}/state.json``, plus a spawn
    journal beside it (``spawns.log``, see :class:`~supervisor.SpawnJournal`).

    Every spawn appends the agent's new record to the journal as one JSON line, right
    after the process is created; :meth:`load` merges the journal into the records (the
    record with more spawns wins), so a daemon killed between a spawn and its next state
    write still knows which process is the agent's and how many restarts it made. The
    journal is emptied once its lines are in the state file (at load) and kept short while
    running (compacted to one line per agent past 256 KiB).

    Args:
        path: The state file.
    """

    JOURNAL_LIMIT = 256 * 1024

    def __init__(self, path: str) -> None:
        self.path = path
        self.journal = os.path.join(os.path.dirname(path) or ".", "spawns.log")
        self._latest: dict[str, str] = {}
        # The journal stays open between spawns (an open per spawn costs start-up time),
        # with its size tracked here; reopened after a compaction replaced the file.
        self._fd: int | None = None
        self._size = 0

    def load(self) -> Mapping[str, AgentRecord]:
        """Read the records (see :func:`read_state`), with the journal's spawns merged in.

        Raises:
            StateFileError: the state file is unusable, or the merged state cannot be
                written back.
        """
        records = dict(read_state(self.path))
        noted = _read_journal(self.journal)
        for agent_id, record in noted.items():
            if agent_id not in records or record.spawns > records[agent_id].spawns:
                records[agent_id] = record
        if noted:
            write_state(self.path, records)
            self._close_journal()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.journal)
        return records

    def save(self, records: Mapping[str, AgentRecord]) -> None:
        """Replace the records (see :func:`write_state`)."""
        write_state(self.path, records)

    def note_spawn(self, agent_id: str, record: AgentRecord) -> None:
        """Append the record to the journal (no fsync: it must outlive the daemon only)."""
        line = (json.dumps({"agent": agent_id, **_raw(record)}, sort_keys=True) + "\n").encode()
        self._latest[agent_id] = line.decode()
        if self._fd is None:
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
            self._fd = os.open(self.journal, flags, 0o600)
            self._size = os.fstat(self._fd).st_size
        self._size += os.write(self._fd, line)
        if self._size > self.JOURNAL_LIMIT:
            atomic_write(self.journal, "".join(self._latest.values()).encode(), mode=0o600)
            self._close_journal()  # the file was replaced: the next spawn opens the new one

    def _close_journal(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


def _read_journal(path: str) -> dict[str, AgentRecord]:
    """The record with the most spawns noted per agent; a malformed line (one cut by a
    crash) is skipped."""
    noted: dict[str, AgentRecord] = {}
    try:
        with open(path, "rb") as file:
            lines = file.read().splitlines()
    except FileNotFoundError:
        return noted
    except OSError as exc:
        raise StateFileError(f"cannot read spawn journal {path}: {exc}") from exc
    for line in lines:
        try:
            raw = json.loads(line)
            agent_id = str(raw.pop("agent"))
            record = _record(raw)
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
        if agent_id not in noted or record.spawns > noted[agent_id].spawns:
            noted[agent_id] = record
    return noted


def read_state(path: str) -> dict[str, AgentRecord]:
    """Read the state file; a missing file is an empty state.

    Raises:
        StateFileError: the file exists but cannot be read or understood.
    """
    try:
        with open(path, "rb") as f:
            document = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise StateFileError(f"cannot read state file {path}: {exc}") from exc
    try:
        if document.get("version") != _VERSION:
            raise ValueError(f"unsupported version {document.get('version')!r}")
        return {agent_id: _record(raw) for agent_id, raw in document["agents"].items()}
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise StateFileError(f"state file {path} is malformed: {exc}") from exc


def _record(raw: Mapping[str, Any]) -> AgentRecord:
    proc = raw.get("process")
    identity = (
        ProcessIdentity(int(proc["pid"]), float(proc["create_time"]), str(proc["exe"]))
        if proc
        else None
    )
    desired = str(raw["desired"])
    if desired not in ("running", "stopped"):
        raise ValueError(f"desired must be running or stopped; got {desired!r}")
    return AgentRecord(
        desired=desired,
        process=identity,
        run_id=str(raw.get("run_id", "")),
        digest=str(raw.get("digest", "")),
        restart_count=int(raw.get("restart_count", 0)),
        enabled=bool(raw.get("enabled", True)),
        spawns=int(raw.get("spawns", 0)),
    )


def _identity(identity: ProcessIdentity | None) -> dict[str, Any] | None:
    return asdict(identity) if identity is not None else None


def _raw(record: AgentRecord) -> dict[str, Any]:
    return {**asdict(record), "process": _identity(record.process)}


def write_state(path: str, records: Mapping[str, AgentRecord]) -> None:
    """Replace the state file atomically and durably.

    Raises:
        StateFileError: it could not be written.
    """
    document = {
        "version": _VERSION,
        "agents": {agent_id: _raw(record) for agent_id, record in records.items()},
    }
    data = json.dumps(document, indent=1, sort_keys=True).encode()
    try:
        atomic_write(path, data, mode=0o600)
    except OSError as exc:
        raise StateFileError(f"cannot write state file {path}: {exc}") from exc


class DaemonLock:
    """An exclusive ``flock`` on a file in the work directory, holding our PID.

    Raises (from :meth:`acquire`):
        DaemonLockedError: another live daemon holds it.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock without waiting."""
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown pid"
            os.close(fd)
            raise DaemonLockedError(self.path, f"pid {holder}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Give the lock up."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
