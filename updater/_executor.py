"""Performs the plan's actions on real files (synchronous; the async shell uses a thread).

Each action is idempotent, so that recovery may repeat the one a crash interrupted: an
``Install`` whose target already has the expected hash does nothing, a ``Discard`` of a missing
path does nothing, ``RecordCommit`` rewrites the same record.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ._errors import BackupError, Reason, RollbackError, UpdaterError, VerificationError
from ._fs import (
    ChunkWriter,
    clean_temp,
    copy_verified,
    discard,
    read_link,
    sha256_file,
    swap_symlink,
    tree_digest,
)
from ._plan import (
    Action,
    Backup,
    CheckTree,
    Discard,
    Install,
    Journal,
    Kind,
    Prune,
    RecordCommit,
    Release,
    RemoveJournal,
    Restore,
    SwapLink,
    WriteJournal,
    leftovers,
    prune_candidates,
)
from ._store import StateStore

__all__ = ["Executor", "observe"]

Hook = Callable[[Action], None]


def observe(journal: Journal) -> str | None:
    """What the target shows now: the file's SHA-256 or the link's destination."""
    target = Path(journal.target)
    if journal.kind is Kind.LINK:
        return read_link(target)
    try:
        return sha256_file(target)
    except OSError:
        return None


def _intact(kind: Kind, release: Release) -> bool:
    try:
        if kind is Kind.FILE:
            return sha256_file(Path(release.path)) == release.sha256
        return tree_digest(Path(release.path)) == release.sha256
    except OSError:
        return False


class Executor:
    """Runs plan actions against the real file system and the state store.

    Args:
        store: Where the journal and component records live.
        write: The write seam for copies (``os.write``).
        hook: Called before every action (tests inject crashes here).
    """

    def __init__(
        self, store: StateStore, *, write: ChunkWriter = os.write, hook: Hook | None = None
    ) -> None:
        self.store = store
        self.write = write
        self.hook = hook
        self.restored: Release | None = None

    def run_all(self, steps: list[Action] | tuple[Action, ...]) -> None:
        """Run ``steps`` in order (stops at the first exception)."""
        for step in steps:
            self.run(step)

    def run(self, action: Action) -> None:
        """Perform one action.

        Raises:
            BackupError: A ``Backup`` or ``CheckTree`` failed (nothing switched yet).
            HashMismatchError: An ``Install`` source is not what was verified.
            RollbackError: No restore candidate is intact (``backup_corrupt``).
            ApplyError: ``disk_full`` / ``io_error`` from the file system.
        """
        if self.hook is not None:
            self.hook(action)
        match action:
            case WriteJournal(journal=journal):
                self.store.write_journal(journal)
            case RemoveJournal():
                self.store.remove_journal()
            case Backup(target=target, dest=dest, sha256=sha256):
                Path(dest).parent.mkdir(parents=True, exist_ok=True)
                clean_temp(Path(dest).parent)
                try:
                    copy_verified(Path(target), Path(dest), sha256, mode=0o600, write=self.write)
                except VerificationError as exc:
                    raise BackupError(f"current {target} changed under us: {exc}") from exc
                except UpdaterError as exc:
                    raise BackupError(str(exc), reason=exc.reason) from exc
            case CheckTree(path=path, sha256=sha256):
                if not _intact(Kind.LINK, Release("", 0, sha256, path)):
                    raise BackupError(f"current version directory {path} is not intact")
            case Install(source=source, target=target, sha256=sha256):
                self._install(Path(source), Path(target), sha256)
            case SwapLink(link=link, dest=dest, sha256=sha256):
                self._swap(Path(link), Path(dest), sha256)
            case Restore(kind=kind, target=target, candidates=candidates):
                self.restored = self._restore(kind, Path(target), candidates)
            case RecordCommit(component=component, kind=kind, new=new, old=old):
                self.store.record_commit(component, kind, new, old)
            case Prune(component=component, keep=keep, protect=protect, sweep=sweep):
                self._prune(component, keep, protect, sweep)
            case Discard(path=path):
                discard(Path(path))

    def _prune(self, component: str, keep: int, protect: frozenset[str], sweep: str | None) -> None:
        backups = self.store.backups(component)
        doomed = prune_candidates(backups, keep=keep, protect=protect)
        for release in doomed:
            discard(Path(release.path))
        gone = {r.path for r in doomed}
        kept = [r for r in backups if r.path not in gone]
        if doomed:
            self.store.set_backups(component, kept)
        if sweep is not None and os.path.isdir(sweep):
            entries = [entry.path for entry in os.scandir(sweep)]
            for path in leftovers(entries, {r.path for r in kept} | protect):
                discard(Path(path))

    def _install(self, source: Path, target: Path, sha256: str) -> None:
        clean_temp(target.parent)
        try:
            if sha256_file(target) == sha256:
                return  # already there (a repeated step after a crash)
        except OSError:
            pass
        copy_verified(source, target, sha256, mode=0o755, write=self.write)

    def _swap(self, link: Path, dest: Path, sha256: str) -> None:
        if tree_digest(dest) != sha256:
            raise VerificationError(Reason.HASH_MISMATCH, f"{dest} changed since it was verified")
        swap_symlink(link, dest)

    def _restore(self, kind: Kind, target: Path, candidates: tuple[Release, ...]) -> Release:
        for release in candidates:
            if kind is Kind.LINK and read_link(target) == release.path:
                return release  # already restored
            if kind is Kind.FILE and observe_file(target) == release.sha256:
                return release
            if not _intact(kind, release):
                continue
            if kind is Kind.FILE:
                copy_verified(
                    Path(release.path), target, release.sha256, mode=0o755, write=self.write
                )
            else:
                swap_symlink(target, Path(release.path))
            return release
        names = ", ".join(f"{r.version} at {r.path}" for r in candidates)
        raise RollbackError(
            f"no intact backup to restore {target} from (tried {names})",
            reason=Reason.BACKUP_CORRUPT,
        )


def observe_file(path: Path) -> str | None:
    """SHA-256 of ``path``, or None if unreadable."""
    try:
        return sha256_file(path)
    except OSError:
        return None
