"""The Manager's request validation: pure functions, properties and the original's traffic."""

from __future__ import annotations

import math
import string

import pytest
from hypothesis import given, strategies as st

from transport import (
    AgentStatus,
    InvalidMessageError,
    MetricPoint,
    StatusCode,
    daemon_pb2,
    manager_pb2,
    metric_to_message,
)
from transport.daemon._reporter import GRPC_PORT_METADATA_KEY as DAEMON_PORT_KEY
from transport.manager._validate import (
    GRPC_PORT_METADATA_KEY,
    MAX_TIMESTAMP,
    Limits,
    check_node_id,
    grpc_port_from_metadata,
    heartbeat_request,
    metrics_request,
    registration_request,
    states_request,
)

from .service_helpers import recorded_calls

NODE_CHARS = string.ascii_letters + string.digits + "._:-"
node_ids = st.text(NODE_CHARS, min_size=1, max_size=128)
metric_types = st.one_of(
    st.sampled_from(["cpu", "memory", "disk", "network"]),
    st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=32),
)
finite = st.floats(allow_nan=False, allow_infinity=False)
points = st.builds(
    MetricPoint,
    type=metric_types,
    timestamp=st.integers(1, MAX_TIMESTAMP),
    values=st.dictionaries(st.text(min_size=1, max_size=20), finite, max_size=10),
)


def invalid(field: str) -> pytest.RaisesExc[InvalidMessageError]:
    """Expect INVALID_ARGUMENT whose message starts with ``field``."""
    return pytest.raises(InvalidMessageError, match=rf"^INVALID_ARGUMENT: {_re(field)}: ")


def _re(text: str) -> str:
    return "".join("\\" + c if c in "[].()" else c for c in text)


def test_the_original_daemons_calls_pass() -> None:
    """Every call the original Go daemon made is accepted as it is."""
    calls = {c.method.name: c.request for c in recorded_calls()}
    registration = registration_request(calls["RegisterNode"])  # type: ignore[arg-type]
    assert registration.node.node_id == "9fb66f0b-dce6-49a2-ae58-2ab38de1821c"
    assert registration.grpc_port is None
    assert heartbeat_request(calls["Heartbeat"]) == registration.node.node_id  # type: ignore[arg-type]
    _, metrics = metrics_request(calls["ReportMetrics"])  # type: ignore[arg-type]
    assert {p.type for p in metrics} == {"cpu", "memory", "disk", "network"}
    assert all(p.values for p in metrics)
    _, states = states_request(calls["SyncAgentStates"])  # type: ignore[arg-type]
    assert [(s.agent_id, s.status, s.last_heartbeat) for s in states] == [
        ("beta", AgentStatus.RUNNING, 1796287170),
        ("alpha", AgentStatus.STOPPED, None),  # the Go zero time: unknown
    ]


@given(node_ids)
def test_a_well_formed_node_id_passes(node_id: str) -> None:
    assert check_node_id(node_id, field="X.node_id") == node_id
    assert heartbeat_request(manager_pb2.HeartbeatRequest(node_id=node_id)) == node_id


@given(node_ids, st.characters(exclude_characters=NODE_CHARS, exclude_categories=["Cs"]), st.data())
def test_any_other_character_is_refused(node_id: str, bad: str, data: st.DataObject) -> None:
    at = data.draw(st.integers(0, len(node_id)))
    spoiled = (node_id[:at] + bad + node_id[at:])[:128]
    if all(c in NODE_CHARS for c in spoiled):  # the bad character was cut off
        return
    with invalid("HeartbeatRequest.node_id") as caught:
        heartbeat_request(manager_pb2.HeartbeatRequest(node_id=spoiled))
    assert caught.value.status is StatusCode.INVALID_ARGUMENT


def test_node_id_empty_or_too_long() -> None:
    with pytest.raises(InvalidMessageError, match="node_id: empty"):
        check_node_id("", field="HeartbeatRequest.node_id")
    with pytest.raises(InvalidMessageError, match="longer than 128 characters"):
        check_node_id("a" * 129, field="HeartbeatRequest.node_id")
    assert check_node_id("a" * 3, field="f", limits=Limits(node_id=3)) == "aaa"


@given(node_ids, st.lists(points, max_size=64))
def test_metrics_round_trip(node_id: str, sent: list[MetricPoint]) -> None:
    """What our daemon can send arrives unchanged."""
    message = manager_pb2.ReportMetricsRequest(
        node_id=node_id, metrics=[metric_to_message(p) for p in sent]
    )
    assert metrics_request(message) == (node_id, tuple(sent))


def test_non_finite_values_are_dropped_not_refused() -> None:
    message = manager_pb2.ReportMetricsRequest(
        node_id="n",
        metrics=[
            manager_pb2.MetricData(
                type="cpu", timestamp=5, values={"a": math.nan, "b": math.inf, "c": 1.5}
            )
        ],
    )
    _, (point,) = metrics_request(message)
    assert dict(point.values) == {"c": 1.5}


