"""The install plan and its crash recovery: a state machine over a journal (pure).

Theory of operation
-------------------
An install is a short sequence of *actions*, interleaved with journal writes that record the
*phase* reached. The journal is the single source of truth after a crash: it is written
atomically (temp file, fsync, rename, fsync dir) before the action it announces, and it names
everything recovery needs (paths, expected hashes, fallbacks), so recovery never has to guess.

Two kinds of target exist:

* ``file``: a single executable (an agent binary). The backup is a verified copy of the
  current file; the switch is one ``rename`` of a verified copy over the target.
* ``link``: a ``current`` symlink to a versioned directory (the daemon, unpacked archives).
  The previous version's directory is the backup; the switch is a symlink swap.

The forward path::

    BEGUN --backup--> BACKED_UP --switch--> SWITCHED --trial ok--> COMMITTED --> (no journal)
                                                 \\--trial failed--> ROLLING_BACK --> (none)

Each arrow's action is atomic where it touches the target (a rename), and idempotent, so it
can be re-run after a crash. The target path therefore always exists and is always either the
old or the new version; the new version only gets there through an action that re-hashes the
bytes it moves (``Install``) or the tree it points at (``SwapLink``), so nothing unverified is
ever activated even if the staged file was altered after the download was verified.

:func:`recover` decides, from the journal and what is observed at the target, how to finish:

* ``COMMITTED``: finish the commit (record the release, prune, clean up).
* ``ROLLING_BACK``: finish the rollback.
* ``BEGUN``/``BACKED_UP``/``SWITCHED`` with the *old* version at the target: abort (the
  switch never happened; remove the orphaned backup and staged files).
* ... with the *new* version at the target: a daemon within its trial (deadline not passed,
  fewer than ``max_attempts`` starts) continues its trial; anything else rolls back.
* ... with neither (impossible unless something else touched the target): roll back.

A rollback restores the first of ``(old, *fallbacks)`` whose content still has its recorded
hash, so a corrupt backup falls back to an older one; if none is intact the rollback raises
:class:`~updater.RollbackError` and leaves the journal for a human.

Retention (``max_backups``): a commit records the replaced version as a backup; a rollback
deletes its own backup copy (the version it restored is the target again). Both end with a
``Prune`` that keeps the newest ``keep`` recorded backups and deletes every other file in the
component's backup directory (leftovers of crashes, or of older releases of this code), never
a path the open journal names. So however updates end (committed, rolled back, or finished
by recovery) at most ``keep`` backups remain, plus those the journal protects.
"""

from __future__ import annotations

import enum
import json
import posixpath
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from ._envelope import canonical_json
from ._errors import Reason

__all__ = [
    "Action",
    "Backup",
    "CheckTree",
    "Discard",
    "Install",
    "Journal",
    "Kind",
    "Outcome",
    "Phase",
    "Prune",
    "RecordCommit",
    "Recovery",
    "Release",
    "RemoveJournal",
    "Restore",
    "SwapLink",
    "WriteJournal",
    "abort_steps",
    "commit_steps",
    "leftovers",
    "prepare_steps",
    "prune_candidates",
    "recover",
    "rollback_steps",
    "switch_steps",
]

JOURNAL_SPEC = 1


class Kind(enum.StrEnum):
    """How a target is replaced."""

    FILE = "file"
    LINK = "link"


class Phase(enum.StrEnum):
    """The last phase the journal recorded (its action may or may not have finished)."""

    BEGUN = "begun"
    BACKED_UP = "backed_up"
    SWITCHED = "switched"
    COMMITTED = "committed"
    ROLLING_BACK = "rolling_back"


@dataclass(frozen=True, slots=True)
class Release:
    """One version of a component as the plan sees it.

    Attributes:
        version: Version string.
        counter: Signed release counter (-1 if unknown, e.g. the first install).
        sha256: ``file``: SHA-256 of the file; ``link``: tree digest of the directory.
        path: ``file``: the backup copy (old) or staged file (new); ``link``: the version
            directory.
    """

    version: str
    counter: int
    sha256: str
    path: str


