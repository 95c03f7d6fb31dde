"""Typed descriptors of gRPC methods: what the bridge needs to call or serve one.

The generated ``*_rpc`` modules hold one descriptor per method of each service, so that a
call or a handler is type-checked against the method's request and response messages.
Hand-written (not generated); imports nothing but protobuf.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from google.protobuf.message import Message

__all__ = ["StreamMethod", "UnaryMethod"]

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)


@dataclass(frozen=True, slots=True)
class UnaryMethod(Generic[Req, Resp]):
    """A method that takes one request and answers one response.

    Attributes:
        service: The service's full name, e.g. ``proto.DaemonService``.
        name: The method's name, e.g. ``ListAgents``.
        request_type: The request message class.
        response_type: The response message class.
    """

    service: str
    name: str
    request_type: type[Req]
    response_type: type[Resp]

    @property
    def path(self) -> str:
        """The method's path on the wire, e.g. ``/proto.DaemonService/ListAgents``."""
        return f"/{self.service}/{self.name}"


@dataclass(frozen=True, slots=True)
class StreamMethod(Generic[Req, Resp]):
    """A server-streaming method: one request, then a stream of responses.

    Attributes:
        service: The service's full name, e.g. ``hostvisor.v1.HostvisorService``.
        name: The method's name, e.g. ``FollowAgentLogs``.
        request_type: The request message class.
        response_type: The class of each message of the stream.
    """

    service: str
    name: str
    request_type: type[Req]
    response_type: type[Resp]

    @property
    def path(self) -> str:
        """The method's path on the wire, e.g. ``/hostvisor.v1.HostvisorService/WatchAgentStates``."""
        return f"/{self.service}/{self.name}"
