"""The restart delay schedule."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from supervisor import backoff_delay, nominal_delay
from supervisor._backoff import JITTER, MIN_RETRY_DELAY_S

attempts = st.integers(min_value=0, max_value=10_000)
durations = st.floats(min_value=0, max_value=1e6, allow_nan=False)
draws = st.floats(min_value=0, max_value=1, exclude_max=True)


@given(attempts, durations, durations, draws)
def test_delay_within_jitter_of_nominal(attempt: int, base: float, cap: float, u: float) -> None:
    """A jittered delay lies between (1 - JITTER) times the nominal delay and the nominal."""
    nominal = nominal_delay(attempt, base, cap)
    delay = backoff_delay(attempt, base, cap, u)
    assert nominal * (1 - JITTER) - 1e-9 <= delay <= nominal
    assert delay <= max(cap, MIN_RETRY_DELAY_S) or attempt == 0


@given(attempts, durations, durations)
def test_nominal_never_decreases(attempt: int, base: float, cap: float) -> None:
    """The nominal delay is non-decreasing in the attempt number and capped."""
    assert nominal_delay(attempt, base, cap) <= nominal_delay(attempt + 1, base, cap)
    assert nominal_delay(attempt, base, cap) <= max(cap, MIN_RETRY_DELAY_S)


@given(st.integers(min_value=1, max_value=100), durations, durations)
def test_retries_never_spin(attempt: int, base: float, cap: float) -> None:
    """Every restart after the first in a row waits at least MIN_RETRY_DELAY_S."""
    assert nominal_delay(attempt, base, cap) >= MIN_RETRY_DELAY_S


def test_schedule_of_the_seed_defaults() -> None:
    """With the seed's 10 s base and 60 s cap: 0, 10, 20, 40, 60, 60, ..."""
    assert [nominal_delay(a, 10, 60) for a in range(7)] == [0, 10, 20, 40, 60, 60, 60]


def test_first_restart_is_immediate() -> None:
    """Attempt 0 never waits, whatever the draw."""
    assert backoff_delay(0, 10, 60, 0.999) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((-1, 1, 1, 0.5), "negative"),
        ((1, -1, 1, 0.5), "negative"),
        ((1, 1, 1, 1.0), "draw must be in"),
        ((1, 1, 1, -0.1), "draw must be in"),
    ],
)
def test_bad_arguments(args: tuple[int, float, float, float], message: str) -> None:
    """Bad arguments are refused with a message naming them."""
    with pytest.raises(ValueError, match=message):
        backoff_delay(*args)
