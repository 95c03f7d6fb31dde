"""Conversions between messages and domain records: round trips and validation."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
from hypothesis import given, strategies as st

import supervisor
from transport import (
    DEFAULT_LOG_LINES,
    DEFAULT_METRICS_DURATION_S,
    AgentInfoRecord,
    AgentStateRecord,
    AgentStatus,
    InvalidMessageError,
    MetricPoint,
    NodeRegistration,
    Operation,
    OperationRequest,
    ResourcePoint,
    StateChange,
    StatusCode,
    agent_detail_from_supervisor,
    agent_info_from_message,
    agent_info_from_supervisor,
    agent_info_to_message,
    agent_state_from_message,
    agent_state_to_message,
    daemon_pb2 as d,
    hostvisor_pb2 as h,
    manager_pb2 as m,
    metric_from_message,
    metric_to_message,
    operation_request_from_message,
    operation_request_to_message,
    parse_agent_status,
    parse_follow_request,
    parse_log_request,
    parse_metrics_request,
    parse_operation,
    registration_from_message,
    registration_to_message,
    resource_point_from_message,
    resource_point_to_message,
    state_change_from_message,
    state_change_to_message,
)

INT32 = st.integers(-(2**31), 2**31 - 1)
INT64 = st.integers(-(2**63), 2**63 - 1)
UINT64 = st.integers(0, 2**64 - 1)
PID = st.integers(0, 2**31 - 1)
TIME = st.none() | st.integers(1, 2**63 - 1)
TEXT = st.text(max_size=20)
ID = st.text(min_size=1, max_size=20)
STATUS = st.sampled_from(AgentStatus)
# What peers send as a status: ours, the synonym, other spellings, and junk.
STATUS_TEXT = st.sampled_from(
    ["", "running", "RUNNING", " stopped ", "error", "failed", "restarting", "unknown"]
) | st.text(max_size=10)
FINITE = st.floats(allow_nan=False, allow_infinity=False)
ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True)

agent_infos = st.builds(
    AgentInfoRecord,
    id=ID,
    type=TEXT,
    version=TEXT,
    status=st.none() | STATUS,
    pid=PID,
    start_time=TIME,
    restart_count=PID,
    last_heartbeat=TIME,
)
agent_states = st.builds(
    AgentStateRecord,
    agent_id=ID,
    status=st.none() | STATUS,
    pid=PID,
    last_heartbeat=TIME,
    type=TEXT,
    version=TEXT,
)
state_changes = st.builds(
    StateChange,
    agent_id=ID,
    old_status=STATUS,
    new_status=STATUS,
    reason=TEXT,
    timestamp_ms=TIME,
    pid=PID,
)
registrations = st.builds(
    NodeRegistration,
    node_id=ID,
    hostname=TEXT,
    ip=TEXT,
    os=TEXT,
    arch=TEXT,
    labels=st.dictionaries(TEXT, TEXT, max_size=5),
    daemon_version=TEXT,
    agent_version=TEXT,
)
metric_points = st.builds(
    MetricPoint, type=ID, timestamp=INT64, values=st.dictionaries(TEXT, FINITE, max_size=8)
)
resource_points = st.builds(
    ResourcePoint,
    timestamp=INT64,
    cpu=st.floats(min_value=0, allow_nan=False, allow_infinity=False),
    memory_rss=UINT64,
    memory_vms=UINT64,
    disk_read_bytes=UINT64,
    disk_write_bytes=UINT64,
    open_files=PID,
)


def wire(message: Any) -> Any:
    """The message as the other side decodes it: serialized, then parsed."""
    return type(message).FromString(message.SerializeToString())


# --------------------------------------------------------------------------- records first


@given(agent_infos)
def test_agent_info_round_trip(record: AgentInfoRecord) -> None:
    """A record survives conversion to a message, the wire, and back."""
    assert agent_info_from_message(wire(agent_info_to_message(record))) == record


@given(agent_states)
def test_agent_state_round_trip(record: AgentStateRecord) -> None:
    """A SyncAgentStates entry survives the round trip."""
    assert agent_state_from_message(wire(agent_state_to_message(record))) == record


@given(state_changes)
def test_state_change_round_trip(change: StateChange) -> None:
    """A state change survives the round trip."""
    assert state_change_from_message(wire(state_change_to_message(change))) == change


@given(registrations)
def test_registration_round_trip(registration: NodeRegistration) -> None:
    """A registration (labels included) survives the round trip."""
    assert registration_from_message(wire(registration_to_message(registration))) == registration


@given(metric_points)
def test_metric_round_trip(point: MetricPoint) -> None:
    """A metric point with finite values survives the round trip exactly."""
    back = metric_from_message(wire(metric_to_message(point)))
    assert back == point
    assert all(
        math.copysign(1, back.values[k]) == math.copysign(1, v) for k, v in point.values.items()
    )


@given(resource_points)
def test_resource_point_round_trip(point: ResourcePoint) -> None:
    """A resource point survives the round trip (uint64 up to 2**64 - 1)."""
    assert resource_point_from_message(wire(resource_point_to_message(point))) == point


@given(ID, st.sampled_from(Operation))
def test_operation_request_round_trip(agent_id: str, operation: Operation) -> None:
    """An operation request survives the round trip."""
    request = OperationRequest(agent_id, operation)
    assert operation_request_from_message(wire(operation_request_to_message(request))) == request


# --------------------------------------------------------------------------- messages first


KNOWN_STATUSES = {s.value for s in AgentStatus} | {"error", ""}


def first_invalid(checks: list[tuple[str, bool]]) -> str | None:
    """The first field whose check failed, in the order the converter reads them."""
    return next((name for name, ok in checks if not ok), None)


@given(ID, TEXT, TEXT, STATUS_TEXT, INT32, INT64, INT32, INT64)
def test_any_agent_info_message_converts_or_names_its_field(
    id: str, type: str, version: str, status: str, pid: int, start: int, restarts: int, beat: int
) -> None:
    """Any AgentInfo converts, or fails with InvalidMessageError naming its first bad
    field; what converts comes back equal except for the documented normalisations."""
    message = d.AgentInfo(
        id=id, type=type, version=version, status=status, pid=pid,
        start_time=start, restart_count=restarts, last_heartbeat=beat,
    )  # fmt: skip
    normalised = status.strip().lower()
    bad = first_invalid(
        [
            ("AgentInfo.status", normalised in KNOWN_STATUSES),
            ("AgentInfo.pid", pid >= 0),
            ("AgentInfo.restart_count", restarts >= 0),
        ]
    )
    if bad is not None:
        with pytest.raises(InvalidMessageError) as caught:
            agent_info_from_message(message)
        assert caught.value.field == bad and caught.value.status is StatusCode.INVALID_ARGUMENT
        return
    back = agent_info_to_message(agent_info_from_message(message))
    assert back.start_time == max(start, 0) and back.last_heartbeat == max(beat, 0)
    assert back.status == {"error": "failed"}.get(normalised, normalised)
    assert (back.id, back.type, back.version, back.pid, back.restart_count) == (
        id, type, version, pid, restarts,
    )  # fmt: skip


@given(TEXT, STATUS_TEXT, INT32, INT64)
def test_any_agent_state_message_converts_or_names_its_field(
    agent_id: str, status: str, pid: int, beat: int
) -> None:
    """Any AgentState converts, or fails naming its first bad field (an empty id too)."""
    message = d.AgentState(agent_id=agent_id, status=status, pid=pid, last_heartbeat=beat)
    bad = first_invalid(
        [
            ("AgentState.agent_id", agent_id != ""),
            ("AgentState.status", status.strip().lower() in KNOWN_STATUSES),
            ("AgentState.pid", pid >= 0),
        ]
    )
    if bad is not None:
        with pytest.raises(InvalidMessageError) as caught:
            agent_state_from_message(message)
        assert caught.value.field == bad
        return
    record = agent_state_from_message(message)
    assert record.agent_id == agent_id and record.pid == pid
    assert (record.status is None) == (status.strip() == "")
    assert record.last_heartbeat == (beat if beat > 0 else None)


@given(ID, st.dictionaries(TEXT, ANY_FLOAT, max_size=8), INT64)
def test_metric_message_drops_non_finite_values(
    kind: str, values: dict[str, float], timestamp: int
) -> None:
    """NaN and infinite values are dropped on the way in; every finite one is kept."""
    message = wire(m.MetricData(type=kind, timestamp=timestamp, values=values))
    point = metric_from_message(message)
    assert point.values == {k: v for k, v in values.items() if math.isfinite(v)}
    assert point.timestamp == timestamp
    assert MetricPoint.finite(kind, timestamp, values) == point
    # Built without the constructor's checks: what they would give, read-only floats.
    assert all(type(value) is float for value in point.values.values())
    with pytest.raises(TypeError):
        point.values["x"] = 1.0  # type: ignore[index]


@given(ANY_FLOAT, INT32)
def test_resource_point_message_validates_cpu_and_open_files(cpu: float, open_files: int) -> None:
    """A point converts exactly when cpu is finite and >= 0 and open_files >= 0."""
    message = wire(d.ResourceDataPoint(timestamp=1, cpu=cpu, open_files=open_files))
    bad = first_invalid(
        [
            ("ResourceDataPoint.cpu", math.isfinite(cpu) and cpu >= 0),
            ("ResourceDataPoint.open_files", open_files >= 0),
        ]
    )
    if bad is not None:
        with pytest.raises(InvalidMessageError) as caught:
            resource_point_from_message(message)
        assert caught.value.field == bad
        return
    point = resource_point_from_message(message)
    assert (point.cpu, point.open_files) == (cpu, open_files)


@given(st.text(max_size=12))
def test_operation_is_exact(text: str) -> None:
    """Exactly start, stop and restart are operations; anything else names the field."""
    if text in {"start", "stop", "restart"}:
        assert parse_operation(text) is Operation(text)
        return
    with pytest.raises(InvalidMessageError) as caught:
        parse_operation(text)
    assert caught.value.field == "AgentOperationRequest.operation"
    assert str(caught.value).startswith("INVALID_ARGUMENT: AgentOperationRequest.operation: ")


def test_operation_request_needs_an_agent() -> None:
    """An empty agent_id is invalid, named as the request's field."""
    with pytest.raises(InvalidMessageError, match=r"AgentOperationRequest\.agent_id: empty"):
        operation_request_from_message(d.AgentOperationRequest(operation="start"))
    with pytest.raises(InvalidMessageError, match="empty"):
        operation_request_from_message(d.AgentOperationRequest(agent_id="a"))


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("running", AgentStatus.RUNNING),
        (" Stopped\n", AgentStatus.STOPPED),
        ("error", AgentStatus.FAILED),
        ("ERROR", AgentStatus.FAILED),
        ("failed", AgentStatus.FAILED),
        ("", None),
        ("  ", None),
    ],
)
def test_status_strings(text: str, status: AgentStatus | None) -> None:
    """Statuses are read case-insensitively; error is failed; empty is not reported."""
    assert parse_agent_status(text, field="X.status") is status


