"""The daemon pool's pure decisions: the cap, idleness, what a status means, the target."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, strategies as st

from transport import StatusCode, hostvisor_pb2 as h
from transport.manager._pool_policy import (
    Disposition,
    Slot,
    disposition,
    idle_expired,
    next_idle_deadline,
    over_cap,
    target_of,
    update_status,
)

times = st.floats(min_value=0, max_value=1e6, allow_nan=False)


@st.composite
def slot_lists(draw: st.DrawFn) -> list[Slot]:
    targets = draw(st.lists(st.text(min_size=1, max_size=8), unique=True, max_size=12))
    return [Slot(t, draw(st.integers(min_value=0, max_value=3)), draw(times)) for t in targets]


@given(slot_lists(), st.integers(min_value=0, max_value=6), st.integers(min_value=1, max_value=12))
def test_over_cap_closes_only_idle_channels_least_recently_used_first(
    slots: list[Slot], retiring: int, cap: int
) -> None:
    """Only idle slots are chosen, the oldest first, exactly enough to meet the cap (or all
    idle ones when busy channels alone exceed it)."""
    open_total = len(slots) + retiring
    chosen = over_cap(slots, open_total=open_total, cap=cap)
    by_target = {slot.target: slot for slot in slots}
    idle = [slot for slot in slots if slot.in_use == 0]
    assert all(by_target[t].in_use == 0 for t in chosen)
    assert len(set(chosen)) == len(chosen)
    assert len(chosen) == min(max(0, open_total - cap), len(idle))
    kept_idle = [slot for slot in idle if slot.target not in chosen]
    if chosen and kept_idle:
        assert max(by_target[t].last_used for t in chosen) <= min(s.last_used for s in kept_idle)
    ages = [by_target[t].last_used for t in chosen]
    assert ages == sorted(ages)


def test_over_cap_ties_go_to_the_earlier_slot() -> None:
    """Equal ages: the slot named first is closed first."""
    slots = [Slot("a", 0, 1.0), Slot("b", 0, 1.0), Slot("c", 1, 0.0)]
    assert over_cap(slots, open_total=3, cap=2) == ["a"]
    assert over_cap(slots, open_total=3, cap=3) == []
    assert over_cap(slots, open_total=5, cap=1) == ["a", "b"]


@given(slot_lists(), times, st.floats(min_value=0.001, max_value=1e4))
def test_idle_expiry_and_the_next_deadline_agree(
    slots: list[Slot], now: float, idle_s: float
) -> None:
    """Expired: exactly the idle slots unused for idle_s; the next deadline is the earliest
    an idle slot expires, and none has expired before it."""
    expired = set(idle_expired(slots, now=now, idle_s=idle_s))
    for slot in slots:
        due = slot.in_use == 0 and slot.last_used + idle_s <= now
        assert (slot.target in expired) == due
    deadline = next_idle_deadline(slots, idle_s=idle_s)
    idle = [slot for slot in slots if slot.in_use == 0]
    if not idle:
        assert deadline == math.inf and not expired
    else:
        assert deadline == min(slot.last_used for slot in idle) + idle_s
        assert set(idle_expired(slots, now=deadline, idle_s=idle_s))
        if now < deadline:
            assert not expired


@given(st.sampled_from(list(StatusCode)[1:]))
def test_only_unavailable_and_deadline_mean_unreachable(status: StatusCode) -> None:
    """UNAVAILABLE and DEADLINE_EXCEEDED evict; every other status is the daemon's answer."""
    expected = (
        Disposition.UNREACHABLE
        if status in (StatusCode.UNAVAILABLE, StatusCode.DEADLINE_EXCEEDED)
        else Disposition.PASS
    )
    assert disposition(status) is expected


@pytest.mark.parametrize(
    ("ip", "port", "expected"),
    [
        ("10.0.0.5", None, "10.0.0.5:9091"),
        ("10.0.0.5", 0, "10.0.0.5:9091"),
        ("10.0.0.5", 19091, "10.0.0.5:19091"),
        ("::1", None, "[::1]:9091"),
        ("[fe80::1]", 7, "[fe80::1]:7"),
        ("node-7.example", 9091, "node-7.example:9091"),
        ("unknown", None, "unknown:9091"),
    ],
)
def test_target_of(ip: str, port: int | None, expected: str) -> None:
    """ip:port, the default port when none was announced, IPv6 in brackets."""
    assert target_of(ip, port) == expected


@pytest.mark.parametrize(
    ("ip", "port"), [("", None), (" 10.0.0.1", None), ("a b", 1), ("h", 70000)]
)
def test_target_of_refuses_what_cannot_be_dialled(ip: str, port: int | None) -> None:
    """No address, blanks, a port out of range: ValueError."""
    with pytest.raises(ValueError):
        target_of(ip, port)


@given(st.ip_addresses(), st.integers(min_value=1, max_value=65535))
def test_target_of_round_trips_every_address(address: object, port: int) -> None:
    """The host part parses back to the address, the port is the one given."""
    import ipaddress

    target = target_of(str(address), port)
    host, _, text = target.rpartition(":")
    assert int(text) == port
    assert ipaddress.ip_address(host.strip("[]")) == address
    assert host.startswith("[") == (":" in str(address))


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (h.UpdateResult(state=h.UPDATE_STATE_PENDING), ("pending", "")),
        (h.UpdateResult(state=h.UPDATE_STATE_RUNNING, new_version="2"), ("running", "")),
        (
            h.UpdateResult(state=h.UPDATE_STATE_SUCCEEDED, new_version="1.2.0"),
            ("succeeded", "installed 1.2.0"),
        ),
        (
            h.UpdateResult(state=h.UPDATE_STATE_SUCCEEDED, new_version="3", restart_required=True),
            ("succeeded", "installed 3; the daemon restarts to run it"),
        ),
        (
            h.UpdateResult(
                state=h.UPDATE_STATE_FAILED, code="D4002", reason="hash_mismatch", error="bad hash"
            ),
            ("failed", "D4002 hash_mismatch: bad hash"),
        ),
        (
            h.UpdateResult(
                state=h.UPDATE_STATE_ROLLED_BACK, error="trial failed", restored_version="1.0"
            ),
            ("rolled_back", "trial failed (restored 1.0)"),
        ),
        (h.UpdateResult(state=h.UPDATE_STATE_FAILED), ("failed", "failed")),
        (h.UpdateResult(state=h.UPDATE_STATE_UNSPECIFIED), ("unknown", "")),
    ],
)
def test_update_status(result: h.UpdateResult, expected: tuple[str, str]) -> None:
    """Each state by its Manager name; the message says what was installed, or why not."""
    assert update_status(result) == expected
