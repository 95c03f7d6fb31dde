"""Unit tests of duration and size parsing and formatting (supervisor._duration)."""

from __future__ import annotations

import math

import pytest

from supervisor._duration import format_duration, parse_duration, parse_size

DURATION_MESSAGE = "expected a duration such as 30s, 5m or 1h30m, or seconds; got "
SIZE_MESSAGE = "expected a size such as 500MB, 512KiB or 1GiB, or bytes; got "


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("500ms", 0.5),
        ("1.5s", 1.5),
        ("0s", 0.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("1h30m10s", 5410.0),
        ("1d2h3m4s5ms", 93784.005),
        (".5s", 0.5),
        ("1h0.1s", 3600.1),
        ("10s5m", 310.0),  # Go accepts components in any order
        ("  45s  ", 45.0),
        (0, 0.0),
        (30, 30.0),
        (2.5, 2.5),
    ],
)
def test_parse_duration_accepts(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_parse_duration_returns_float_for_int() -> None:
    assert type(parse_duration(30)) is float


def test_parse_duration_sums_components_before_rounding() -> None:
    # 0.1 + 0.2 in floats is 0.30000000000000004; exact decimal sums give 0.3.
    assert parse_duration("100ms200ms") == 0.3


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("30x", "'30x'"),
        ("", "''"),
        ("-5s", "'-5s'"),
        (-1, "-1"),
        (-0.5, "-0.5"),
        ("30", "'30'"),
        ("1h 30m", "'1h 30m'"),
        ("s", "'s'"),
        ("1.2.3s", "'1.2.3s'"),
        ("5us", "'5us'"),
        (True, "True"),
        (False, "False"),
        (None, "None"),
        ([30], "[30]"),
        (math.nan, "nan"),
        (math.inf, "inf"),
    ],
)
def test_parse_duration_rejects(value: object, shown: str) -> None:
    with pytest.raises(ValueError, match=r"^expected a duration") as info:
        parse_duration(value)
    assert str(info.value) == DURATION_MESSAGE + shown


def test_parse_duration_rejects_values_too_large_for_a_float() -> None:
    with pytest.raises(ValueError, match=r"^expected a duration"):
        parse_duration(10**400)
    with pytest.raises(ValueError, match=r"^expected a duration"):
        parse_duration("9" * 400 + "d")


def test_error_message_shortens_long_values() -> None:
    with pytest.raises(ValueError, match=r"\.\.\.$") as info:
        parse_duration("x" * 500)
    assert len(str(info.value)) < len(DURATION_MESSAGE) + 70


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (0, 0),
        (524288000, 524288000),
        ("500MB", 500_000_000),
        ("512KiB", 524_288),
        ("1GiB", 1024**3),
        ("10B", 10),
        ("1024", 1024),
        ("1.5KB", 1500),
        ("1.5GiB", 1610612736),
        ("2TB", 2 * 1000**4),
        ("1TiB", 1024**4),
        ("64 MiB", 64 * 1024**2),
        ("100mb", 100_000_000),
        (1048576.0, 1048576),
    ],
)
def test_parse_size_accepts(value: object, size: int) -> None:
    assert parse_size(value) == size
    assert type(parse_size(value)) is int


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("5XB", "'5XB'"),
        ("", "''"),
        ("-1MB", "'-1MB'"),
        (-1, "-1"),
        (True, "True"),
        (None, "None"),
        ("MB", "'MB'"),
        (math.inf, "inf"),
        (math.nan, "nan"),
        ([1], "[1]"),
    ],
)
def test_parse_size_rejects(value: object, shown: str) -> None:
    with pytest.raises(ValueError, match=r"^expected a size") as info:
        parse_size(value)
    assert str(info.value) == SIZE_MESSAGE + shown


@pytest.mark.parametrize("value", ["1.0001KB", 1.5, "0.5B"])
def test_parse_size_rejects_fractions_of_a_byte(value: object) -> None:
    with pytest.raises(ValueError, match=r"not a whole number of bytes"):
        parse_size(value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.0, "0s"),
        (0.5, "500ms"),
        (0.001, "1ms"),
        (1, "1s"),
        (1.5, "1.5s"),
        (30, "30s"),
        (60, "1m"),
        (90, "1m30s"),
        (300, "5m"),
        (3600.5, "1h0.5s"),
        (5400, "1h30m"),
        (5400.1, "1h30m0.1s"),
        (86400, "1d"),
        (90061.25, "1d1h1m1.25s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


def test_format_duration_never_uses_exponent_notation() -> None:
    text = format_duration(1e-7)
    assert "e" not in text
    assert parse_duration(text) == 1e-7


@pytest.mark.parametrize("seconds", [-1.0, math.inf, math.nan, True])
def test_format_duration_rejects(seconds: float) -> None:
    with pytest.raises(ValueError, match="finite, non-negative"):
        format_duration(seconds)


def test_an_absurd_duration_is_refused_with_its_path() -> None:
    """``stop_timeout: 99999999999999999999d`` is a clear error, not a silent wait."""
    from supervisor import ConfigError, parse_agents

    agents = [{"id": "a", "binary_path": "/bin/sh", "stop_timeout": "99999999999999999999d"}]
    with pytest.raises(ConfigError) as caught:
        parse_agents(agents, work_dir="/tmp/hv")
    [issue] = caught.value.issues
    assert issue.path == "agents[0].stop_timeout"
    assert "at most 366d" in issue.message