def test_unknown_status_names_the_field() -> None:
    """An unknown status fails, naming the field and the value."""
    with pytest.raises(InvalidMessageError, match=r"AgentInfo\.status: unknown status 'paused'"):
        agent_info_from_message(d.AgentInfo(id="a", status="paused"))


@given(INT32)
def test_log_request_lines(lines: int) -> None:
    """GetAgentLogs takes 1 to 1000 lines, 0 meaning 100; anything else names the field."""
    message = h.GetAgentLogsRequest(agent_id="a", lines=lines)
    if 0 <= lines <= 1000:
        assert parse_log_request(message).lines == (lines or DEFAULT_LOG_LINES)
    else:
        with pytest.raises(InvalidMessageError, match=r"GetAgentLogsRequest\.lines"):
            parse_log_request(message)


@given(INT32)
def test_follow_request_tail(tail: int) -> None:
    """FollowAgentLogs sends 0 to 1000 lines of history; anything else names the field."""
    message = h.FollowAgentLogsRequest(agent_id="a", tail_lines=tail)
    if 0 <= tail <= 1000:
        assert parse_follow_request(message).lines == tail
    else:
        with pytest.raises(InvalidMessageError, match=r"FollowAgentLogsRequest\.tail_lines"):
            parse_follow_request(message)


