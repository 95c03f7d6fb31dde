"""gRPC transport between hostvisor's daemon and the Manager.

The package that wires ``supervisor``, ``collectors`` and ``updater`` to the network;
nothing imports it. Its parts:

* The contracts: ``transport/protos`` holds the original system's two services exactly
  (``manager.ManagerService`` and ``proto.DaemonService``, wire-compatible with the
  original Go daemon and Manager) and our additions (``hostvisor.v1.HostvisorService``).
  The generated message modules are :data:`manager_pb2`, :data:`daemon_pb2` and
  :data:`hostvisor_pb2`; :class:`ManagerService`, :class:`DaemonService` and
  :class:`HostvisorService` hold each service's typed method descriptors.
* Conversions (pure): small frozen records (:class:`AgentInfoRecord`,
  :class:`MetricPoint`, ...) and functions to and from the messages; invalid input
  raises :class:`InvalidMessageError` naming the field.
* The bridge between Trio and grpc.aio: :func:`open_grpc_loop`, then
  :func:`serve_grpc` with :func:`unary_route` / :func:`stream_route` handlers written as
  Trio coroutines, and :func:`open_channel` for calls. Errors from the other side arrive
  as :class:`RemoteError`; a handler answers a status by raising :class:`StatusError`.
* Certificates for a test fleet: :func:`make_fleet_certificates` writes a CA and the
  Manager's and nodes' certificates for mutual TLS (``hostvisor certs``).

Every name but the errors is loaded on first use, so that importing ``transport`` (or the
daemon program in ``transport.daemon``) costs nothing until messages are used (protobuf,
about 4 MiB) or gRPC is served or called (grpc, about 11 MiB more).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._errors import (
    InvalidMessageError as InvalidMessageError,
    ListenError as ListenError,
    RemoteError as RemoteError,
    StatusCode as StatusCode,
    StatusError as StatusError,
    TransportError as TransportError,
)

if TYPE_CHECKING:
    from ._bridge import (
        CLOSE_TIMEOUT_S as CLOSE_TIMEOUT_S,
        CallContext as CallContext,
        Channel as Channel,
        ClientTls as ClientTls,
        Listener as Listener,
        Metadata as Metadata,
        Reply as Reply,
        ResponseStream as ResponseStream,
        Route as Route,
        Send as Send,
        ServerTls as ServerTls,
        StreamHandler as StreamHandler,
        UnaryHandler as UnaryHandler,
        open_channel as open_channel,
        open_grpc_loop as open_grpc_loop,
        serve_grpc as serve_grpc,
        stream_route as stream_route,
        unary_route as unary_route,
    )
    from ._certs import (
        CertificateError as CertificateError,
        CertificateExistsError as CertificateExistsError,
        FleetCertificates as FleetCertificates,
        KeyPair as KeyPair,
        make_fleet_certificates as make_fleet_certificates,
    )
    from ._convert import (
        DEFAULT_LOG_LINES as DEFAULT_LOG_LINES,
        DEFAULT_METRICS_DURATION_S as DEFAULT_METRICS_DURATION_S,
        MAX_LOG_LINES as MAX_LOG_LINES,
        UPDATE_ID_METADATA_KEY as UPDATE_ID_METADATA_KEY,
        AgentInfoRecord as AgentInfoRecord,
        AgentStateRecord as AgentStateRecord,
        AgentStatus as AgentStatus,
        LogRequest as LogRequest,
        MetricPoint as MetricPoint,
        NodeRegistration as NodeRegistration,
        Operation as Operation,
        OperationRequest as OperationRequest,
        ResourcePoint as ResourcePoint,
        StateChange as StateChange,
        agent_detail_from_supervisor as agent_detail_from_supervisor,
        agent_info_from_message as agent_info_from_message,
        agent_info_from_supervisor as agent_info_from_supervisor,
        agent_info_to_message as agent_info_to_message,
        agent_state_from_message as agent_state_from_message,
        agent_state_to_message as agent_state_to_message,
        metric_from_message as metric_from_message,
        metric_to_message as metric_to_message,
        operation_request_from_message as operation_request_from_message,
        operation_request_to_message as operation_request_to_message,
        parse_agent_status as parse_agent_status,
        parse_follow_request as parse_follow_request,
        parse_log_request as parse_log_request,
        parse_metrics_request as parse_metrics_request,
        parse_operation as parse_operation,
        registration_from_message as registration_from_message,
        registration_to_message as registration_to_message,
        resource_point_from_message as resource_point_from_message,
        resource_point_to_message as resource_point_to_message,
        state_change_from_message as state_change_from_message,
        state_change_to_message as state_change_to_message,
    )
    from ._pb import daemon_pb2 as daemon_pb2, manager_pb2 as manager_pb2
    from ._pb._methods import StreamMethod as StreamMethod, UnaryMethod as UnaryMethod
    from ._pb.daemon_rpc import DaemonService as DaemonService
    from ._pb.hostvisor.v1 import hostvisor_pb2 as hostvisor_pb2
    from ._pb.hostvisor.v1.hostvisor_rpc import HostvisorService as HostvisorService
    from ._pb.manager_rpc import ManagerService as ManagerService

# Everything but the errors is loaded on first use: name -> (module, attribute or None for
# the module itself).
_LAZY: dict[str, tuple[str, str | None]] = {
    **{
        name: ("._bridge", name)
        for name in (
            "CLOSE_TIMEOUT_S",
            "CallContext",
            "Channel",
            "ClientTls",
            "Listener",
            "Metadata",
            "Reply",
            "ResponseStream",
            "Route",
            "Send",
            "ServerTls",
            "StreamHandler",
            "UnaryHandler",
            "open_channel",
            "open_grpc_loop",
            "serve_grpc",
            "stream_route",
            "unary_route",
        )
    },
    **{
        name: ("._convert", name)
        for name in (
            "DEFAULT_LOG_LINES",
            "DEFAULT_METRICS_DURATION_S",
            "MAX_LOG_LINES",
            "UPDATE_ID_METADATA_KEY",
            "AgentInfoRecord",
            "AgentStateRecord",
            "AgentStatus",
            "LogRequest",
            "MetricPoint",
            "NodeRegistration",
            "Operation",
            "OperationRequest",
            "ResourcePoint",
            "StateChange",
            "agent_detail_from_supervisor",
            "agent_info_from_message",
            "agent_info_from_supervisor",
            "agent_info_to_message",
            "agent_state_from_message",
            "agent_state_to_message",
            "metric_from_message",
            "metric_to_message",
            "operation_request_from_message",
            "operation_request_to_message",
            "parse_agent_status",
            "parse_follow_request",
            "parse_log_request",
            "parse_metrics_request",
            "parse_operation",
            "registration_from_message",
            "registration_to_message",
            "resource_point_from_message",
            "resource_point_to_message",
            "state_change_from_message",
            "state_change_to_message",
        )
    },
    **{
        name: ("._certs", name)
        for name in (
            "CertificateError",
            "CertificateExistsError",
            "FleetCertificates",
            "KeyPair",
            "make_fleet_certificates",
        )
    },
    "daemon_pb2": ("._pb.daemon_pb2", None),
    "manager_pb2": ("._pb.manager_pb2", None),
    "hostvisor_pb2": ("._pb.hostvisor.v1.hostvisor_pb2", None),
    "UnaryMethod": ("._pb._methods", "UnaryMethod"),
    "StreamMethod": ("._pb._methods", "StreamMethod"),
    "DaemonService": ("._pb.daemon_rpc", "DaemonService"),
    "ManagerService": ("._pb.manager_rpc", "ManagerService"),
    "HostvisorService": ("._pb.hostvisor.v1.hostvisor_rpc", "HostvisorService"),
}


def __getattr__(name: str) -> object:
    """Load a public name's module (and what it needs: protobuf, grpc) on first use."""
    try:
        module_name, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'transport' has no attribute {name!r}") from None
    module = importlib.import_module(module_name, __name__)
    value: object = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


