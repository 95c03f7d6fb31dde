"""The Manager client's spool: reports that could not be delivered, kept on disk. IO.

One file per report in ``{work_dir}/spool/`` (a directory only the daemon's user may
enter), named ``{seq:016d}-{created_ms}.{kind}`` and holding the serialized request
(``ReportMetricsRequest`` or ``SyncAgentStatesRequest``) as it will be sent. The sequence
number orders delivery; the creation time (wall clock, milliseconds) ages entries out
across daemon restarts. Writes are durable before they count: a temporary file is
written, fsynced, renamed into place, and the directory fsynced. A crash at any point
leaves either no entry or a whole one; leftover temporary files are removed at
:meth:`ReportSpool.open`. Removing a delivered entry is not fsynced: after a crash it may
come back and be delivered twice, which the Manager tolerates (a duplicate has the same
node, type and timestamp).

What to keep is decided by :mod:`transport.daemon._spool_policy` (bounded by bytes and
age, oldest dropped first, a newer state sync supersedes older ones); this module carries
the decisions out and counts them.

The methods are synchronous and may block on the disk: the client calls them in a worker
thread, one at a time (:class:`transport.daemon._outbox.Outbox` holds the lock).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import stat
import tempfile
from dataclasses import dataclass

from ._spool_policy import EntryInfo, EntryKind, SpoolDecision, SpoolLimits, admit, expire

__all__ = ["SPOOL_DIR", "ReportSpool", "SpoolEntry", "SpoolStatistics", "parse_entry_name"]

logger = logging.getLogger("hostvisor.manager")

SPOOL_DIR = "spool"
"""The spool's directory under ``daemon.work_dir``."""
_NAME = re.compile(r"(\d{16})-(\d{1,16})\.(metrics|states)")
_TEMP_PREFIX = ".tmp-"


def parse_entry_name(name: str) -> tuple[int, int, EntryKind] | None:
    """``(seq, created_ms, kind)`` of a spool entry's file name
    (``{seq:016d}-{created_ms}.{kind}``), or None for any other file."""
    match = _NAME.fullmatch(name)
    if match is None:
        return None
    return int(match[1]), int(match[2]), EntryKind(match[3])


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    """One spooled report.

    Attributes:
        info: Its sequence number, creation time, size and kind.
        path: Its file.
    """

    info: EntryInfo
    path: str

    @property
    def seq(self) -> int:
        """Its sequence number."""
        return self.info.seq


@dataclass(frozen=True, slots=True)
class SpoolStatistics:
    """What the spool holds and has let go.

    Attributes:
        entries: Reports waiting in it.
        bytes: Their size on disk.
        written: Reports written to it since the daemon started.
        evicted: Reports dropped because the spool was full (``max_bytes``), oldest first.
        expired: Reports dropped because they were older than ``max_age``.
        superseded: State syncs replaced by a newer one (nothing is lost).
        unreadable: Entries that could not be read back (dropped).
    """

    entries: int = 0
    bytes: int = 0
    written: int = 0
    evicted: int = 0
    expired: int = 0
    superseded: int = 0
    unreadable: int = 0

    @property
    def dropped(self) -> int:
        """Reports lost: evicted, expired or unreadable."""
        return self.evicted + self.expired + self.unreadable