@given(INT64)
def test_metrics_duration(duration: int) -> None:
    """GetAgentMetrics' duration: 0 or less means an hour."""
    _, seconds = parse_metrics_request(
        d.AgentMetricsRequest(agent_id="a", duration_seconds=duration)
    )
    assert seconds == (duration if duration > 0 else DEFAULT_METRICS_DURATION_S)


@pytest.mark.parametrize(
    ("convert", "message", "field"),
    [
        (parse_log_request, h.GetAgentLogsRequest(), "GetAgentLogsRequest.agent_id"),
        (parse_follow_request, h.FollowAgentLogsRequest(), "FollowAgentLogsRequest.agent_id"),
        (parse_metrics_request, d.AgentMetricsRequest(), "AgentMetricsRequest.agent_id"),
        (registration_from_message, m.RegisterNodeRequest(), "RegisterNodeRequest.node_id"),
        (metric_from_message, m.MetricData(), "MetricData.type"),
        (agent_info_from_message, d.AgentInfo(), "AgentInfo.id"),
        (
            state_change_from_message,
            h.AgentStateChange(agent_id="a"),
            "AgentStateChange.old_status",
        ),
    ],
)
def test_required_fields(convert: Any, message: Any, field: str) -> None:
    """A required field left empty fails, naming the field."""
    with pytest.raises(InvalidMessageError) as caught:
        convert(message)
    assert caught.value.field == field


