"""Restart delays: immediate first retry, then capped exponential backoff with jitter.

The seed (004 section 3.3.1) uses fixed steps of 0/10/30/60 s and sleeps inside the
restart call. We keep its knobs (``backoff_base``, ``backoff_max``) and defaults, but make
the schedule exponential (base, 2*base, 4*base, ... up to the cap), jittered downwards by
at most :data:`JITTER` so that a fleet of agents that crashed together does not restart in
lock step, and pure: the random draw is an argument.
"""

from __future__ import annotations

__all__ = ["JITTER", "MIN_RETRY_DELAY_S", "backoff_delay", "nominal_delay"]

#: Largest fraction by which a delay is shortened at random.
JITTER = 0.1
#: No second restart in a row comes sooner than this, whatever the configuration says:
#: a command that fails at once must not spin (Circus issue #1157).
MIN_RETRY_DELAY_S = 0.1

# 2**62 times any sane base is far past any cap; stops float overflow for huge attempts.
_MAX_EXPONENT = 62


def nominal_delay(attempt: int, base_s: float, max_s: float) -> float:
    """The un-jittered delay before restart number ``attempt`` in a row.

    Args:
        attempt: 0 for the first restart after a stable run, 1 for the second, ...
        base_s: The delay before the second restart.
        max_s: The cap.

    Returns:
        0 for attempt 0, else ``min(max_s, base_s * 2 ** (attempt - 1))``, but never
        less than :data:`MIN_RETRY_DELAY_S`.

    Raises:
        ValueError: a negative attempt or duration.
    """
    if attempt < 0 or base_s < 0 or max_s < 0:
        raise ValueError(f"negative backoff argument: {attempt=}, {base_s=}, {max_s=}")
    if attempt == 0:
        return 0.0
    exponent = min(attempt - 1, _MAX_EXPONENT)
    return float(max(MIN_RETRY_DELAY_S, min(max_s, base_s * 2.0**exponent)))


def backoff_delay(attempt: int, base_s: float, max_s: float, draw: float) -> float:
    """The delay before restart number ``attempt`` in a row, with jitter.

    Args:
        attempt: As for :func:`nominal_delay`.
        base_s: As for :func:`nominal_delay`.
        max_s: As for :func:`nominal_delay`.
        draw: A random number in ``[0, 1)``; the delay is shortened by ``JITTER * draw``.

    Returns:
        A delay in ``[(1 - JITTER) * nominal, nominal]``.

    Raises:
        ValueError: ``draw`` outside ``[0, 1)`` or a negative argument.
    """
    if not 0.0 <= draw < 1.0:
        raise ValueError(f"draw must be in [0, 1); got {draw!r}")
    return nominal_delay(attempt, base_s, max_s) * (1.0 - JITTER * draw)