class ReportSpool:
    """The spool directory and its index (see the module documentation).

    Args:
        directory: ``{work_dir}/spool``.
        limits: Its bounds.
    """

    def __init__(self, directory: str, limits: SpoolLimits) -> None:
        self.directory = directory
        self.limits = limits
        self._entries: dict[int, SpoolEntry] = {}
        self._order: list[int] = []  # seq numbers, ascending
        self._next_seq = 1
        self._counts = {"written": 0, "evicted": 0, "expired": 0, "superseded": 0, "unreadable": 0}

    # --- reading the index ----------------------------------------------------------------

    @property
    def next_seq(self) -> int:
        """One more than the largest sequence number ever seen in this spool."""
        return self._next_seq

    def __len__(self) -> int:
        return len(self._order)

    def head(self) -> SpoolEntry | None:
        """The oldest entry, or None when the spool is empty."""
        return self._entries[self._order[0]] if self._order else None

    def statistics(self) -> SpoolStatistics:
        """A snapshot of the spool's contents and counters."""
        return SpoolStatistics(
            entries=len(self._order),
            bytes=sum(e.info.size for e in self._entries.values()),
            **self._counts,
        )

    # --- IO -------------------------------------------------------------------------------

    def open(self, *, now: float) -> None:
        """Create the directory (0700) or index the entries a previous run left.

        Temporary files of an interrupted write are removed, entries past ``max_age``
        dropped; files the spool did not write are left alone.

        Args:
            now: The wall clock.

        Raises:
            OSError: The directory cannot be created, is not a directory or is a symlink.
        """
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        status = os.lstat(self.directory)
        if not stat.S_ISDIR(status.st_mode):
            raise NotADirectoryError(f"the spool {self.directory!r} is not a directory")
        if status.st_mode & 0o077:
            os.chmod(self.directory, 0o700)
        self._entries.clear()
        for name in os.listdir(self.directory):
            path = os.path.join(self.directory, name)
            if name.startswith(_TEMP_PREFIX):
                with contextlib.suppress(OSError):
                    os.unlink(path)
                continue
            parsed = parse_entry_name(name)
            if parsed is None:
                continue
            try:
                size = os.stat(path).st_size
            except OSError:
                continue
            seq, created_ms, kind = parsed
            self._entries[seq] = SpoolEntry(EntryInfo(seq, created_ms / 1000, size, kind), path)
        self._order = sorted(self._entries)
        self._next_seq = max(self._order, default=0) + 1
        self._carry_out(expire([self._entries[s].info for s in self._order], self.limits, now=now))
        if self._order:
            logger.info(
                "the report spool holds %d undelivered report(s) from before", len(self._order)
            )

    def expire(self, *, now: float) -> int:
        """Drop entries older than ``max_age``.

        Returns:
            How many were dropped.
        """
        decision = expire([self._entries[s].info for s in self._order], self.limits, now=now)
        self._carry_out(decision)
        return len(decision.expired)

    def append(self, seq: int, kind: EntryKind, payload: bytes, *, created: float) -> bool:
        """Write a report durably, after making room for it by the policy.

        Args:
            seq: Its sequence number (from the client's counter; unique).
            kind: What it holds.
            payload: The serialized request.
            created: When it was made (wall clock); ``max_age`` counts from here.

        Returns:
            Whether it was written (False: the policy refused it, e.g. larger than
            ``max_bytes``, or older than a state sync already spooled).

        Raises:
            OSError: The file could not be written (nothing was deleted for it).
        """
        created_ms = max(0, round(created * 1000))
        info = EntryInfo(seq, created_ms / 1000, len(payload), kind)
        decision = admit(
            [self._entries[s].info for s in self._order], info, self.limits, now=created
        )
        path = os.path.join(self.directory, f"{seq:016d}-{created_ms}.{kind.value}")
        if decision.accept:
            self._write(path, payload)
        self._carry_out(decision, seq, len(payload))  # counts the new one too if refused
        if not decision.accept:
            return False
        self._entries[seq] = SpoolEntry(info, path)
        self._order = sorted(self._entries)
        self._next_seq = max(self._next_seq, seq + 1)
        self._counts["written"] += 1
        return True

    def read(self, entry: SpoolEntry) -> bytes | None:
        """An entry's payload; None (and the entry dropped, counted) when unreadable."""
        try:
            with open(entry.path, "rb") as file:
                return file.read()
        except OSError as exc:
            logger.warning("D2003 spooled report %s cannot be read (%s); dropped", entry.path, exc)
            self._counts["unreadable"] += 1
            self.remove(entry)
            return None

    def remove(self, entry: SpoolEntry) -> None:
        """Delete a delivered (or dropped) entry; an entry already gone is fine."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(entry.path)
        if self._entries.pop(entry.seq, None) is not None:
            self._order.remove(entry.seq)

    def _write(self, path: str, payload: bytes) -> None:
        descriptor, temporary = tempfile.mkstemp(prefix=_TEMP_PREFIX, dir=self.directory)
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(payload)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        directory = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def _carry_out(
        self, decision: SpoolDecision, incoming: int | None = None, incoming_size: int = 0
    ) -> None:
        """Delete what ``decision`` drops, count it and say so (``incoming``: the seq of
        the report being added, which is not spooled yet, and its size)."""
        for name, seqs in (
            ("expired", decision.expired),
            ("superseded", decision.superseded),
            ("evicted", decision.evicted),
        ):
            for seq in seqs:
                self._counts[name] += 1
                entry = self._entries.get(seq)
                if entry is not None:
                    self.remove(entry)
        spooled = [seq for seq in decision.evicted if seq != incoming]
        if spooled:
            logger.warning(
                "D2003 the report spool is full (%d bytes): dropped %d oldest report(s)",
                self.limits.max_bytes,
                len(spooled),
            )
        if incoming in decision.evicted:
            logger.warning(
                "D2003 a new report (%d bytes) does not fit the report spool (%d bytes):"
                " dropped it",
                incoming_size,
                self.limits.max_bytes,
            )
        if decision.expired:
            logger.warning(
                "D2003 dropped %d spooled report(s) older than %g s",
                len(decision.expired),
                self.limits.max_age_s,
            )