# --------------------------------------------------------------------------- records reject


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: AgentInfoRecord(""), "AgentInfoRecord.id"),
        (lambda: AgentInfoRecord("a", pid=2**31), "AgentInfoRecord.pid"),
        (lambda: AgentInfoRecord("a", pid=-1), "AgentInfoRecord.pid"),
        (lambda: AgentInfoRecord("a", start_time=0), "AgentInfoRecord.start_time"),
        (lambda: AgentInfoRecord("a", last_heartbeat=2**63), "AgentInfoRecord.last_heartbeat"),
        (lambda: AgentInfoRecord("a", restart_count=True), "AgentInfoRecord.restart_count"),
        (lambda: AgentStateRecord("a", pid=-5), "AgentStateRecord.pid"),
        (lambda: ResourcePoint(0, cpu=math.nan), "ResourcePoint.cpu"),
        (lambda: ResourcePoint(0, cpu=-0.5), "ResourcePoint.cpu"),
        (lambda: ResourcePoint(0, memory_rss=2**64), "ResourcePoint.memory_rss"),
        (lambda: ResourcePoint(2**63), "ResourcePoint.timestamp"),
        (lambda: MetricPoint("cpu", 0, {"x": math.inf}), "MetricPoint.values['x']"),
        (lambda: MetricPoint("", 0, {}), "MetricPoint.type"),
        (lambda: NodeRegistration("n", labels={"k": 1}), "NodeRegistration.labels['k']"),
        (
            lambda: StateChange("a", AgentStatus.RUNNING, AgentStatus.FAILED, pid=-1),
            "StateChange.pid",
        ),
    ],
)
def test_records_reject_what_the_wire_cannot_carry(build: Any, field: str) -> None:
    """A record outside its wire type's range (or meaning) is refused, naming the field."""
    with pytest.raises(ValueError, match=f"^{re.escape(field)}: "):
        build()


