"""Daemon self-update: versioned install directories, a ``current`` link, restart, trial.

Theory of operation
-------------------
The daemon is installed as::

    <root>/versions/<version>-<counter>/...   one directory per version (unpacked archive)
    <root>/current  -> versions/<...>          what the service manager starts
    <root>/previous -> versions/<...>          the version before (for the rollback unit)

``DaemonInstall.update`` (called by :meth:`UpdateManager.update` for component ``daemon``)
verifies and downloads the archive like any artifact, unpacks it safely into a new version
directory (no absolute paths, no ``..``, no links out, no device files), backs up nothing
(the old directory stays), and swaps ``current`` under a journal whose trial has a wall-clock
deadline and a start budget. The result has ``restart_required``: the running daemon then
restarts itself, either by :func:`reexec` (``os.execv`` through the ``current`` link) or by
exiting with :data:`RESTART_EXIT_CODE` for the service manager to restart it (recommended;
see ``updater/contrib/hostvisor.service``).

Every start of the daemon calls :meth:`UpdateManager.recover` first. During a trial it counts
the start and says ``continue_trial``; once the new version is healthy the daemon calls
:meth:`DaemonInstall.confirm`, which commits (raises the floor, prunes old versions, never the
current or previous one). A start that finds the trial past its deadline, or out of starts,
swaps ``current`` back and reports ``rolled_back``: :func:`needs_restart` is then true and the
daemon must restart into the restored version. If the new version cannot even reach that
code, the service manager's start limit fires the rollback unit, which runs
``python -m updater.boot rollback`` from the ``previous`` version (:func:`force_rollback`).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import trio

from ._errors import ApplyError, Reason, UpdaterError
from ._fs import read_link, swap_symlink
from ._layout import adopt_tree, stage_tree, sweep_versions
from ._manager import DAEMON_COMPONENT, UpdateManager
from ._plan import (
    Journal,
    Kind,
    Outcome,
    Phase,
    abort_steps,
    commit_steps,
    prepare_steps,
    rollback_steps,
    switch_steps,
)
from ._recovery import RecoveryReport
from ._request import UpdateRequest, UpdateResult
from ._store import StateStore

__all__ = [
    "RESTART_EXIT_CODE",
    "DaemonInstall",
    "force_rollback",
    "needs_restart",
    "reexec",
]

RESTART_EXIT_CODE = 75
"""Exit status asking the service manager for a restart (``EX_TEMPFAIL``); the unit file
lists it in ``RestartForceExitStatus=`` so it restarts even when ``Restart=on-failure``
would not count it as a failure."""


@dataclass(frozen=True, slots=True)
class DaemonInstall:
    """The daemon's own versioned install.

    Attributes:
        root: Directory holding ``versions/``, ``current`` and ``previous``.
        trial_s: How long the new version has to confirm it is healthy (wall clock, since
            the trial spans restarts).
        max_attempts: Starts allowed during the trial before it fails.
    """

    root: Path
    trial_s: float = 300.0
    max_attempts: int = 3

    @property
    def current(self) -> Path:
        """The ``current`` link."""
        return self.root / "current"

    @property
    def versions(self) -> Path:
        """The directory of version directories."""
        return self.root / "versions"

    async def adopt(self, manager: UpdateManager, version: str, *, counter: int = -1) -> None:
        """Record the version ``current`` points at (first run on a host).

        Raises:
            ApplyError: ``current`` is not a link to a version directory.
        """
        release = await trio.to_thread.run_sync(adopt_tree, self.root, version, counter)
        await trio.to_thread.run_sync(manager.store.set_installed, DAEMON_COMPONENT, release)

    async def update(self, manager: UpdateManager, request: UpdateRequest) -> UpdateResult:
        """Fetch, verify, unpack and switch to ``request``'s version (restart required).

        Returns:
            ``success`` and ``restart_required`` once switched; the trial runs after the
            restart. Failures leave ``current`` untouched.

        Raises:
            UpdaterError: Any refusal (the manager turns it into a result).
        """
        installed = manager.store.installed(DAEMON_COMPONENT)
        current = read_link(self.current)
        if installed is None or current is None or installed.path != current:
            raise ApplyError(
                Reason.IO_ERROR, f"{self.current} is not the recorded install; adopt() it first"
            )
        fetched = await manager.fetch(request, manager.store.floor(DAEMON_COMPONENT))
        new = await trio.to_thread.run_sync(
            stage_tree, self.root, fetched.staged.path, fetched.version, fetched.counter
        )
        journal = Journal(
            txn=secrets.token_hex(6),
            component=DAEMON_COMPONENT,
            kind=Kind.LINK,
            target=str(self.current),
            old=installed,
            new=new,
            fallbacks=tuple(reversed(manager.store.backups(DAEMON_COMPONENT))),
            trial_deadline=manager.wall_clock() + self.trial_s,
            max_attempts=self.max_attempts,
        )
        try:
            await manager.run_steps(prepare_steps(journal))
            await manager.remember_tried(DAEMON_COMPONENT, fetched)
            await trio.to_thread.run_sync(swap_symlink, self.root / "previous", Path(current))
            await manager.run_steps(switch_steps(journal))
        except UpdaterError:
            await manager.run_steps(abort_steps(journal))
            raise
        return UpdateResult(True, installed.version, fetched.version, restart_required=True)

    def sweep(self, store: StateStore, journal: Journal | None) -> None:
        """Remove version directories nothing refers to (see :func:`sweep_versions`)."""
        sweep_versions(self.root, DAEMON_COMPONENT, store, journal)

    async def confirm(self, manager: UpdateManager) -> RecoveryReport | None:
        """The new version is healthy: commit its trial (call once health is established).

        Returns:
            ``committed``; ``rolled_back`` (reason ``trial_expired``) if the deadline passed
            first, and then :func:`needs_restart` is true; None if no trial is open.
        """
        journal = manager.store.read_journal()
        if (
            journal is None
            or journal.component != DAEMON_COMPONENT
            or journal.phase is not Phase.SWITCHED
        ):
            return None
        deadline = journal.trial_deadline
        if deadline is not None and manager.wall_clock() >= deadline:
            steps = rollback_steps(journal, Reason.TRIAL_EXPIRED, keep=manager.config.max_backups)
            await manager.run_steps(steps)
            version = (manager.executor.restored or journal.old).version
            return RecoveryReport(
                DAEMON_COMPONENT, Outcome.ROLLED_BACK, Reason.TRIAL_EXPIRED, version, journal.phase
            )
        await manager.run_steps(commit_steps(journal, keep=manager.config.max_backups))
        return RecoveryReport(
            DAEMON_COMPONENT, Outcome.COMMITTED, None, journal.new.version, journal.phase
        )

    async def watch_trial(self, manager: UpdateManager) -> RecoveryReport | None:
        """Sleep until the open trial's deadline; if it is still unconfirmed then, roll back.

        Run it in the daemon's nursery during a trial: a new version that runs but never
        becomes healthy is caught without waiting for a restart.

        Returns:
            The rollback report (then :func:`needs_restart` is true), or None if the trial
            was confirmed or none was open.
        """
        journal = manager.store.read_journal()
        if journal is None or journal.trial_deadline is None:
            return None
        await trio.sleep(max(0.0, journal.trial_deadline - manager.wall_clock()))
        return await self.confirm_or_expire(manager, journal.txn)

    async def confirm_or_expire(self, manager: UpdateManager, txn: str) -> RecoveryReport | None:
        """Roll back transaction ``txn`` if it is still in its trial past its deadline."""
        journal = manager.store.read_journal()
        if journal is None or journal.txn != txn or journal.phase is not Phase.SWITCHED:
            return None
        deadline = journal.trial_deadline
        if deadline is None or manager.wall_clock() < deadline:
            return None
        return await self.confirm(manager)


def needs_restart(report: RecoveryReport | None) -> bool:
    """Whether the running daemon must restart: a daemon rollback changed ``current``."""
    return (
        report is not None
        and report.component == DAEMON_COMPONENT
        and report.outcome is Outcome.ROLLED_BACK
    )


async def force_rollback(manager: UpdateManager) -> RecoveryReport | None:
    """Roll back an open daemon trial unconditionally (the service manager's rollback unit).

    Returns:
        The rollback report, or None if no daemon trial was open.
    """
    journal = manager.store.read_journal()
    if journal is None or journal.component != DAEMON_COMPONENT:
        return None
    if journal.phase is Phase.COMMITTED:
        return await manager.recover()
    manager.executor.restored = None
    steps = rollback_steps(journal, Reason.START_FAILED, keep=manager.config.max_backups)
    await manager.run_steps(steps)
    version = (manager.executor.restored or journal.old).version
    return RecoveryReport(
        DAEMON_COMPONENT, Outcome.ROLLED_BACK, Reason.START_FAILED, version, journal.phase
    )


def reexec(argv: Sequence[str]) -> NoReturn:
    """Replace this process with ``argv`` (e.g. ``[<root>/current/bin/hostvisor, ...]``).

    Keeps the PID (the service manager sees no exit). Use only without a service manager:
    a crash before the next :meth:`UpdateManager.recover` is then caught by no one.
    """
    os.execv(argv[0], list(argv))
