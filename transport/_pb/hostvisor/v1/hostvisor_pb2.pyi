# mypy: disable-error-code="type-arg"
from transport._pb import daemon_pb2 as _daemon_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Health(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HEALTH_UNSPECIFIED: _ClassVar[Health]
    HEALTH_HEALTHY: _ClassVar[Health]
    HEALTH_UNHEALTHY: _ClassVar[Health]

class UpdateState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UPDATE_STATE_UNSPECIFIED: _ClassVar[UpdateState]
    UPDATE_STATE_PENDING: _ClassVar[UpdateState]
    UPDATE_STATE_RUNNING: _ClassVar[UpdateState]
    UPDATE_STATE_SUCCEEDED: _ClassVar[UpdateState]
    UPDATE_STATE_FAILED: _ClassVar[UpdateState]
    UPDATE_STATE_ROLLED_BACK: _ClassVar[UpdateState]
HEALTH_UNSPECIFIED: Health
HEALTH_HEALTHY: Health
HEALTH_UNHEALTHY: Health
UPDATE_STATE_UNSPECIFIED: UpdateState
UPDATE_STATE_PENDING: UpdateState
UPDATE_STATE_RUNNING: UpdateState
UPDATE_STATE_SUCCEEDED: UpdateState
UPDATE_STATE_FAILED: UpdateState
UPDATE_STATE_ROLLED_BACK: UpdateState

class GetAgentLogsRequest(_message.Message):
    __slots__ = ("agent_id", "lines")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    lines: int
    def __init__(self, agent_id: _Optional[str] = ..., lines: _Optional[int] = ...) -> None: ...

class GetAgentLogsResponse(_message.Message):
    __slots__ = ("lines",)
    LINES_FIELD_NUMBER: _ClassVar[int]
    lines: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, lines: _Optional[_Iterable[str]] = ...) -> None: ...

class FollowAgentLogsRequest(_message.Message):
    __slots__ = ("agent_id", "tail_lines")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    TAIL_LINES_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    tail_lines: int
    def __init__(self, agent_id: _Optional[str] = ..., tail_lines: _Optional[int] = ...) -> None: ...

class LogChunk(_message.Message):
    __slots__ = ("lines", "dropped_lines")
    LINES_FIELD_NUMBER: _ClassVar[int]
    DROPPED_LINES_FIELD_NUMBER: _ClassVar[int]
    lines: _containers.RepeatedScalarFieldContainer[str]
    dropped_lines: int
    def __init__(self, lines: _Optional[_Iterable[str]] = ..., dropped_lines: _Optional[int] = ...) -> None: ...

class WatchAgentStatesRequest(_message.Message):
    __slots__ = ("agent_ids",)
    AGENT_IDS_FIELD_NUMBER: _ClassVar[int]
    agent_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, agent_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class AgentStateEvent(_message.Message):
    __slots__ = ("snapshot", "change")
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    snapshot: AgentSnapshot
    change: AgentStateChange
    def __init__(self, snapshot: _Optional[_Union[AgentSnapshot, _Mapping]] = ..., change: _Optional[_Union[AgentStateChange, _Mapping]] = ...) -> None: ...

class AgentSnapshot(_message.Message):
    __slots__ = ("agents", "timestamp_ms")
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    agents: _containers.RepeatedCompositeFieldContainer[AgentDetail]
    timestamp_ms: int
    def __init__(self, agents: _Optional[_Iterable[_Union[AgentDetail, _Mapping]]] = ..., timestamp_ms: _Optional[int] = ...) -> None: ...

class AgentStateChange(_message.Message):
    __slots__ = ("agent_id", "old_status", "new_status", "reason", "timestamp_ms", "pid")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    OLD_STATUS_FIELD_NUMBER: _ClassVar[int]
    NEW_STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    old_status: str
    new_status: str
    reason: str
    timestamp_ms: int
    pid: int
    def __init__(self, agent_id: _Optional[str] = ..., old_status: _Optional[str] = ..., new_status: _Optional[str] = ..., reason: _Optional[str] = ..., timestamp_ms: _Optional[int] = ..., pid: _Optional[int] = ...) -> None: ...

class ListAgentDetailsRequest(_message.Message):
    __slots__ = ("agent_ids",)
    AGENT_IDS_FIELD_NUMBER: _ClassVar[int]
    agent_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, agent_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ListAgentDetailsResponse(_message.Message):
    __slots__ = ("agents",)
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    agents: _containers.RepeatedCompositeFieldContainer[AgentDetail]
    def __init__(self, agents: _Optional[_Iterable[_Union[AgentDetail, _Mapping]]] = ...) -> None: ...

class AgentDetail(_message.Message):
    __slots__ = ("info", "name", "enabled", "health", "health_summary", "last_error", "last_exit", "consecutive_restarts", "next_restart_at_ms")
    INFO_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    HEALTH_SUMMARY_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    LAST_EXIT_FIELD_NUMBER: _ClassVar[int]
    CONSECUTIVE_RESTARTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_RESTART_AT_MS_FIELD_NUMBER: _ClassVar[int]
    info: _daemon_pb2.AgentInfo
    name: str
    enabled: bool
    health: Health
    health_summary: str
    last_error: str
    last_exit: str
    consecutive_restarts: int
    next_restart_at_ms: int
    def __init__(self, info: _Optional[_Union[_daemon_pb2.AgentInfo, _Mapping]] = ..., name: _Optional[str] = ..., enabled: _Optional[bool] = ..., health: _Optional[_Union[Health, str]] = ..., health_summary: _Optional[str] = ..., last_error: _Optional[str] = ..., last_exit: _Optional[str] = ..., consecutive_restarts: _Optional[int] = ..., next_restart_at_ms: _Optional[int] = ...) -> None: ...

class GetUpdateResultRequest(_message.Message):
    __slots__ = ("update_id", "component")
    UPDATE_ID_FIELD_NUMBER: _ClassVar[int]
    COMPONENT_FIELD_NUMBER: _ClassVar[int]
    update_id: str
    component: str
    def __init__(self, update_id: _Optional[str] = ..., component: _Optional[str] = ...) -> None: ...

class UpdateResult(_message.Message):
    __slots__ = ("update_id", "component", "state", "old_version", "new_version", "restored_version", "reason", "code", "error", "log_tail", "restart_required", "accepted_at_ms", "finished_at_ms")
    UPDATE_ID_FIELD_NUMBER: _ClassVar[int]
    COMPONENT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    OLD_VERSION_FIELD_NUMBER: _ClassVar[int]
    NEW_VERSION_FIELD_NUMBER: _ClassVar[int]
    RESTORED_VERSION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    LOG_TAIL_FIELD_NUMBER: _ClassVar[int]
    RESTART_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    update_id: str
    component: str
    state: UpdateState
    old_version: str
    new_version: str
    restored_version: str
    reason: str
    code: str
    error: str
    log_tail: _containers.RepeatedScalarFieldContainer[str]
    restart_required: bool
    accepted_at_ms: int
    finished_at_ms: int
    def __init__(self, update_id: _Optional[str] = ..., component: _Optional[str] = ..., state: _Optional[_Union[UpdateState, str]] = ..., old_version: _Optional[str] = ..., new_version: _Optional[str] = ..., restored_version: _Optional[str] = ..., reason: _Optional[str] = ..., code: _Optional[str] = ..., error: _Optional[str] = ..., log_tail: _Optional[_Iterable[str]] = ..., restart_required: _Optional[bool] = ..., accepted_at_ms: _Optional[int] = ..., finished_at_ms: _Optional[int] = ...) -> None: ...
