"""The Manager's records: what the store returns and the REST API and gRPC layers read.

Plain frozen data, no IO. Times are unix seconds (float) on the wall clock; ``None`` where
the original API answers ``null``. The REST layer turns them into RFC 3339 strings.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_EMPTY: Mapping[str, Any] = MappingProxyType({})


class NodeStatus(enum.StrEnum):
    """A node's status as the original API names it."""

    ONLINE = "online"
    OFFLINE = "offline"


GONE = "gone"
"""The status of an agent that a node's full SyncAgentStates list no longer names (not a
wire status: the daemon no longer runs such an agent)."""


class Role(enum.StrEnum):
    """What a user may do; each role includes the ones below it."""

    ADMIN = "admin"
    """Users, tokens, the audit log, deleting nodes, and everything an operator may do."""
    OPERATOR = "operator"
    """Operate agents and push updates, and everything a viewer may do."""
    VIEWER = "viewer"
    """Read only."""

    def allows(self, minimum: Role) -> bool:
        """Whether this role includes ``minimum``."""
        order = (Role.VIEWER, Role.OPERATOR, Role.ADMIN)
        return order.index(self) >= order.index(minimum)


class UserStatus(enum.StrEnum):
    """Whether a user may log in (the original's values)."""

    ACTIVE = "active"
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class Node:
    """A node (one daemon's host)."""

    id: int
    node_id: str
    hostname: str = ""
    ip: str = ""
    os: str = ""
    arch: str = ""
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    daemon_version: str = ""
    agent_version: str = ""
    status: NodeStatus = NodeStatus.OFFLINE
    grpc_port: int | None = None
    """The port the daemon announced for its gRPC service; None: the default (9091)."""
    last_seen_at: float | None = None
    register_at: float | None = None
    created_at: float = 0.0
    updated_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Agent:
    """An agent of a node as its daemon last reported it."""

    id: int
    node_id: str
    agent_id: str
    type: str = ""
    version: str = ""
    status: str = ""
    """A wire status (stopped, starting, running, stopping, restarting, failed) or ``gone``."""
    config: str = ""
    pid: int = 0
    last_heartbeat: float | None = None
    last_sync_time: float | None = None
    created_at: float = 0.0
    updated_at: float = 0.0


@dataclass(frozen=True, slots=True)
class MetricRow:
    """One stored MetricData (or one downsampled bucket of them)."""

    id: int
    node_id: str
    type: str
    timestamp: int
    values: Mapping[str, float]
    created_at: float = 0.0


@dataclass(frozen=True, slots=True)
class User:
    """A user (never with the password)."""

    id: int
    username: str
    role: Role
    status: UserStatus = UserStatus.ACTIVE
    email: str = ""
    phone: str = ""
    real_name: str = ""
    last_login_at: float | None = None
    last_login_ip: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0


@dataclass(frozen=True, slots=True)
class ApiToken:
    """An API token for scripts; the secret itself is shown once, at creation."""

    id: int
    user_id: int
    name: str
    prefix: str
    """The first characters of the secret, to tell tokens apart in a list."""
    created_at: float
    expires_at: float | None = None
    last_used_at: float | None = None
    revoked_at: float | None = None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """Who did what, when, from where, and how it ended."""

    id: int
    at: float
    actor: str
    action: str
    target: str = ""
    source_ip: str = ""
    outcome: str = "ok"
    detail: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True)
class UpdateTarget:
    """One node's part of a pushed update."""

    node_id: str
    state: str
    """pending, accepted, refused, unreachable, then the daemon's result (succeeded,
    rolled_back, failed, ...)."""
    update_id: str = ""
    """The daemon's id of the update (from PushUpdate's response metadata)."""
    message: str = ""
    updated_at: float = 0.0


@dataclass(frozen=True, slots=True)
class UpdateJob:
    """An update pushed to one node or many, with each node's result."""

    id: int
    created_at: float
    actor: str
    component: str
    version: str
    download_url: str = ""
    hash: str = ""
    targets: tuple[UpdateTarget, ...] = ()


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list, as the original API pages (``page`` counts from 1)."""

    items: tuple[T, ...]
    page: int
    page_size: int
    total: int

    @property
    def pages(self) -> int:
        """How many pages there are (0 for an empty list)."""
        return math.ceil(self.total / self.page_size) if self.page_size else 0
