"""The transport package's errors, and gRPC's status codes without grpc.

Every error transport raises derives from :class:`TransportError`. Errors of the grpc library
are translated where they cross into our code (in :mod:`transport._bridge`), so callers never
catch a grpc type. Pure: imports nothing but the standard library.
"""

from __future__ import annotations

import enum

__all__ = [
    "InvalidMessageError",
    "ListenError",
    "RemoteError",
    "StatusCode",
    "StatusError",
    "TransportError",
]


class StatusCode(enum.IntEnum):
    """gRPC's status codes; the values are the numbers on the wire, the names grpc's."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class TransportError(Exception):
    """The root of every error the transport package raises."""


class ListenError(TransportError):
    """A server could not listen on one of its addresses (in use, not permitted, bad)."""


class StatusError(TransportError):
    """An RPC ends (or ended) with a non-OK status.

    Raised by a server handler, it is the answer: the bridge sends ``status`` and
    ``details`` to the client. Received by a client, it arrives as :class:`RemoteError`.

    Args:
        status: The status code (never ``OK``).
        details: The message for the other side.

    Raises:
        ValueError: ``status`` is ``OK``.
    """

    def __init__(self, status: StatusCode, details: str) -> None:
        if status is StatusCode.OK:
            raise ValueError("a StatusError needs a non-OK status")
        super().__init__(status, details)
        self.status = status
        self.details = details

    def __str__(self) -> str:
        return f"{self.status.name}: {self.details}" if self.details else self.status.name


class RemoteError(StatusError):
    """The other side answered an RPC with a non-OK status (or it could not be reached).

    Args:
        status: The status code (``UNAVAILABLE`` when the peer could not be reached,
            ``DEADLINE_EXCEEDED`` when the call's timeout expired).
        details: The status message.
        method: The method's path, e.g. ``/proto.DaemonService/ListAgents``.
    """

    def __init__(self, status: StatusCode, details: str, *, method: str = "") -> None:
        super().__init__(status, details)
        self.method = method

    def __str__(self) -> str:
        text = super().__str__()
        return f"{self.method}: {text}" if self.method else text


class InvalidMessageError(StatusError, ValueError):
    """A message field holds a value the contract does not allow.

    A :class:`StatusError` with status ``INVALID_ARGUMENT``: raised while a server handler
    converts its request, it is the answer the client gets.

    Args:
        field: The field, as ``Message.field`` (e.g. ``AgentOperationRequest.operation``).
        problem: What is wrong with its value, including the value.
    """

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(StatusCode.INVALID_ARGUMENT, f"{field}: {problem}")
        self.field = field
        self.problem = problem
