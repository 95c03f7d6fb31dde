"""How long the spool keeps answered requests (pure: the spool passes names, times, ``now``)."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["KEEP_ANSWERED", "MAX_AGE_S", "TEMP_MAX_AGE_S", "forgotten", "stale"]

KEEP_ANSWERED = 100
"""Answered requests kept in the spool (with their results), the newest."""
MAX_AGE_S = 7 * 86400.0
"""Answered requests older than this are removed, even among the newest."""
TEMP_MAX_AGE_S = 3600.0
"""A file still being written after this long was left by a killed writer."""


def forgotten(
    answered: Mapping[str, float], *, now: float, keep: int, max_age_s: float
) -> set[str]:
    """Which answered requests to remove: all but the newest ``keep``, and any older than
    ``max_age_s``.

    Args:
        answered: Request name to the wall-clock time of its last file (request or result).
        now: Current wall-clock seconds.
        keep: How many of the newest to keep at most.
        max_age_s: Age from which a request is removed whatever its rank.

    Returns:
        The names to remove.
    """
    newest_first = sorted(answered, key=lambda name: (answered[name], name), reverse=True)
    return {
        name
        for rank, name in enumerate(newest_first)
        if rank >= keep or now - answered[name] >= max_age_s
    }


def stale(modified: float, *, now: float, max_age_s: float = TEMP_MAX_AGE_S) -> bool:
    """Whether a temp file last modified at ``modified`` was abandoned by its writer."""
    return now - modified >= max_age_s
