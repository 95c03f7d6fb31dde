"""One duration grammar and one size grammar for the three sibling packages.

``supervisor._duration`` is the reference. ``collectors`` and ``updater`` must not import
it (the packages are siblings), so each carries its own small copy; this module checks that
every parser accepts the same strings with the same values and refuses the same strings (with
a ``ValueError``), on a shared table of examples and on strings Hypothesis writes.

Each ``_duration`` module is loaded from its file, alone: the grammar is compared whatever
state the rest of its package is in.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import example, given, strategies as st

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("supervisor", "collectors", "updater")


def _load(package: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"grammar_of_{package}", ROOT / package / "_duration.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MODULES = {package: _load(package) for package in PACKAGES}
Parser = Callable[[object], object]
DURATION_PARSERS: dict[str, Parser] = {p: m.parse_duration for p, m in MODULES.items()}
# collectors has no size keys, so no size parser.
SIZE_PARSERS: dict[str, Parser] = {
    p: m.parse_size for p, m in MODULES.items() if hasattr(m, "parse_size")
}


def outcome(parse: Parser, value: object) -> tuple[str, object, type | None]:
    """What a parser makes of ``value``: its value and type, or a refusal."""
    try:
        result = parse(value)
    except ValueError:
        return ("refused", None, None)
    return ("accepted", result, type(result))


def same_everywhere(parsers: dict[str, Parser], value: object) -> tuple[str, object, type | None]:
    """Assert every parser agrees about ``value``; return the reference's outcome."""
    reference = outcome(parsers["supervisor"], value)
    for package, parse in parsers.items():
        assert outcome(parse, value) == reference, f"{package} differs on {value!r}"
    return reference


# --- the shared table ---------------------------------------------------------------------

DURATIONS_ACCEPTED: list[tuple[object, float]] = [
    ("30s", 30.0),
    ("5m", 300.0),
    ("1h30m", 5400.0),
    ("500ms", 0.5),
    ("1.5s", 1.5),
    (".5s", 0.5),
    ("0s", 0.0),
    ("1d2h3m4s5ms", 93784.005),
    ("10s5m", 310.0),
    ("100ms200ms", 0.3),
    ("  45s\n", 45.0),
    (0, 0.0),
    (30, 30.0),
    (2.5, 2.5),
    ("366d", 366 * 86400.0),
    (366 * 86400, 366 * 86400.0),
]
DURATIONS_REFUSED: list[object] = [
    "30",  # bare digits: thirty what?
    "0",
    ".5",
    "inf",
    "infs",
    "nan",
    "",
    " ",
    "s",
    "-5s",
    "+5s",
    "5S",
    "5 s",
    "1h 30m",
    "1e3s",
    "1_000s",
    "0x10s",
    "1.2.3s",
    "5us",
    "5m5",
    "9" * 400 + "d",  # finite as a fraction, not as a float
    "99999999999999999999d",  # absurd: more than a year (issue 9, defect 7)
    "366d1ms",
    1e300,
    "1.s",  # a dot needs digits after it
    "\u0661s",  # ARABIC-INDIC DIGIT ONE: digits are ASCII
    "\u20035s",  # an em space is not whitespace here
    -1,
    -0.5,
    math.inf,
    math.nan,
    10**400,
    True,
    False,
    None,
    b"5s",
    [30],
]
SIZES_ACCEPTED: list[tuple[object, int]] = [
    ("10MiB", 10 * 1024**2),
    ("10MB", 10 * 1000**2),
    ("10 MiB", 10 * 1024**2),
    ("10 mib", 10 * 1024**2),
    ("1.5KB", 1500),
    (".5KB", 500),
    ("1024", 1024),
    ("10B", 10),
    ("1TiB", 1024**4),
    (" 2 GB ", 2 * 1000**3),
    (0, 0),
    (1048576, 1048576),
    (1048576.0, 1048576),
]
SIZES_REFUSED: list[object] = [
    "",
    "MB",
    "10XB",
    "10 M",
    "10MiBs",
    "-1",
    "+1",
    "1e3",
    "1_000",
    "0.5B",
    "1.0001KB",
    "inf",
    1.5,
    -1,
    math.inf,
    math.nan,
    True,
    None,
    [1],
]


@pytest.mark.parametrize(("value", "seconds"), DURATIONS_ACCEPTED)
def test_durations_accepted_alike(value: object, seconds: float) -> None:
    assert same_everywhere(DURATION_PARSERS, value) == ("accepted", seconds, float)


@pytest.mark.parametrize("value", DURATIONS_REFUSED)
def test_durations_refused_alike(value: object) -> None:
    assert same_everywhere(DURATION_PARSERS, value)[0] == "refused"


@pytest.mark.parametrize(("value", "size"), SIZES_ACCEPTED)
def test_sizes_accepted_alike(value: object, size: int) -> None:
    assert same_everywhere(SIZE_PARSERS, value) == ("accepted", size, int)


@pytest.mark.parametrize("value", SIZES_REFUSED)
def test_sizes_refused_alike(value: object) -> None:
    assert same_everywhere(SIZE_PARSERS, value)[0] == "refused"


def test_every_sibling_is_compared() -> None:
    assert set(DURATION_PARSERS) == set(PACKAGES)
    assert set(SIZE_PARSERS) == {"supervisor", "updater"}


# --- strings Hypothesis writes --------------------------------------------------------------

numbers = st.from_regex(r"\A(\d{1,4}(\.\d{0,3})?|\.\d{1,3})\Z")
units = st.sampled_from(["ms", "s", "m", "h", "d", "M", "S", "us", "", " s"])
spaces = st.sampled_from(["", " ", "\t", "\n", "  "])
# Near misses of valid durations: components, with now and then a stray character.
durations_ish = st.builds(
    lambda lead, parts, trail: lead + "".join(parts) + trail,
    spaces,
    st.lists(st.builds(lambda n, u: n + u, numbers, units), min_size=1, max_size=4),
    spaces | st.sampled_from(["-", "+", "x", "e3", ".", "inf"]),
)
size_units = st.sampled_from(
    ["", "B", "b", "KB", "kb", "MB", "MiB", "mib", "GiB", "TB", "TiB", "K", "KiBs", "iB"]
)
sizes_ish = st.builds(
    lambda lead, n, gap, u, trail: lead + n + gap + u + trail,
    spaces | st.just("-"),
    numbers,
    spaces,
    size_units,
    spaces,
)
# Anything at all from the characters the grammars care about, and a few they should not.
soup = st.text(alphabet="0123456789.smhdMSBKiGTb +-_e\t\u0661", max_size=12)
plain_values = (
    st.integers(-(10**20), 10**20)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.booleans()
    | st.none()
)


@given(durations_ish | soup | plain_values)
@example("1h30m0.1s")
@example("\u0661s")  # a non-ASCII digit: whatever the reference decides, all agree
def test_duration_parsers_agree(value: object) -> None:
    """Every package's parse_duration accepts and refuses exactly what the supervisor's does,
    with the same float."""
    kind, seconds, _ = same_everywhere(DURATION_PARSERS, value)
    if kind == "accepted":
        assert isinstance(seconds, float)
        assert math.isfinite(seconds)
        assert seconds >= 0


@given(sizes_ish | soup | plain_values)
@example("10 MiB")
def test_size_parsers_agree(value: object) -> None:
    """updater's parse_size accepts and refuses exactly what the supervisor's does, with the
    same number of bytes."""
    kind, size, _ = same_everywhere(SIZE_PARSERS, value)
    if kind == "accepted":
        assert isinstance(size, int)
        assert size >= 0
