"""Replay protection: which validly signed requests were already tried (pure).

Theory of operation
-------------------
The version floor moves only on a commit. A request that verified, was installed and then
failed (rolled back, or undone by recovery) would therefore verify again until its statement
expires, and every replay would stop the agent, switch, fail and roll back once more. So the
updater remembers each request it installed, by its *signed identity*:

* an envelope request: the SHA-256 of the signed statement's payload bytes. A statement has
  exactly one byte form (canonical JSON), so signing it again with another key, or wrapping
  it in another envelope, gives the same identity;
* a legacy request: its component and the artifact's SHA-256, the only thing its signature
  covers.

A request whose identity is remembered is refused (``replayed``) as soon as its signature has
verified, before anything is downloaded. The record is kept in the state directory next to the
floor and stays bounded: an entry is dropped once its statement has expired or the floor has
passed its counter (for a legacy entry, its version), because ``expired`` or ``rollback``
refuses a replay from then on anyway; and at most :data:`MAX_TRIED` entries per component
are kept, the newest.

A request is remembered just before its version is switched in, once nothing but the switch
and the trial can fail: a failed download, a refused version check, a busy updater, a backup,
hold or stop that failed change no version on the host, so the same request may come again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from ._verify import Floor, compare_versions

__all__ = ["MAX_TRIED", "Tried", "find", "legacy_identity", "prune", "remember"]

MAX_TRIED = 64
"""Entries kept per component (the newest)."""


@dataclass(frozen=True, slots=True)
class Tried:
    """A request whose version was switched in (or was about to be).

    Attributes:
        identity: Its signed identity (hex SHA-256; see the module docstring).
        version: The version it installed.
        counter: Its signed counter (-1 for a legacy request).
        expires: When its statement expires, Unix seconds (None for a legacy request).
        tried_at: When it was switched in, Unix seconds.
    """

    identity: str
    version: str
    counter: int
    expires: int | None
    tried_at: int


def legacy_identity(component: str, sha256_hex: str) -> str:
    """The identity of a legacy request: its component and the artifact's SHA-256."""
    return hashlib.sha256(f"legacy\0{component}\0{sha256_hex.lower()}".encode()).hexdigest()


def find(tried: Sequence[Tried], identity: str, *, now: float, floor: Floor) -> Tried | None:
    """The remembered request with ``identity``, unless ``expired`` or ``rollback`` refuses
    its replay anyway (those reasons say more: the request is over, or was superseded)."""
    live = prune(tried, now=now, floor=floor)
    return next((entry for entry in live if entry.identity == identity), None)


def _pointless(entry: Tried, *, now: float, floor: Floor) -> bool:
    """Whether a replay of ``entry`` would be refused anyway (``expired``, ``rollback``)."""
    if entry.expires is not None:
        return now >= entry.expires or entry.counter <= floor.counter
    if floor.version is None:
        return False
    order = compare_versions(entry.version, floor.version)
    return order is None or order <= 0


def prune(tried: Sequence[Tried], *, now: float, floor: Floor) -> tuple[Tried, ...]:
    """Drop the entries a replay of which is refused anyway; keep the newest :data:`MAX_TRIED`.

    Args:
        tried: The entries, oldest first.
        now: Current Unix seconds.
        floor: The component's floor.

    Returns:
        The entries still needed, oldest first.
    """
    live = [entry for entry in tried if not _pointless(entry, now=now, floor=floor)]
    return tuple(live[-MAX_TRIED:])


def remember(
    tried: Sequence[Tried], entry: Tried, *, now: float, floor: Floor
) -> tuple[Tried, ...]:
    """Add ``entry`` (replacing an entry of the same identity), then :func:`prune`."""
    others = [old for old in tried if old.identity != entry.identity]
    return prune([*others, entry], now=now, floor=floor)