@pytest.mark.parametrize(
    ("metric", "field", "problem"),
    [
        (manager_pb2.MetricData(type="", timestamp=1), "metrics[1].type", "empty"),
        (manager_pb2.MetricData(type="CPU", timestamp=1), "metrics[1].type", "'CPU' is not"),
        (manager_pb2.MetricData(type="a" * 33, timestamp=1), "metrics[1].type", "is not"),
        (manager_pb2.MetricData(type="cpu", timestamp=0), "metrics[1].timestamp", "got 0"),
        (manager_pb2.MetricData(type="cpu", timestamp=-62135596800), "metrics[1].timestamp", ""),
        (
            manager_pb2.MetricData(type="cpu", timestamp=MAX_TIMESTAMP + 1),
            "metrics[1].timestamp",
            "",
        ),
        (manager_pb2.MetricData(type="cpu", timestamp=1, values={"": 1}), "metrics[1].values", ""),
        (
            manager_pb2.MetricData(type="cpu", timestamp=1, values={"k" * 129: 1.0}),
            "metrics[1].values (a key)",
            "longer than 128",
        ),
        (
            manager_pb2.MetricData(
                type="cpu", timestamp=1, values=dict.fromkeys(map(str, range(257)), 1)
            ),
            "metrics[1].values",
            "more than 256 values (257)",
        ),
    ],
)
def test_a_bad_metric_is_named(metric: manager_pb2.MetricData, field: str, problem: str) -> None:
    good = manager_pb2.MetricData(type="cpu", timestamp=1, values={"x": 1.0})
    message = manager_pb2.ReportMetricsRequest(node_id="n", metrics=[good, metric])
    with invalid(f"ReportMetricsRequest.{field}") as caught:
        metrics_request(message)
    assert problem in caught.value.details


def test_too_many_metrics() -> None:
    metric = manager_pb2.MetricData(type="cpu", timestamp=1)
    message = manager_pb2.ReportMetricsRequest(node_id="n", metrics=[metric] * 65)
    with invalid("ReportMetricsRequest.metrics"):
        metrics_request(message)
    assert len(metrics_request(message, limits=Limits(metrics=65))[1]) == 65


agent_states = st.builds(
    daemon_pb2.AgentState,
    agent_id=st.text(min_size=1, max_size=30),
    status=st.sampled_from(["", "running", "stopped", "failed", "error", "STARTING"]),
    pid=st.integers(0, 2**31 - 1),
    last_heartbeat=st.integers(-(2**63), 2**63 - 1),
    type=st.text(max_size=10),
    version=st.text(max_size=10),
)


@given(node_ids, st.lists(agent_states, max_size=50, unique_by=lambda s: s.agent_id))
def test_states_keep_order_and_ids(node_id: str, states: list[daemon_pb2.AgentState]) -> None:
    message = daemon_pb2.SyncAgentStatesRequest(node_id=node_id, states=states)
    got_node, records = states_request(message)
    assert got_node == node_id
    assert [r.agent_id for r in records] == [s.agent_id for s in states]
    assert all((r.last_heartbeat or 0) >= 0 for r in records)


@pytest.mark.parametrize(
    ("state", "field"),
    [
        (daemon_pb2.AgentState(agent_id=""), "states[1].agent_id"),
        (daemon_pb2.AgentState(agent_id="b", status="dead"), "states[1].status"),
        (daemon_pb2.AgentState(agent_id="b", pid=-1), "states[1].pid"),
        (daemon_pb2.AgentState(agent_id="a"), "states[1].agent_id"),  # twice
        (daemon_pb2.AgentState(agent_id="b" * 256), "states[1].agent_id"),
        (daemon_pb2.AgentState(agent_id="b", version="v" * 256), "states[1].version"),
    ],
)
def test_a_bad_state_is_named(state: daemon_pb2.AgentState, field: str) -> None:
    first = daemon_pb2.AgentState(agent_id="a", status="running")
    message = daemon_pb2.SyncAgentStatesRequest(node_id="n", states=[first, state])
    with invalid(f"SyncAgentStatesRequest.{field}"):
        states_request(message)


def test_too_many_states() -> None:
    states = [daemon_pb2.AgentState(agent_id=str(i)) for i in range(1001)]
    message = daemon_pb2.SyncAgentStatesRequest(node_id="n", states=states)
    with invalid("SyncAgentStatesRequest.states"):
        states_request(message)
    assert len(states_request(message, limits=Limits(states=1001))[1]) == 1001


def test_registration_bounds() -> None:
    def request(**fields: object) -> manager_pb2.RegisterNodeRequest:
        return manager_pb2.RegisterNodeRequest(**{"node_id": "n", **fields})  # type: ignore[arg-type]

    assert registration_request(request(hostname="h" * 255)).node.hostname == "h" * 255
    with invalid("RegisterNodeRequest.hostname"):
        registration_request(request(hostname="h" * 256))
    with invalid("RegisterNodeRequest.agent_version"):
        registration_request(request(agent_version="v" * 65_537))
    with invalid("RegisterNodeRequest.labels"):
        registration_request(request(labels={str(i): "" for i in range(65)}))
    with invalid("RegisterNodeRequest.labels"):
        registration_request(request(labels={"": "x"}))
    with invalid("RegisterNodeRequest.labels['k']"):
        registration_request(request(labels={"k": "x" * 256}))
    with invalid("RegisterNodeRequest.node_id"):
        registration_request(request(node_id="a b"))


@given(st.integers(1, 65535))
def test_an_announced_port_is_read(port: int) -> None:
    assert grpc_port_from_metadata(str(port)) == port
    message = manager_pb2.RegisterNodeRequest(node_id="n")
    assert registration_request(message, grpc_port=f" {port}").grpc_port == port


@pytest.mark.parametrize("value", ["", "0", "65536", "-1", "9091x", "٣", "1e3"])
def test_a_bad_announced_port_is_refused(value: str) -> None:
    with invalid(f"metadata {GRPC_PORT_METADATA_KEY}"):
        grpc_port_from_metadata(value)


def test_daemon_and_manager_agree_on_the_port_key() -> None:
    assert DAEMON_PORT_KEY == GRPC_PORT_METADATA_KEY == "hostvisor-grpc-port"


def test_limits_are_positive() -> None:
    with pytest.raises(ValueError, match=r"Limits\.states"):
        Limits(states=0)
