"""Persistent updater state: the journal, installed releases, floors, backups, the keyring.

Layout of ``state_dir``::

    journal.json      the open transaction (absent when none), see updater._plan.Journal
    components.json   per component: installed release, version floor, backups, and the
                      requests already tried (updater._replay) (canonical JSON)
    keyring.json      the keyring in force after a rotation (else the pinned one is used)

Every write is atomic and durable (:func:`updater._fs.atomic_write`). Reads of a missing file
mean "nothing yet"; a file that exists but does not parse is an error a human must look at.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ._envelope import canonical_json
from ._errors import ApplyError, Reason
from ._fs import atomic_write, discard
from ._plan import Journal, Kind, Release
from ._replay import Tried, remember
from ._verify import Floor

__all__ = ["StateStore"]


class StateStore:
    """Reads and writes the files of ``state_dir`` (synchronous; call from a thread)."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.journal_path = state_dir / "journal.json"
        self.components_path = state_dir / "components.json"
        self.keyring_path = state_dir / "keyring.json"

    # --- journal -------------------------------------------------------------------------

    def read_journal(self) -> Journal | None:
        """The open transaction, if any."""
        try:
            data = self.journal_path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return Journal.from_bytes(data)
        except (ValueError, KeyError, TypeError) as exc:
            raise ApplyError(Reason.IO_ERROR, f"unreadable journal {self.journal_path}") from exc

    def write_journal(self, journal: Journal) -> None:
        """Persist ``journal`` atomically."""
        atomic_write(self.journal_path, journal.to_bytes(), mode=0o600)

    def remove_journal(self) -> None:
        """End the transaction."""
        discard(self.journal_path)

    # --- components ----------------------------------------------------------------------

    def _load(self) -> dict[str, Any]:
        try:
            data = self.components_path.read_bytes()
        except FileNotFoundError:
            return {}
        try:
            doc = json.loads(data)
        except ValueError as exc:
            raise ApplyError(Reason.IO_ERROR, f"unreadable {self.components_path}") from exc
        if not isinstance(doc, dict):
            raise ApplyError(Reason.IO_ERROR, f"unreadable {self.components_path}")
        return doc

    def _save(self, doc: dict[str, Any]) -> None:
        atomic_write(self.components_path, canonical_json(doc), mode=0o600)

    def installed(self, component: str) -> Release | None:
        """The release recorded as installed for ``component``."""
        entry = self._load().get(component, {}).get("installed")
        return Release(**entry) if entry else None

    def floor(self, component: str) -> Floor:
        """The version floor for ``component`` (no floor: counter -1)."""
        entry = self._load().get(component, {}).get("floor")
        return Floor(entry["counter"], entry.get("version")) if entry else Floor()

    def backups(self, component: str) -> list[Release]:
        """Recorded backups of ``component``, oldest first."""
        return [Release(**r) for r in self._load().get(component, {}).get("backups", [])]

    def set_installed(self, component: str, release: Release) -> None:
        """Record the initial installed release (first adoption of an existing binary);
        a known counter raises the floor to it (never lowers it)."""
        doc = self._load()
        entry = doc.setdefault(component, {})
        entry["installed"] = asdict(release)
        floor = entry.get("floor", {"counter": -1, "version": None})
        if release.counter > floor["counter"]:
            entry["floor"] = {"counter": release.counter, "version": release.version}
        self._save(doc)

    def record_commit(self, component: str, kind: Kind, new: Release, old: Release) -> None:
        """Record ``new`` as installed, raise the floor, add ``old`` to the backups.

        Idempotent: recovery may run it twice. The floor never goes down.
        """
        doc = self._load()
        entry = doc.setdefault(component, {})
        installed = asdict(new)
        if kind is Kind.FILE:
            installed["path"] = ""  # the staged file is gone; the target holds the bytes
        entry["installed"] = installed
        floor = entry.get("floor", {"counter": -1, "version": None})
        if new.counter > floor["counter"]:
            floor = {"counter": new.counter, "version": new.version}
        elif new.counter < 0:  # a legacy request: no counter, only the version moves
            floor = {"counter": floor["counter"], "version": new.version}
        entry["floor"] = floor
        backups = [r for r in entry.get("backups", []) if r["path"] != old.path]
        backups.append(asdict(old))
        entry["backups"] = backups
        self._save(doc)

    def set_backups(self, component: str, backups: list[Release]) -> None:
        """Replace the list of recorded backups (after pruning)."""
        doc = self._load()
        doc.setdefault(component, {})["backups"] = [asdict(r) for r in backups]
        self._save(doc)

    def tried(self, component: str) -> tuple[Tried, ...]:
        """The requests of ``component`` whose install began (see :mod:`updater._replay`)."""
        return tuple(Tried(**t) for t in self._load().get(component, {}).get("tried", []))

    def remember_tried(self, component: str, entry: Tried, *, now: float) -> None:
        """Add ``entry`` to the requests tried, durably, dropping entries no longer needed."""
        floor = self.floor(component)
        doc = self._load()
        record = doc.setdefault(component, {})
        tried = [Tried(**t) for t in record.get("tried", [])]
        record["tried"] = [asdict(t) for t in remember(tried, entry, now=now, floor=floor)]
        self._save(doc)

    # --- keyring -------------------------------------------------------------------------

    def read_keyring(self) -> bytes | None:
        """The rotated keyring document, if a rotation happened."""
        try:
            return self.keyring_path.read_bytes()
        except FileNotFoundError:
            return None

    def write_keyring(self, payload: bytes) -> None:
        """Persist a rotated keyring document."""
        atomic_write(self.keyring_path, payload, mode=0o644)