@dataclass(frozen=True, slots=True)
class Journal:
    """The persisted state of one install transaction.

    Attributes:
        txn: Unique id of the transaction.
        component: The component being updated.
        kind: ``file`` or ``link``.
        target: The file replaced, or the ``current`` symlink swapped.
        old: The version being replaced (its backup, for ``file``).
        new: The version being installed (its verified staged file or directory).
        phase: The phase reached.
        fallbacks: Older intact releases to restore if ``old``'s backup turns out corrupt.
        reason: Why a rollback started (a :class:`~updater.Reason` value).
        trial_deadline: Wall-clock Unix seconds by which a daemon trial must be confirmed
            (None for agents, whose trial runs inside one daemon process).
        attempts: Starts of the new daemon version so far in its trial.
        max_attempts: Starts allowed before the trial fails.
    """

    txn: str
    component: str
    kind: Kind
    target: str
    old: Release
    new: Release
    phase: Phase = Phase.BEGUN
    fallbacks: tuple[Release, ...] = ()
    reason: str | None = None
    trial_deadline: float | None = None
    attempts: int = 0
    max_attempts: int = 3

    def at(self, phase: Phase, **changes: Any) -> Journal:
        """A copy at ``phase`` (with other fields changed as given)."""
        return replace(self, phase=phase, **changes)

    def identity(self, release: Release) -> str:
        """What the target shows when ``release`` is installed: hash or directory."""
        return release.sha256 if self.kind is Kind.FILE else release.path

    def to_bytes(self) -> bytes:
        """Canonical JSON encoding (the trial deadline as integer milliseconds)."""
        doc = asdict(self)
        doc["spec"] = JOURNAL_SPEC
        doc["fallbacks"] = [asdict(r) for r in self.fallbacks]
        deadline = self.trial_deadline
        doc["trial_deadline"] = None if deadline is None else round(deadline * 1000)
        return canonical_json(doc)

    @classmethod
    def from_bytes(cls, data: bytes) -> Journal:
        """Decode :meth:`to_bytes` output.

        Raises:
            ValueError: If the document is not a journal of this format.
        """
        doc = json.loads(data.decode("utf-8"))
        if not isinstance(doc, dict) or doc.pop("spec", None) != JOURNAL_SPEC:
            raise ValueError("not a version-1 update journal")
        deadline = doc.get("trial_deadline")
        return cls(
            txn=doc["txn"],
            component=doc["component"],
            kind=Kind(doc["kind"]),
            target=doc["target"],
            old=Release(**doc["old"]),
            new=Release(**doc["new"]),
            phase=Phase(doc["phase"]),
            fallbacks=tuple(Release(**r) for r in doc["fallbacks"]),
            reason=doc["reason"],
            trial_deadline=None if deadline is None else deadline / 1000,
            attempts=doc["attempts"],
            max_attempts=doc["max_attempts"],
        )


# --- actions: imperatives that the executor performs -----------------------------------


@dataclass(frozen=True, slots=True)
class WriteJournal:
    """Persist ``journal`` atomically."""

    journal: Journal


@dataclass(frozen=True, slots=True)
class RemoveJournal:
    """Delete the journal (the transaction is over); fsync the directory."""


@dataclass(frozen=True, slots=True)
class Backup:
    """Copy ``target`` to ``dest`` (temp, fsync, rename), checking it hashes to ``sha256``."""

    target: str
    dest: str
    sha256: str


@dataclass(frozen=True, slots=True)
class CheckTree:
    """Check that directory ``path`` still has tree digest ``sha256`` (``link`` backups)."""

    path: str
    sha256: str


@dataclass(frozen=True, slots=True)
class Install:
    """Copy ``source`` next to ``target``, check the copy hashes to ``sha256``, make it
    executable, rename it over ``target``, fsync the directory. A no-op if ``target``
    already has ``sha256``."""

    source: str
    target: str
    sha256: str


