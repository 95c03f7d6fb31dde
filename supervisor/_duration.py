"""Durations and sizes as written in configuration files.

Durations use Go's notation, as the seed's ``daemon.yaml`` does (``30s``, ``5m``,
``1h30m``, ``500ms``), plus ``d`` for days; a bare non-negative number means seconds.
Sizes are bytes, or a number with a decimal (``MB`` = 1000**2) or binary (``MiB`` =
1024**2) unit.

Parsing is exact: every component is read as a decimal fraction and summed before the
single rounding to float, so ``1h30m0.1s`` is the float nearest to 5400.1 and
:func:`format_duration` can promise that its output parses back to the same float. The
fractions are pairs of integers (Python divides two integers with one correct rounding):
the daemon parses its configuration at every start, and ``decimal`` and ``fractions``
would then stay in its memory for good (0.4 MiB); only :func:`format_duration` imports
``decimal``.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from decimal import Decimal

__all__ = ["MAX_DURATION_S", "format_duration", "parse_duration", "parse_size"]

# Each unit in milliseconds: a duration is a sum of integers over one power of ten.
_DURATION_UNITS_MS: dict[str, int] = {
    "ms": 1,
    "s": 1000,
    "m": 60_000,
    "h": 3_600_000,
    "d": 86_400_000,
}
# One "<number><unit>" component; "ms" is listed before "m" so the longer unit wins.
_COMPONENT = re.compile(r"([0-9]+(?:\.[0-9]+)?|\.[0-9]+)(ms|s|m|h|d)")
_DURATION = re.compile(rf"(?:{_COMPONENT.pattern})+")

_SIZE_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?|\.[0-9]+)[ ]*([A-Za-z]*)")

_DURATION_EXPECTED = "expected a duration such as 30s, 5m or 1h30m, or seconds"
#: The longest duration any setting may have: beyond a year it can only be a mistake.
MAX_DURATION_S = 366 * 86400
_SIZE_EXPECTED = "expected a size such as 500MB, 512KiB or 1GiB, or bytes"


def _decimal(number: str) -> tuple[int, int]:
    """A decimal numeral of the grammar (``12``, ``1.5``, ``.5``) as (digits, places): its
    value is ``digits / 10**places``."""
    whole, _, fraction = number.partition(".")
    return int(whole + fraction), len(fraction)


def show(value: object) -> str:
    """Render an offending value for an error message: its repr, shortened."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def parse_duration(value: object) -> float:
    """Read a duration in seconds.

    Args:
        value: A Go-style string of one or more ``<number><unit>`` components with
            units ``ms``, ``s``, ``m``, ``h`` and ``d`` (``"1h30m"``, ``"1.5s"``,
            ``"0s"``), or a non-negative int or float meaning seconds.

    Returns:
        The duration in seconds, finite and non-negative.

    Raises:
        ValueError: The value is negative, empty, infinite, NaN, a bool, has an
            unknown unit or is of another type. The message names the value.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{_DURATION_EXPECTED}; got {show(value)}")
    seconds: float
    try:
        if isinstance(value, str):
            text = value.strip(" \t\r\n")
            if not _DURATION.fullmatch(text):
                raise ValueError(f"{_DURATION_EXPECTED}; got {show(value)}")
            parts = [(_decimal(n), _DURATION_UNITS_MS[u]) for n, u in _COMPONENT.findall(text)]
            places = max(p for (_, p), _ in parts)
            # The sum of digits / 10**p * unit_ms, in ms, over one common denominator.
            numerator = sum(d * 10 ** (places - p) * ms for (d, p), ms in parts)
            seconds = numerator / (10**places * 1000)
        else:
            seconds = float(value)
    except OverflowError:  # 10**400 seconds: as wrong as an infinite duration
        seconds = math.inf
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{_DURATION_EXPECTED}; got {show(value)}")
    if seconds > MAX_DURATION_S:
        raise ValueError(f"must be at most 366d (a year); got {show(value)}")
    return seconds


def parse_size(value: object) -> int:
    """Read a size in bytes.

    Args:
        value: A non-negative int (bytes), a float with an integral value, or a string:
            digits with an optional unit ``B``, ``KB``/``MB``/``GB``/``TB`` (powers of
            1000) or ``KiB``/``MiB``/``GiB``/``TiB`` (powers of 1024), case-insensitive,
            e.g. ``"500MB"``, ``"1.5GiB"``.

    Returns:
        The size in bytes.

    Raises:
        ValueError: The value is negative, not a whole number of bytes, has an unknown
            unit, or is of another type (bools included). The message names the value.
    """
    numerator: int  # the size is numerator / denominator, exactly
    denominator: int
    if isinstance(value, bool):
        raise ValueError(f"{_SIZE_EXPECTED}; got {show(value)}")
    if isinstance(value, int):
        numerator, denominator = value, 1
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{_SIZE_EXPECTED}; got {show(value)}")
        numerator, denominator = value.as_integer_ratio()
    elif isinstance(value, str) and (match := _SIZE.fullmatch(value.strip(" \t\r\n"))):
        number, unit = match.groups()
        if unit.lower() not in _SIZE_UNITS:
            raise ValueError(f"{_SIZE_EXPECTED}; got {show(value)}")
        digits, places = _decimal(number)
        numerator, denominator = digits * _SIZE_UNITS[unit.lower()], 10**places
    else:
        raise ValueError(f"{_SIZE_EXPECTED}; got {show(value)}")
    if numerator < 0:
        raise ValueError(f"{_SIZE_EXPECTED}; got {show(value)}")
    if numerator % denominator:
        raise ValueError(f"{_SIZE_EXPECTED}; got {show(value)} (not a whole number of bytes)")
    return numerator // denominator


def _positional(number: Decimal) -> str:
    text = format(number, "f")  # never exponent notation, which our syntax lacks
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def format_duration(seconds: float) -> str:
    """Write a duration the way a person would, in a form :func:`parse_duration` reads back.

    Whole seconds are split into days, hours, minutes and seconds (``5400`` gives
    ``"1h30m"``, ``5400.5`` gives ``"1h30m0.5s"``) and durations under a second use
    ``ms`` (``"500ms"``).

    Args:
        seconds: A finite, non-negative number of seconds.

    Returns:
        A string ``s`` with ``parse_duration(s) == seconds``.

    Raises:
        ValueError: ``seconds`` is negative, infinite, NaN or a bool.
    """
    if isinstance(seconds, bool) or not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"expected a finite, non-negative number of seconds; got {show(seconds)}")
    from decimal import Decimal  # only here: see the module docstring

    # The shortest repr is the shortest decimal that rounds back to this float, and the
    # parser sums decimal components exactly before rounding once: so any split of this
    # decimal into components reads back as the same float.
    exact = Decimal(repr(float(seconds)))
    if exact == 0:
        return "0s"
    if exact < 1:
        return f"{_positional(exact * 1000)}ms"
    whole = int(exact)
    fraction = exact - whole
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        count, whole = divmod(whole, size)
        if count:
            parts.append(f"{count}{unit}")
    if whole or fraction:
        parts.append(f"{_positional(whole + fraction)}s")
    return "".join(parts)
