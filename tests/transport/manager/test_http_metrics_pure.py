"""The pure decisions of the metrics routes, property-tested: the time range rules and the
cluster overview's figures."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, strategies as st

from transport.manager._http._envelope import ApiError
from transport.manager._http._metrics_api import MAX_SPAN_S, cluster_overview, time_range
from transport.manager._model import MetricRow, Node, NodeStatus

times = st.floats(0, 4e9, allow_nan=False)


@given(start=st.none() | times, end=st.none() | times, now=times)
def test_required_range(start: float | None, end: float | None, now: float) -> None:
    """Both times required; end after start; at most 30 days; whole seconds around it."""
    if start is None or end is None or not 0 < end - start <= MAX_SPAN_S:
        with pytest.raises(ApiError, match=r"^\[1001\] (start_time|end_time): "):
            time_range(start, end, now=now)
        return
    assert time_range(start, end, now=now) == (math.floor(start), math.ceil(end))


@given(
    start=st.none() | times,
    end=st.none() | times,
    now=times,
    span=st.floats(1, MAX_SPAN_S),
)
def test_defaulted_range(start: float | None, end: float | None, now: float, span: float) -> None:
    """A missing end is now; a missing start is `span` before the end."""
    stop = now if end is None else end
    begin = stop - span if start is None else start
    if not 0 < stop - begin <= MAX_SPAN_S:
        with pytest.raises(ApiError, match=r"^\[1001\] end_time: "):
            time_range(start, end, now=now, default_span=span)
        return
    got = time_range(start, end, now=now, default_span=span)
    assert got == (math.floor(begin), math.ceil(stop))


def test_range_messages() -> None:
    with pytest.raises(ApiError, match="start_time: required"):
        time_range(None, 10.0, now=0)
    with pytest.raises(ApiError, match="end_time: must be after start_time"):
        time_range(10.0, 10.0, now=0)
    with pytest.raises(ApiError, match="at most 30 days"):
        time_range(0.0, MAX_SPAN_S + 1.0, now=0)


usage = st.floats(0, 100, allow_nan=False)


@st.composite
def entries(draw: st.DrawFn) -> list[tuple[Node, dict[str, MetricRow | None]]]:
    found = []
    for index in range(draw(st.integers(0, 8))):
        node = Node(
            index + 1,
            f"n{index}",
            status=draw(st.sampled_from(NodeStatus)),
            last_seen_at=draw(st.none() | st.floats(0, 2000)),
        )
        latest: dict[str, MetricRow | None] = {}
        for kind in ("cpu", "memory", "disk", "network"):
            values = draw(
                st.none()
                | st.dictionaries(
                    st.sampled_from(["usage_percent", "total_bytes", "rx_bytes", "tx_bytes"]),
                    usage,
                )
            )
            latest[kind] = None if values is None else MetricRow(0, node.node_id, kind, 0, values)
        found.append((node, latest))
    return found


@given(entries(), st.floats(0, 2000), st.floats(0, 500))
def test_overview_figures(
    found: list[tuple[Node, dict[str, MetricRow | None]]], now: float, after: float
) -> None:
    """Counts add up; the averages are the online nodes' means (0 with none online); every
    figure is a number; nodes come sorted by node id."""
    data = cluster_overview(found, now=now, offline_after_s=after)
    counts = data["aggregate"]["node_counts"]
    nodes = data["nodes"]
    assert counts["total"] == len(found) == counts["online"] + counts["offline"]
    assert [n["node_id"] for n in nodes] == sorted(n.node_id for n, _ in found)
    online = [n for n in nodes if n["status"] == "online"]
    assert len(online) == counts["online"]
    for key, field in (("avg_cpu", "cpu_usage"), ("avg_memory", "memory_usage")):
        values = [n[field] for n in online]
        expected = sum(values) / len(values) if values else 0.0
        assert math.isclose(data["aggregate"][key], expected, abs_tol=1e-9)
    for node in nodes:
        for field in ("cpu_usage", "memory_usage", "disk_usage", "network_rx", "network_tx"):
            assert isinstance(node[field], float) and node[field] >= 0