@dataclass(frozen=True, slots=True)
class SwapLink:
    """Check ``dest`` has tree digest ``sha256``, then atomically point ``link`` at it."""

    link: str
    dest: str
    sha256: str


@dataclass(frozen=True, slots=True)
class Restore:
    """Put back the first of ``candidates`` that is intact (``Install`` or ``SwapLink``).

    The executor reports the release it restored; if none is intact it raises
    :class:`~updater.RollbackError` with reason ``backup_corrupt``.
    """

    kind: Kind
    target: str
    candidates: tuple[Release, ...]


@dataclass(frozen=True, slots=True)
class RecordCommit:
    """Record ``new`` as installed (raising the floor) and ``old`` as its backup."""

    component: str
    kind: Kind
    new: Release
    old: Release


@dataclass(frozen=True, slots=True)
class Prune:
    """Delete recorded backups of ``component`` beyond ``keep`` (never those in ``protect``);
    then, in directory ``sweep`` (the component's backup directory, for ``file`` targets),
    every entry that is neither a remaining recorded backup nor in ``protect``."""

    component: str
    keep: int
    protect: frozenset[str]
    sweep: str | None = None


@dataclass(frozen=True, slots=True)
class Discard:
    """Remove a file or directory if it exists."""

    path: str


Action = (
    WriteJournal
    | RemoveJournal
    | Backup
    | CheckTree
    | Install
    | SwapLink
    | Restore
    | RecordCommit
    | Prune
    | Discard
)


def prepare_steps(journal: Journal) -> list[Action]:
    """Journal ``BEGUN``, back up the current version, journal ``BACKED_UP``."""
    begun = journal.at(Phase.BEGUN)
    if journal.kind is Kind.FILE:
        backup: Action = Backup(journal.target, journal.old.path, journal.old.sha256)
    else:
        backup = CheckTree(journal.old.path, journal.old.sha256)
    return [WriteJournal(begun), backup, WriteJournal(journal.at(Phase.BACKED_UP))]


def switch_steps(journal: Journal) -> list[Action]:
    """Switch the target to the new version, then journal ``SWITCHED``."""
    new = journal.new
    if journal.kind is Kind.FILE:
        switch: Action = Install(new.path, journal.target, new.sha256)
    else:
        switch = SwapLink(journal.target, new.path, new.sha256)
    return [switch, WriteJournal(journal.at(Phase.SWITCHED))]


def _backup_dir(journal: Journal) -> str | None:
    """Where a ``file`` target's backups live (the directory of the old version's copy)."""
    return posixpath.dirname(journal.old.path) if journal.kind is Kind.FILE else None


def commit_steps(journal: Journal, *, keep: int, from_recovery: bool = False) -> list[Action]:
    """Journal ``COMMITTED``, record the release, prune, clean up, end the transaction."""
    steps: list[Action] = [] if from_recovery else [WriteJournal(journal.at(Phase.COMMITTED))]
    protect = frozenset({journal.old.path, journal.new.path})
    steps += [
        RecordCommit(journal.component, journal.kind, journal.new, journal.old),
        Prune(journal.component, keep, protect, _backup_dir(journal)),
    ]
    if journal.kind is Kind.FILE:
        steps.append(Discard(journal.new.path))  # the staged file; the target is the copy
    steps.append(RemoveJournal())
    return steps


def rollback_steps(
    journal: Journal, reason: Reason, *, keep: int, from_recovery: bool = False
) -> list[Action]:
    """Journal ``ROLLING_BACK``, restore the old version (or a fallback), clean up (the
    backup copy of a ``file`` target too: the restored version is the target again), prune."""
    steps: list[Action] = []
    if not from_recovery:
        steps.append(WriteJournal(journal.at(Phase.ROLLING_BACK, reason=reason.value)))
    candidates = (journal.old, *journal.fallbacks)
    steps += [Restore(journal.kind, journal.target, candidates), Discard(journal.new.path)]
    if journal.kind is Kind.FILE:
        steps.append(Discard(journal.old.path))
    protect = frozenset({journal.old.path, journal.new.path, *(r.path for r in candidates)})
    steps += [Prune(journal.component, keep, protect, _backup_dir(journal)), RemoveJournal()]
    return steps


