"""Recovery at start, and what is in place afterwards (synchronous IO; run it in a thread).

Theory of operation
-------------------
:func:`recover_locked` runs under the update lock, once per daemon start and before any
agent is started (and in-process, when an update is cancelled). It first removes what a
killed process may have left half-written: temp files in the state directory (a journal or
record being replaced), staged downloads and unpacked versions no journal refers to. Then,
if a journal is open, it runs the plan's :func:`~updater._plan.recover` decision. Last, it
prunes every single-file agent's backups to ``max_backups`` and removes any other file in
its backup directory (left by a crash, or by older releases of this code), sparing whatever
a still-open journal names.

Making the *files* right is half the job: a process started from a version that recovery
undid may still be running (the daemon was killed during a trial and left its agents
running). So the :class:`RecoveryReport` says, for every updatable agent, what is in place
now (:class:`AgentInPlace`): the recorded version, the binary's path and the identity of the
file there (:class:`FileIdentity`: SHA-256, device, inode, size, mtime), and whether recovery
undid an activation of that agent (``restart_required``). The daemon must then:

* for an agent with ``restart_required``: not adopt any live process of it (it may run the
  undone version, from a file that no longer exists); stop every one of them (the whole
  tree) and start the agent from ``binary``;
* for every agent: adopt a live process only if the identity of the executable it was
  started from (recorded by the daemon at spawn, or ``/proc/PID/exe`` for a native binary)
  is the ``binary`` identity here; otherwise stop it and start afresh.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ._errors import Reason, RollbackError
from ._executor import observe
from ._fs import clean_temp, discard, read_link, sha256_file
from ._layout import sweep_versions
from ._plan import Journal, Outcome, Phase, Prune, recover

if TYPE_CHECKING:
    from ._config import AgentTarget
    from ._manager import UpdateManager
    from ._store import StateStore

__all__ = [
    "AgentInPlace",
    "FileIdentity",
    "RecoveryReport",
    "identify",
    "in_place",
    "recover_locked",
]


@dataclass(frozen=True, slots=True)
class FileIdentity:
    """Which file is at a path: enough to tell whether a process runs exactly it.

    Attributes:
        path: The path as configured (e.g. ``<install_root>/current/bin/agent``).
        real_path: ``path`` with every symlink resolved: what ``/proc/PID/exe`` names for a
            native binary started from it.
        sha256: SHA-256 hex of its content.
        device: ``st_dev`` of the file.
        inode: ``st_ino`` of the file. A replaced file (an update, a rollback) has a new
            inode, while a process keeps running the old one.
        size: ``st_size``.
        mtime_ns: ``st_mtime_ns``.
    """

    path: str
    real_path: str
    sha256: str
    device: int
    inode: int
    size: int
    mtime_ns: int

    def same_file(self, info: os.stat_result) -> bool:
        """Whether ``info`` (e.g. ``os.stat(f"/proc/{pid}/exe")``) describes this file."""
        return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns) == (
            self.device,
            self.inode,
            self.size,
            self.mtime_ns,
        )


@dataclass(frozen=True, slots=True)
class AgentInPlace:
    """One updatable agent as it is on disk.

    Attributes:
        component: Its component name.
        agent_id: Its id in the supervisor.
        version: The recorded version of what is in place; None if nothing is recorded,
            or the file there is not the recorded one (replaced by hand).
        binary: The identity of the executable at its ``binary_path`` (None if unreadable).
        restart_required: Recovery undid an activation of this agent: a live process of it
            may run ``undone_version``. Stop every one and start it from ``binary``.
        undone_version: The version recovery removed (the one a process may still run).
    """

    component: str
    agent_id: str
    version: str | None
    binary: FileIdentity | None
    restart_required: bool = False
    undone_version: str | None = None


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """What :meth:`UpdateManager.recover` found and did.

    Attributes:
        component: The component whose transaction was open.
        outcome: ``aborted``, ``committed``, ``rolled_back`` or ``continue_trial``.
        reason: Why (``interrupted``, ``trial_expired``, ``start_failed``), if relevant.
        version: The version in place afterwards.
        journal_phase: The phase the crash interrupted.
        agents: Every updatable agent as it is on disk afterwards (see
            :class:`AgentInPlace`); the one whose activation was undone says
            ``restart_required``. Empty when built outside :meth:`UpdateManager.recover`.
    """

    component: str
    outcome: Outcome
    reason: Reason | None
    version: str
    journal_phase: Phase
    agents: tuple[AgentInPlace, ...] = ()

    @property
    def restart_required(self) -> tuple[str, ...]:
        """The ids of the agents whose live processes must be stopped and started afresh."""
        return tuple(agent.agent_id for agent in self.agents if agent.restart_required)


def identify(path: Path) -> FileIdentity | None:
    """The identity of the file at ``path`` (symlinks followed), or None if unreadable."""
    try:
        real = os.path.realpath(path)
        info = os.stat(real)
        digest = sha256_file(Path(real))
    except OSError:
        return None
    return FileIdentity(
        str(path), real, digest, info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns
    )


def in_place(store: StateStore, targets: Iterable[AgentTarget]) -> tuple[AgentInPlace, ...]:
    """What is in place for each of ``targets`` (see :class:`AgentInPlace`)."""
    placed = []
    for target in targets:
        binary = identify(target.binary_path)
        installed = store.installed(target.component)
        version = None
        if installed is not None and binary is not None:
            if target.install_root is None:
                matches = installed.sha256 == binary.sha256
            else:
                matches = installed.path == read_link(target.install_root / "current")
            version = installed.version if matches else None
        placed.append(AgentInPlace(target.component, target.agent_id, version, binary))
    return tuple(placed)


def recover_locked(manager: UpdateManager) -> RecoveryReport | None:
    """Finish or undo the open transaction, if any (the caller holds the update lock).

    Raises:
        RollbackError: Nothing intact to restore; the journal stays for a human.
    """
    config, store, executor = manager.config, manager.store, manager.executor
    clean_temp(config.state_dir)  # a journal or record whose writer was killed
    journal = store.read_journal()
    _sweep_staging(config.download_dir, journal)
    if manager.daemon is not None:
        manager.daemon.sweep(store, journal)
    for agent in manager.agents.values():
        if agent.install_root is not None:
            sweep_versions(agent.install_root, agent.component, store, journal)
    if journal is None:
        executor.run_all(_prune_backups(manager, None))
        return None
    clean_temp(Path(journal.target).parent)
    decision = recover(journal, observe(journal), now=manager.wall_clock(), keep=config.max_backups)
    executor.restored = None
    try:
        executor.run_all(decision.steps)
    except RollbackError as exc:
        exc.journal = journal
        raise
    executor.run_all(_prune_backups(manager, store.read_journal()))
    if decision.outcome is Outcome.ROLLED_BACK:
        version = (executor.restored or journal.old).version
    elif decision.outcome is Outcome.ABORTED:
        version = journal.old.version
    else:
        version = journal.new.version
    agents = in_place(store, manager.agents.values())
    if decision.outcome is Outcome.ROLLED_BACK:
        # The new version was (or may have been) activated and started: undone now.
        undone = journal.new.version
        agents = tuple(
            replace(a, restart_required=True, undone_version=undone)
            if a.component == journal.component
            else a
            for a in agents
        )
    return RecoveryReport(
        journal.component, decision.outcome, decision.reason, version, journal.phase, agents
    )


def _prune_backups(manager: UpdateManager, journal: Journal | None) -> tuple[Prune, ...]:
    """Prune every single-file agent's backups to ``max_backups`` and sweep its backup
    directory (leftovers of crashes or of older code), sparing what ``journal`` names."""
    named = [] if journal is None else [journal.old, journal.new, *journal.fallbacks]
    protect = frozenset(release.path for release in named)
    keep, root = manager.config.max_backups, manager.config.backup_dir
    return tuple(
        Prune(agent.component, keep, protect, str(root / agent.component))
        for agent in manager.agents.values()
        if agent.install_root is None
    )


def _sweep_staging(directory: Path, journal: Journal | None) -> None:
    """Remove staged downloads that no open transaction refers to."""
    keep = {journal.new.path} if journal is not None else set()
    if directory.is_dir():
        for entry in directory.iterdir():
            if entry.name.startswith(".download-") and str(entry) not in keep:
                discard(entry)
