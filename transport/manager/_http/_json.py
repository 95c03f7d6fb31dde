"""The REST API's JSON shapes: the Manager's records as the original web console reads them.

Pure functions, one per record, each returning a plain ``dict`` ready for ``json.dumps``.
The field names are the original Manager's (its Go structs' ``json`` tags), so the
original console and scripts read ours unchanged. The rules every function keeps:

* times are RFC 3339 strings in UTC (``2026-12-03T12:00:00Z``) or ``null``, never unix
  numbers (except where the original sends unix seconds: agent metric points);
* numbers are JSON numbers (the console calls ``.toFixed`` on them), never strings;
* maps (``labels``, ``values``, ``detail``) are objects, ``{}`` when empty, never ``null``;
* a user never carries a password or its hash, a token never its secret or hash.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from typing import Any

from transport._convert import ResourcePoint
from transport.manager._model import (
    Agent,
    ApiToken,
    AuditEntry,
    MetricRow,
    Node,
    UpdateJob,
    UpdateTarget,
    User,
)

__all__ = [
    "Json",
    "agent_json",
    "audit_json",
    "metric_json",
    "node_json",
    "parse_rfc3339",
    "resource_point_json",
    "rfc3339",
    "token_json",
    "update_job_json",
    "update_target_json",
    "user_json",
]

Json = dict[str, Any]
"""A JSON object as the API sends it."""


def rfc3339(when: float | None) -> str | None:
    """Format unix seconds as RFC 3339 in UTC with second precision, or ``None``.

    Args:
        when: Unix seconds, or ``None``.

    Returns:
        ``"YYYY-MM-DDTHH:MM:SSZ"``, or ``None`` for ``None``.
    """
    if when is None:
        return None
    moment = _dt.datetime.fromtimestamp(int(when // 1), tz=_dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> float:
    """Parse an RFC 3339 time (``Z`` or a numeric offset; fractions allowed).

    Args:
        text: e.g. ``2026-12-03T12:00:00Z`` or ``2026-12-03T20:00:00.5+08:00``.

    Returns:
        Unix seconds.

    Raises:
        ValueError: ``text`` is not an RFC 3339 date-time with an offset.
    """
    if "T" not in text.upper() or len(text) < 20:
        raise ValueError(f"expected an RFC 3339 time such as 2026-12-03T12:00:00Z; got {text!r}")
    try:
        moment = _dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"expected an RFC 3339 time such as 2026-12-03T12:00:00Z; got {text!r}"
        ) from None
    if moment.tzinfo is None:
        raise ValueError(f"expected a time with an offset (Z or +hh:mm); got {text!r}")
    return moment.timestamp()


def _labels(values: Mapping[str, Any] | None) -> dict[str, Any]:
    return dict(values) if values else {}


def node_json(node: Node) -> Json:
    """A node as the original's ``Node`` (``grpc_port`` is ours, ``null`` for the default).

    Args:
        node: The node.

    Returns:
        The JSON object.
    """
    return {
        "id": node.id,
        "created_at": rfc3339(node.created_at),
        "updated_at": rfc3339(node.updated_at),
        "node_id": node.node_id,
        "hostname": node.hostname,
        "ip": node.ip,
        "os": node.os,
        "arch": node.arch,
        "labels": _labels(node.labels),
        "daemon_version": node.daemon_version,
        "agent_version": node.agent_version,
        "status": str(node.status),
        "last_seen_at": rfc3339(node.last_seen_at),
        "register_at": rfc3339(node.register_at),
        "grpc_port": node.grpc_port,
    }


def agent_json(agent: Agent) -> Json:
    """An agent as the original's ``Agent`` (plus ``version``, which its console reads).

    Args:
        agent: The agent.

    Returns:
        The JSON object.
    """
    return {
        "id": agent.id,
        "created_at": rfc3339(agent.created_at),
        "updated_at": rfc3339(agent.updated_at),
        "node_id": agent.node_id,
        "agent_id": agent.agent_id,
        "type": agent.type,
        "version": agent.version,
        "status": agent.status,
        "config": agent.config,
        "pid": agent.pid,
        "last_heartbeat": rfc3339(agent.last_heartbeat),
        "last_sync_time": rfc3339(agent.last_sync_time),
    }


def metric_json(row: MetricRow) -> Json:
    """A stored (or downsampled) metric row as the original's ``Metrics``.

    Args:
        row: The row.

    Returns:
        The JSON object; ``timestamp`` is RFC 3339, ``values`` maps names to numbers.
    """
    return {
        "id": row.id,
        "created_at": rfc3339(row.created_at),
        "node_id": row.node_id,
        "type": row.type,
        "timestamp": rfc3339(row.timestamp),
        "values": {name: float(value) for name, value in row.values.items()},
    }


def resource_point_json(point: ResourcePoint) -> Json:
    """An agent's resource sample; every field present, ``timestamp`` in unix seconds.

    (The original omits fields that are zero; its console then reads ``undefined``.)

    Args:
        point: The sample.

    Returns:
        The JSON object.
    """
    return {
        "timestamp": point.timestamp,
        "cpu": point.cpu,
        "memory_rss": point.memory_rss,
        "memory_vms": point.memory_vms,
        "disk_read_bytes": point.disk_read_bytes,
        "disk_write_bytes": point.disk_write_bytes,
        "open_files": point.open_files,
    }


def user_json(user: User) -> Json:
    """A user as the original's ``User``, never with the password.

    Args:
        user: The user.

    Returns:
        The JSON object.
    """
    return {
        "id": user.id,
        "created_at": rfc3339(user.created_at),
        "updated_at": rfc3339(user.updated_at),
        "username": user.username,
        "email": user.email,
        "phone": user.phone,
        "real_name": user.real_name,
        "role": str(user.role),
        "status": str(user.status),
        "last_login_at": rfc3339(user.last_login_at),
        "last_login_ip": user.last_login_ip,
    }


def token_json(token: ApiToken) -> Json:
    """An API token's public facts (never the secret or its hash).

    Args:
        token: The token.

    Returns:
        The JSON object.
    """
    return {
        "id": token.id,
        "user_id": token.user_id,
        "name": token.name,
        "prefix": token.prefix,
        "created_at": rfc3339(token.created_at),
        "expires_at": rfc3339(token.expires_at),
        "last_used_at": rfc3339(token.last_used_at),
        "revoked_at": rfc3339(token.revoked_at),
        "revoked": token.revoked_at is not None,
    }


def audit_json(entry: AuditEntry) -> Json:
    """An audit log entry.

    Args:
        entry: The entry.

    Returns:
        The JSON object (``created_at`` is when it happened; ``username`` repeats the actor
        under the original's name for it).
    """
    return {
        "id": entry.id,
        "created_at": rfc3339(entry.at),
        "actor": entry.actor,
        "username": entry.actor,
        "action": entry.action,
        "target": entry.target,
        "ip": entry.source_ip,
        "source_ip": entry.source_ip,
        "outcome": entry.outcome,
        "detail": _labels(entry.detail),
    }


def update_target_json(target: UpdateTarget) -> Json:
    """One node's part of a pushed update.

    Args:
        target: The target.

    Returns:
        The JSON object.
    """
    return {
        "node_id": target.node_id,
        "state": target.state,
        "update_id": target.update_id,
        "message": target.message,
        "updated_at": rfc3339(target.updated_at),
    }


def update_job_json(job: UpdateJob) -> Json:
    """A pushed update with each node's result.

    Args:
        job: The job.

    Returns:
        The JSON object.
    """
    return {
        "id": job.id,
        "created_at": rfc3339(job.created_at),
        "actor": job.actor,
        "component": job.component,
        "version": job.version,
        "download_url": job.download_url,
        "hash": job.hash,
        "targets": [update_target_json(target) for target in job.targets],
    }