def abort_steps(journal: Journal) -> list[Action]:
    """Undo a transaction that never switched: drop its backup copy and staged files."""
    steps: list[Action] = []
    if journal.kind is Kind.FILE:
        steps.append(Discard(journal.old.path))
    steps += [Discard(journal.new.path), RemoveJournal()]
    return steps


class Outcome(enum.StrEnum):
    """What recovery did (or, for ``continue_trial``, lets the caller do)."""

    ABORTED = "aborted"
    COMMITTED = "committed"
    ROLLED_BACK = "rolled_back"
    CONTINUE_TRIAL = "continue_trial"


@dataclass(frozen=True, slots=True)
class Recovery:
    """The decision :func:`recover` returns: the outcome, why, and the steps to run."""

    outcome: Outcome
    reason: Reason | None
    steps: tuple[Action, ...]


def recover(journal: Journal, observed: str | None, *, now: float, keep: int) -> Recovery:
    """Decide how to finish a transaction found at startup.

    Args:
        journal: The journal found.
        observed: What the target shows now: the file's SHA-256 (``file``), the symlink's
            destination (``link``), or None if missing or unreadable.
        now: Current wall-clock Unix seconds (the daemon's trial deadline is absolute).
        keep: Backups to keep after a commit.

    Returns:
        The outcome and the steps that achieve it.
    """
    if journal.phase is Phase.COMMITTED:
        steps = commit_steps(journal, keep=keep, from_recovery=True)
        return Recovery(Outcome.COMMITTED, None, tuple(steps))
    if journal.phase is Phase.ROLLING_BACK:
        reason = Reason(journal.reason) if journal.reason else Reason.INTERRUPTED
        steps = rollback_steps(journal, reason, keep=keep, from_recovery=True)
        return Recovery(Outcome.ROLLED_BACK, reason, tuple(steps))
    if observed == journal.identity(journal.old) and observed != journal.identity(journal.new):
        return Recovery(Outcome.ABORTED, Reason.INTERRUPTED, tuple(abort_steps(journal)))
    reason = Reason.INTERRUPTED
    in_trial = journal.trial_deadline is not None and journal.phase is Phase.SWITCHED
    if (
        observed == journal.identity(journal.new)
        and journal.trial_deadline is not None
        and in_trial
    ):
        if journal.attempts >= journal.max_attempts:
            reason = Reason.START_FAILED  # it was started that often and never confirmed
        elif now >= journal.trial_deadline:
            reason = Reason.TRIAL_EXPIRED
        else:
            bumped = journal.at(Phase.SWITCHED, attempts=journal.attempts + 1)
            return Recovery(Outcome.CONTINUE_TRIAL, None, (WriteJournal(bumped),))
    return Recovery(Outcome.ROLLED_BACK, reason, tuple(rollback_steps(journal, reason, keep=keep)))


def prune_candidates(
    backups: Sequence[Release], *, keep: int, protect: frozenset[str]
) -> list[Release]:
    """Which backups to delete: all but the newest ``keep`` (by counter, then order),
    never one whose path is protected (the current and previous versions)."""
    ranked = sorted(enumerate(backups), key=lambda item: (item[1].counter, item[0]))
    newest_first = [release for _, release in reversed(ranked)]
    return [r for r in newest_first[keep:] if r.path not in protect]


def leftovers(entries: Collection[str], wanted: Collection[str]) -> list[str]:
    """Which entries of a swept backup directory to delete: all that are not ``wanted``
    (a remaining recorded backup, or a path the open journal protects)."""
    return sorted(set(entries) - set(wanted))