def test_records_are_read_only() -> None:
    """Labels and values are read-only copies of what was passed."""
    labels = {"zone": "a"}
    registration = NodeRegistration("n", labels=labels)
    labels["zone"] = "b"
    assert registration.labels == {"zone": "a"}
    with pytest.raises(TypeError):
        registration.labels["zone"] = "c"  # type: ignore[index]
    assert MetricPoint("cpu", 1, {"cores": 2}).values == {"cores": 2.0}


# --------------------------------------------------------------------------- supervisor


def _info(**changes: Any) -> supervisor.AgentInfo:
    fields: dict[str, Any] = {
        "id": "fb", "type": supervisor.AgentType.FILEBEAT, "name": "Filebeat",
        "binary_path": "/usr/bin/filebeat", "config_file": None, "work_dir": "/var/lib/fb",
        "socket_path": None, "enabled": True, "pid": 4242,
        "status": supervisor.AgentState.RUNNING, "restart_count": 3, "last_restart": None,
        "started_at": 1_700_000_000.9, "created_at": 1_600_000_000.0,
        "updated_at": 1_700_000_000.9, "last_exit": supervisor.ExitStatus(code=1),
        "last_error": "exited with status 1", "next_restart_at": None,
        "consecutive_restarts": 1, "log_file": "/var/log/fb.log", "healthy": True,
        "health": supervisor.HealthSnapshot(True, {}, None, "ready"),
    }  # fmt: skip
    fields.update(changes)
    return supervisor.AgentInfo(**fields)


def test_agent_info_from_supervisor() -> None:
    """A supervisor snapshot maps onto the original AgentInfo, times in whole seconds."""
    record = agent_info_from_supervisor(_info(), version="8.1", last_heartbeat=1_700_000_100.5)
    assert record == AgentInfoRecord(
        "fb", "filebeat", "8.1", AgentStatus.RUNNING, 4242, 1_700_000_000, 3, 1_700_000_100
    )
    stopped = agent_info_from_supervisor(
        _info(pid=0, status=supervisor.AgentState.STOPPED, started_at=None, restart_count=2**40)
    )
    assert (stopped.pid, stopped.start_time, stopped.restart_count) == (0, None, 2**31 - 1)
    assert agent_info_to_message(stopped).status == "stopped"


@pytest.mark.parametrize("state", list(supervisor.AgentState))
def test_every_supervisor_state_has_a_wire_status(state: supervisor.AgentState) -> None:
    """Each lifecycle state of the supervisor is one of the wire's status strings."""
    assert agent_info_from_supervisor(_info(status=state)).status is AgentStatus(state.value)


def test_agent_detail_from_supervisor() -> None:
    """AgentDetail adds health, errors and the scheduled restart to AgentInfo."""
    detail = agent_detail_from_supervisor(_info(next_restart_at=1_700_000_001.25), version="8.1")
    assert detail.info.id == "fb" and detail.info.version == "8.1"
    assert (detail.name, detail.enabled, detail.health) == ("Filebeat", True, h.HEALTH_HEALTHY)
    assert detail.health_summary == "healthy [ready]"
    assert detail.last_exit == "exited with status 1"
    assert detail.last_error == "exited with status 1"
    assert (detail.consecutive_restarts, detail.next_restart_at_ms) == (1, 1_700_000_001_250)
    unknown = agent_detail_from_supervisor(_info(healthy=None, health=None, last_exit=None))
    assert (unknown.health, unknown.health_summary, unknown.last_exit) == (
        h.HEALTH_UNSPECIFIED, "", "",
    )  # fmt: skip
    assert agent_detail_from_supervisor(_info(healthy=False)).health == h.HEALTH_UNHEALTHY


def test_status_error_needs_a_failure() -> None:
    """StatusError refuses OK: it always reports a failure."""
    from transport import StatusError

    with pytest.raises(ValueError, match="non-OK"):
        StatusError(StatusCode.OK, "fine")
