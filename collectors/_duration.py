"""Durations as the seed's ``daemon.yaml`` writes them (``60s``, ``5m``, ``1h30m``).

A duration is one or more ``<number><unit>`` components, Go-style, with units ``ms``,
``s``, ``m``, ``h`` and ``d``; or a plain number of seconds as a YAML int or float (a string
of bare digits such as ``"30"`` is refused). Components are summed exactly as decimal
fractions and rounded to float once, so ``"1h30m0.1s"`` is the float nearest 5400.1. The
package has its own parser (it must stand alone); the grammar is exactly the supervisor's
(``supervisor._duration``), which ``tests/test_duration_grammar.py`` checks.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from fractions import Fraction

__all__ = ["parse_duration"]

_UNITS: dict[str, Fraction] = {
    "ms": Fraction(1, 1000),
    "s": Fraction(1),
    "m": Fraction(60),
    "h": Fraction(3600),
    "d": Fraction(86400),
}
# "ms" is listed before "m" so that the longer unit wins.
_COMPONENT = re.compile(r"([0-9]+(?:\.[0-9]+)?|\.[0-9]+)(ms|s|m|h|d)")
_DURATION = re.compile(rf"(?:{_COMPONENT.pattern})+")

EXPECTED = "expected a duration such as 60s, 5m or 1h30m, or a number of seconds"


def parse_duration(value: object) -> float:
    """Read a duration in seconds.

    Args:
        value: ``"60s"``, ``"1h30m"``, ``"1.5s"``, ``"500ms"``, or seconds as an int or a
            float.

    Returns:
        The duration in seconds: finite and non-negative.

    Raises:
        ValueError: The value is of another type (bools included), empty, negative,
            infinite, NaN or has an unknown unit. The message shows the value.
    """
    exact: Fraction | float
    if isinstance(value, str):
        text = value.strip(" \t\r\n")
        if _DURATION.fullmatch(text):
            exact = sum(
                (
                    Fraction(Decimal(number)) * _UNITS[unit]
                    for number, unit in _COMPONENT.findall(text)
                ),
                Fraction(0),
            )
        else:
            raise ValueError(f"{EXPECTED}; got {value!r}")
    elif isinstance(value, int | float) and not isinstance(value, bool):
        exact = value
    else:
        raise ValueError(f"{EXPECTED}; got {value!r}")
    try:
        seconds = float(exact)
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{EXPECTED}; got {value!r}")
    if seconds > 366 * 86400:  # as supervisor's MAX_DURATION_S
        raise ValueError(f"must be at most 366d (a year); got {value!r}")
    return seconds
