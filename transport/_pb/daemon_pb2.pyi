# mypy: disable-error-code="type-arg"
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RegisterRequest(_message.Message):
    __slots__ = ("hostname", "ip", "os", "arch", "labels", "daemon_version", "agent_version")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    IP_FIELD_NUMBER: _ClassVar[int]
    OS_FIELD_NUMBER: _ClassVar[int]
    ARCH_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    DAEMON_VERSION_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    hostname: str
    ip: str
    os: str
    arch: str
    labels: _containers.ScalarMap[str, str]
    daemon_version: str
    agent_version: str
    def __init__(self, hostname: _Optional[str] = ..., ip: _Optional[str] = ..., os: _Optional[str] = ..., arch: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., daemon_version: _Optional[str] = ..., agent_version: _Optional[str] = ...) -> None: ...

class RegisterResponse(_message.Message):
    __slots__ = ("node_id", "success", "message")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    success: bool
    message: str
    def __init__(self, node_id: _Optional[str] = ..., success: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("node_id", "timestamp", "status")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    timestamp: int
    status: str
    def __init__(self, node_id: _Optional[str] = ..., timestamp: _Optional[int] = ..., status: _Optional[str] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("success", "message")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class MetricsRequest(_message.Message):
    __slots__ = ("node_id", "timestamp", "data")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    timestamp: int
    data: bytes
    def __init__(self, node_id: _Optional[str] = ..., timestamp: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class MetricsResponse(_message.Message):
    __slots__ = ("success", "message")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class ConfigRequest(_message.Message):
    __slots__ = ("node_id", "config_type")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIG_TYPE_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    config_type: str
    def __init__(self, node_id: _Optional[str] = ..., config_type: _Optional[str] = ...) -> None: ...

class ConfigResponse(_message.Message):
    __slots__ = ("success", "message", "config_data")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_DATA_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    config_data: bytes
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ..., config_data: _Optional[bytes] = ...) -> None: ...

class UpdateRequest(_message.Message):
    __slots__ = ("node_id", "component", "version", "download_url", "hash", "signature", "update_data")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    COMPONENT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DOWNLOAD_URL_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_DATA_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    component: str
    version: str
    download_url: str
    hash: str
    signature: str
    update_data: bytes
    def __init__(self, node_id: _Optional[str] = ..., component: _Optional[str] = ..., version: _Optional[str] = ..., download_url: _Optional[str] = ..., hash: _Optional[str] = ..., signature: _Optional[str] = ..., update_data: _Optional[bytes] = ...) -> None: ...

class UpdateResponse(_message.Message):
    __slots__ = ("success", "message")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...

class ListAgentsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListAgentsResponse(_message.Message):
    __slots__ = ("agents",)
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    agents: _containers.RepeatedCompositeFieldContainer[AgentInfo]
    def __init__(self, agents: _Optional[_Iterable[_Union[AgentInfo, _Mapping]]] = ...) -> None: ...

class AgentInfo(_message.Message):
    __slots__ = ("id", "type", "version", "status", "pid", "start_time", "restart_count", "last_heartbeat")
    ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    RESTART_COUNT_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    id: str
    type: str
    version: str
    status: str
    pid: int
    start_time: int
    restart_count: int
    last_heartbeat: int
    def __init__(self, id: _Optional[str] = ..., type: _Optional[str] = ..., version: _Optional[str] = ..., status: _Optional[str] = ..., pid: _Optional[int] = ..., start_time: _Optional[int] = ..., restart_count: _Optional[int] = ..., last_heartbeat: _Optional[int] = ...) -> None: ...

class AgentOperationRequest(_message.Message):
    __slots__ = ("agent_id", "operation")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    operation: str
    def __init__(self, agent_id: _Optional[str] = ..., operation: _Optional[str] = ...) -> None: ...

class AgentOperationResponse(_message.Message):
    __slots__ = ("success", "error_message")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    success: bool
    error_message: str
    def __init__(self, success: _Optional[bool] = ..., error_message: _Optional[str] = ...) -> None: ...

class ResourceDataPoint(_message.Message):
    __slots__ = ("timestamp", "cpu", "memory_rss", "memory_vms", "disk_read_bytes", "disk_write_bytes", "open_files")
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    CPU_FIELD_NUMBER: _ClassVar[int]
    MEMORY_RSS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_VMS_FIELD_NUMBER: _ClassVar[int]
    DISK_READ_BYTES_FIELD_NUMBER: _ClassVar[int]
    DISK_WRITE_BYTES_FIELD_NUMBER: _ClassVar[int]
    OPEN_FILES_FIELD_NUMBER: _ClassVar[int]
    timestamp: int
    cpu: float
    memory_rss: int
    memory_vms: int
    disk_read_bytes: int
    disk_write_bytes: int
    open_files: int
    def __init__(self, timestamp: _Optional[int] = ..., cpu: _Optional[float] = ..., memory_rss: _Optional[int] = ..., memory_vms: _Optional[int] = ..., disk_read_bytes: _Optional[int] = ..., disk_write_bytes: _Optional[int] = ..., open_files: _Optional[int] = ...) -> None: ...

class AgentMetricsRequest(_message.Message):
    __slots__ = ("agent_id", "duration_seconds")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    duration_seconds: int
    def __init__(self, agent_id: _Optional[str] = ..., duration_seconds: _Optional[int] = ...) -> None: ...

class AgentMetricsResponse(_message.Message):
    __slots__ = ("agent_id", "data_points")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_POINTS_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    data_points: _containers.RepeatedCompositeFieldContainer[ResourceDataPoint]
    def __init__(self, agent_id: _Optional[str] = ..., data_points: _Optional[_Iterable[_Union[ResourceDataPoint, _Mapping]]] = ...) -> None: ...

class AgentState(_message.Message):
    __slots__ = ("agent_id", "status", "pid", "last_heartbeat", "type", "version")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    status: str
    pid: int
    last_heartbeat: int
    type: str
    version: str
    def __init__(self, agent_id: _Optional[str] = ..., status: _Optional[str] = ..., pid: _Optional[int] = ..., last_heartbeat: _Optional[int] = ..., type: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class SyncAgentStatesRequest(_message.Message):
    __slots__ = ("node_id", "states")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    states: _containers.RepeatedCompositeFieldContainer[AgentState]
    def __init__(self, node_id: _Optional[str] = ..., states: _Optional[_Iterable[_Union[AgentState, _Mapping]]] = ...) -> None: ...

class SyncAgentStatesResponse(_message.Message):
    __slots__ = ("success", "message")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ...) -> None: ...
