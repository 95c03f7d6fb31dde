"""Durations and sizes are parsed exactly: the integer arithmetic agrees with fractions."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, strategies as st

from supervisor import parse_duration, parse_size
from supervisor._duration import MAX_DURATION_S

NUMBERS = st.from_regex(r"[0-9]{1,20}(\.[0-9]{1,20})?|\.[0-9]{1,20}", fullmatch=True)
UNITS_S = {"ms": Fraction(1, 1000), "s": Fraction(1), "m": Fraction(60), "h": Fraction(3600)}
UNITS_S["d"] = Fraction(86400)
SIZES = {"": 1, "B": 1, "KB": 1000, "MiB": 1024**2, "GB": 1000**3, "TiB": 1024**4}


@given(st.lists(st.tuples(NUMBERS, st.sampled_from(sorted(UNITS_S))), min_size=1, max_size=4))
def test_duration_is_the_float_nearest_to_the_exact_sum(parts: list[tuple[str, str]]) -> None:
    """A duration string reads as the exact decimal sum, rounded once to a float."""
    text = "".join(number + unit for number, unit in parts)
    exact = sum(Fraction(Decimal(number)) * UNITS_S[unit] for number, unit in parts)
    try:
        seconds = parse_duration(text)
    except ValueError:
        assert exact > MAX_DURATION_S
        return
    assert exact <= MAX_DURATION_S
    assert seconds == float(exact)


@given(NUMBERS, st.sampled_from(sorted(SIZES)))
def test_size_is_exact_or_refused(number: str, unit: str) -> None:
    """A size string is the exact number of bytes, or refused when it is not whole."""
    exact = Fraction(Decimal(number)) * SIZES[unit]
    if exact.denominator != 1:
        with pytest.raises(ValueError, match="not a whole number of bytes"):
            parse_size(number + unit)
    else:
        assert parse_size(number + unit) == exact


@given(st.floats(min_value=0, allow_infinity=False, allow_nan=False))
def test_float_size_is_exact_or_refused(value: float) -> None:
    """A float size is accepted exactly when it is a whole number."""
    try:
        size = parse_size(value)
    except ValueError:
        assert not value.is_integer()
        return
    assert value.is_integer() and size == int(value) and math.isfinite(value)
