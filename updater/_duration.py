"""Durations and sizes in the ``update`` block: the grammar of ``supervisor._duration``.

The packages are siblings that must not import each other, so each has its own copy of this
small grammar; ``tests/test_duration_grammar.py`` checks that all of them accept the same
strings with the same values and refuse the same strings.

* A duration is one or more ``<number><unit>`` components (units ``ms``, ``s``, ``m``,
  ``h``, ``d``; ``"1h30m"``, ``".5s"``), or a non-negative int or float of seconds. A
  string of bare digits is refused (``"30"``: thirty what?), as are ``inf`` and NaN.
* A size is a non-negative int, a float with an integral value, or a string: a number and
  an optional unit ``B``, ``KB``/``MB``/``GB``/``TB`` (powers of 1000) or
  ``KiB``/``MiB``/``GiB``/``TiB`` (powers of 1024), case-insensitive, optionally separated
  by spaces (``"10MiB"``, ``"10 MiB"``, ``"10MB"``, ``"1024"``).

Components are summed as exact decimal fractions and rounded once.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from fractions import Fraction

__all__ = ["parse_duration", "parse_size"]

_UNITS = {"ms": Fraction(1, 1000), "s": Fraction(1), "m": Fraction(60), "h": Fraction(3600)}
_UNITS["d"] = Fraction(86400)
_NUMBER = r"([0-9]+(?:\.[0-9]+)?|\.[0-9]+)"
_COMPONENT = re.compile(_NUMBER + "(ms|s|m|h|d)")  # "ms" before "m": the longer unit wins
_DURATION = re.compile(f"(?:{_COMPONENT.pattern})+")
_SIZE = re.compile(_NUMBER + r"[ ]*([A-Za-z]*)")
_SIZE_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4}
_SIZE_UNITS |= {"kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def parse_duration(value: object) -> float:
    """Read a duration in seconds (see the module docstring).

    Raises:
        ValueError: Not such a duration (negative, infinite, a bool, unknown unit, ...).
    """
    exact: Fraction | int | float
    if isinstance(value, str) and _DURATION.fullmatch(text := value.strip(" \t\r\n")):
        exact = sum(
            (Fraction(Decimal(n)) * _UNITS[unit] for n, unit in _COMPONENT.findall(text)),
            Fraction(0),
        )
    elif isinstance(value, int | float) and not isinstance(value, bool):
        exact = value
    else:
        exact = -1
    try:
        seconds = float(exact)
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"not a duration: {_show(value)} (use e.g. 300s, 5m, 1h30m)")
    if seconds > 366 * 86400:  # as supervisor's MAX_DURATION_S
        raise ValueError(f"must be at most 366d (a year); got {_show(value)}")
    return seconds


def parse_size(value: object) -> int:
    """Read a size in bytes (see the module docstring).

    Raises:
        ValueError: Not such a size (negative, a fraction of a byte, unknown unit, ...).
    """
    size = Fraction(-1)
    if isinstance(value, bool):
        pass
    elif isinstance(value, int) or (isinstance(value, float) and math.isfinite(value)):
        size = Fraction(value)
    elif isinstance(value, str) and (match := _SIZE.fullmatch(value.strip(" \t\r\n"))):
        number, unit = match.groups()
        if unit.lower() in _SIZE_UNITS:
            size = Fraction(Decimal(number)) * _SIZE_UNITS[unit.lower()]
    if size < 0 or size.denominator != 1:
        raise ValueError(f"not a size: {_show(value)} (use e.g. 10MiB, 500MB, or bytes)")
    return size.numerator