__all__ = [
    # errors
    "TransportError",
    "StatusError",
    "RemoteError",
    "InvalidMessageError",
    "ListenError",
    "StatusCode",
    # contracts: generated messages and typed method descriptors
    "manager_pb2",
    "daemon_pb2",
    "hostvisor_pb2",
    "ManagerService",
    "DaemonService",
    "HostvisorService",
    "UnaryMethod",
    "StreamMethod",
    # the bridge: loop, server, client
    "open_grpc_loop",
    "serve_grpc",
    "Listener",
    "ServerTls",
    "Route",
    "unary_route",
    "stream_route",
    "UnaryHandler",
    "StreamHandler",
    "Send",
    "CallContext",
    "open_channel",
    "Channel",
    "ClientTls",
    "Reply",
    "ResponseStream",
    "Metadata",
    "CLOSE_TIMEOUT_S",
    # domain records and conversions
    "AgentStatus",
    "Operation",
    "AgentInfoRecord",
    "AgentStateRecord",
    "StateChange",
    "OperationRequest",
    "LogRequest",
    "NodeRegistration",
    "MetricPoint",
    "ResourcePoint",
    "parse_agent_status",
    "parse_operation",
    "agent_info_to_message",
    "agent_info_from_message",
    "agent_info_from_supervisor",
    "agent_detail_from_supervisor",
    "agent_state_to_message",
    "agent_state_from_message",
    "state_change_to_message",
    "state_change_from_message",
    "operation_request_to_message",
    "operation_request_from_message",
    "parse_log_request",
    "parse_follow_request",
    "parse_metrics_request",
    "registration_to_message",
    "registration_from_message",
    "metric_to_message",
    "metric_from_message",
    "resource_point_to_message",
    "resource_point_from_message",
    "DEFAULT_LOG_LINES",
    "MAX_LOG_LINES",
    "DEFAULT_METRICS_DURATION_S",
    "UPDATE_ID_METADATA_KEY",
    # certificates for a test fleet (``hostvisor certs``)
    "make_fleet_certificates",
    "FleetCertificates",
    "KeyPair",
    "CertificateError",
    "CertificateExistsError",
]
