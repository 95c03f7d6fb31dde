"""The dashboard's alert rules (pure): severities, critical levels, ordering, shapes."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from transport.manager._alerts import (
    Alert,
    FailedAgent,
    Kind,
    OfflineNode,
    Reading,
    Severity,
    Thresholds,
    alerts,
    critical_level,
    severity,
)

percent = st.floats(min_value=0, max_value=150, allow_nan=False)
threshold = st.floats(min_value=0.5, max_value=100, allow_nan=False)
resource = st.sampled_from([Kind.CPU, Kind.MEMORY, Kind.DISK])
node_ids = st.text(alphabet="abcdef0123456789-", min_size=1, max_size=8)


@given(threshold)
def test_critical_level_lies_between_threshold_and_100(t: float) -> None:
    """The critical level is never below the threshold, never above 100 (unless the
    threshold is), and 95 or threshold + 5 whichever is higher, within those bounds."""
    level = critical_level(t)
    assert t <= level <= max(100.0, t)
    assert level == max(t, min(100.0, max(t + 5, 95.0)))


def test_default_bands() -> None:
    """With 90 %: nothing below 90, warning from 90, critical from 95."""
    assert severity(89.99, 90) is None
    assert severity(90, 90) is Severity.WARNING
    assert severity(94.9, 90) is Severity.WARNING
    assert severity(95, 90) is Severity.CRITICAL
    assert severity(100, 100) is Severity.CRITICAL
    assert severity(float("nan"), 90) is None


@given(percent, percent, threshold)
def test_severity_is_monotonic(a: float, b: float, t: float) -> None:
    """A higher reading is never less severe."""
    rank = {None: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}
    low, high = sorted((a, b))
    assert rank[severity(low, t)] <= rank[severity(high, t)]
    assert (severity(a, t) is None) == (a < t)


@st.composite
def readings(draw: st.DrawFn) -> Reading:
    return Reading(draw(node_ids), draw(st.text(max_size=5)), draw(resource), draw(percent))


@given(
    st.lists(readings(), max_size=20),
    st.lists(st.builds(OfflineNode, node_ids, st.text(max_size=5)), max_size=5),
    st.lists(st.builds(FailedAgent, node_ids, st.text(max_size=5), node_ids), max_size=5),
    st.builds(Thresholds, threshold, threshold, threshold),
)
def test_one_alert_per_candidate_worst_first(
    found: list[Reading],
    offline: list[OfflineNode],
    failed: list[FailedAgent],
    thresholds: Thresholds,
) -> None:
    """Every offline node and failed agent gives one critical alert, every reading at or
    over its threshold one alert of its severity, nothing else; critical ones come first."""
    result = alerts(thresholds, readings=found, offline=offline, failed=failed)
    over = [r for r in found if r.value >= thresholds.of(r.kind)]
    assert len(result) == len(over) + len(offline) + len(failed)
    kinds = [a.kind for a in result]
    assert kinds.count(Kind.OFFLINE) == len(offline)
    assert kinds.count(Kind.AGENT_FAILED) == len(failed)
    severities = [a.severity for a in result]
    assert severities == sorted(severities, key=lambda s: s is not Severity.CRITICAL)
    for alert in result:
        assert isinstance(alert, Alert)
        if alert.kind in (Kind.OFFLINE, Kind.AGENT_FAILED):
            assert alert.severity is Severity.CRITICAL and alert.value is None
            assert (alert.agent_id is not None) == (alert.kind is Kind.AGENT_FAILED)
        else:
            assert alert.value is not None and alert.threshold == thresholds.of(alert.kind)
            assert alert.severity is severity(alert.value, alert.threshold)
            assert alert.agent_id is None
        assert alert.message
    assert alerts(thresholds, readings=reversed(found), offline=offline, failed=failed) == result


def test_messages_and_order_of_one_node() -> None:
    """An offline node, then a failed agent, then resource alerts, highest first."""
    thresholds = Thresholds(cpu_percent=80)
    result = alerts(
        thresholds,
        readings=[Reading("n1", "web", Kind.CPU, 85.0), Reading("n2", "db", Kind.DISK, 99.5)],
        offline=[OfflineNode("n3", "n3", 1.0)],
        failed=[FailedAgent("n1", "web", "nginx")],
    )
    assert [(a.severity.value, a.kind.value, a.node_id) for a in result] == [
        ("critical", "offline", "n3"),
        ("critical", "agent_failed", "n1"),
        ("critical", "disk", "n2"),
        ("warning", "cpu", "n1"),
    ]
    assert result[0].message == "n3: offline"
    assert result[1].message == "web: agent nginx failed"
    assert result[3].message == "web: CPU at 85.0% (threshold 80%)"


@pytest.mark.parametrize("value", [0, -1, 100.5, float("nan"), "90"])
def test_thresholds_out_of_range_are_refused(value: object) -> None:
    """A threshold must be a number in (0, 100]."""
    with pytest.raises(ValueError, match="cpu_percent"):
        Thresholds(cpu_percent=value)  # type: ignore[arg-type]
