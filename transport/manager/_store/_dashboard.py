"""The console's dashboard, aggregated in the database: a fixed number of queries.

Theory of operation: :meth:`DashboardMixin.dashboard` answers in one read transaction of
eight statements, whatever the number of nodes: the node counts, the agent counts by
status (``GROUP BY``), the top CPU and memory users (``ORDER BY .. LIMIT`` over
``metrics_latest``, one row per node and type), and the alert candidates, each list cut
at ``limit`` in SQL: readings at or above their threshold, nodes that count as offline,
failed agents, and how many candidates there are in all. The newest ``usage_percent`` is
read from the JSON ``values`` with the dialect's JSON operator (``json_extract`` on
SQLite, ``->>`` on PostgreSQL). Which candidates become alerts, and how bad they are, is
decided by :mod:`transport.manager._alerts` (pure).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from transport.manager._alerts import FailedAgent, Kind, OfflineNode, Reading, Thresholds
from transport.manager._model import NodeStatus

from ._engine import StoreBase
from ._nodes import online_clause
from ._schema import agents, metrics_latest, nodes

__all__ = ["AGENT_STATUSES", "DashboardData", "DashboardMixin", "TopEntry"]

AGENT_STATUSES = ("running", "failed", "restarting", "stopped", "starting", "stopping", "gone")
"""The agent statuses the dashboard always counts (others appear when present)."""

_FAILED = "failed"
_USAGE = metrics_latest.c["values"]["usage_percent"].as_float()


@dataclass(frozen=True, slots=True)
class TopEntry:
    """One node of a top list.

    Attributes:
        node_id: The node.
        hostname: Its host name.
        value: Its newest ``usage_percent``.
    """

    node_id: str
    hostname: str
    value: float


@dataclass(frozen=True, slots=True)
class DashboardData:
    """What :meth:`DashboardMixin.dashboard` found.

    Attributes:
        nodes: ``{"total", "online", "offline"}``.
        agents: Agents by status (every status of :data:`AGENT_STATUSES`, 0 when none).
        top_cpu: The online nodes using the most CPU, highest first.
        top_memory: Likewise for memory.
        readings: Readings at or above their threshold (online nodes), highest first.
        offline: Offline nodes, least recently seen first.
        failed: Failed agents, by node and agent.
        candidates: How many alert candidates there are in all (the lists are cut).
    """

    nodes: dict[str, int]
    agents: dict[str, int]
    top_cpu: list[TopEntry] = field(default_factory=list)
    top_memory: list[TopEntry] = field(default_factory=list)
    readings: list[Reading] = field(default_factory=list)
    offline: list[OfflineNode] = field(default_factory=list)
    failed: list[FailedAgent] = field(default_factory=list)
    candidates: int = 0


def _over(thresholds: Thresholds) -> sa.ColumnElement[bool]:
    """A ``metrics_latest`` row at or above its type's threshold."""
    return sa.or_(
        *(
            sa.and_(metrics_latest.c.type == kind.value, thresholds.of(kind) <= _USAGE)
            for kind in (Kind.CPU, Kind.MEMORY, Kind.DISK)
        )
    )


class DashboardMixin(StoreBase):
    """The dashboard method of :class:`~transport.manager._store.Store`."""

    def dashboard(
        self,
        thresholds: Thresholds,
        *,
        online_since: float | None = None,
        top: int = 10,
        limit: int = 100,
    ) -> DashboardData:
        """The dashboard's figures and alert candidates, in eight queries.

        Args:
            thresholds: The alert thresholds.
            online_since: As for :meth:`list_nodes` (when a node counts as online).
            top: How many nodes each top list holds.
            limit: How many candidates of each kind are returned at most.

        Returns:
            The figures.

        Raises:
            ValueError: ``top`` or ``limit`` below 0.
            StoreError: The database failed.
        """
        if top < 0 or limit < 0:
            raise ValueError("top and limit must be >= 0")
        online = online_clause(online_since)
        joined = metrics_latest.join(nodes, nodes.c.node_id == metrics_latest.c.node_id)
        over = _over(thresholds)
        up = sa.case((online, 1), else_=0)
        with self._read() as conn:
            total, up_count = conn.execute(
                sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(up), 0))
            ).one()
            by_status = conn.execute(
                sa.select(agents.c.status, sa.func.count()).group_by(agents.c.status)
            ).all()
            tops = [
                conn.execute(
                    sa.select(nodes.c.node_id, nodes.c.hostname, _USAGE.label("value"))
                    .select_from(joined)
                    .where(online, metrics_latest.c.type == kind, _USAGE.is_not(None))
                    .order_by(_USAGE.desc(), nodes.c.node_id)
                    .limit(top)
                ).all()
                for kind in ("cpu", "memory")
            ]
            readings = conn.execute(
                sa.select(
                    nodes.c.node_id,
                    nodes.c.hostname,
                    metrics_latest.c.type,
                    _USAGE.label("value"),
                    metrics_latest.c.timestamp,
                )
                .select_from(joined)
                .where(online, over)
                .order_by(_USAGE.desc(), nodes.c.node_id, metrics_latest.c.type)
                .limit(limit)
            ).all()
            over_count = conn.scalar(
                sa.select(sa.func.count()).select_from(joined).where(online, over)
            )
            offline = conn.execute(
                sa.select(nodes.c.node_id, nodes.c.hostname, nodes.c.last_seen_at)
                .where(sa.not_(online))
                .order_by(nodes.c.last_seen_at.is_(None).desc(), nodes.c.last_seen_at)
                .order_by(nodes.c.node_id)
                .limit(limit)
            ).all()
            failed = conn.execute(
                sa.select(
                    agents.c.node_id, nodes.c.hostname, agents.c.agent_id, agents.c.updated_at
                )
                .select_from(agents.join(nodes, nodes.c.node_id == agents.c.node_id))
                .where(agents.c.status == _FAILED)
                .order_by(agents.c.node_id, agents.c.agent_id)
                .limit(limit)
            ).all()
        agent_counts = dict.fromkeys(AGENT_STATUSES, 0)
        for status, count in by_status:
            key = status or "unknown"
            agent_counts[key] = agent_counts.get(key, 0) + int(count)
        total, up_count = int(total), int(up_count)
        return DashboardData(
            nodes={
                "total": total,
                NodeStatus.ONLINE.value: up_count,
                NodeStatus.OFFLINE.value: total - up_count,
            },
            agents=agent_counts,
            top_cpu=[_top(row) for row in tops[0]],
            top_memory=[_top(row) for row in tops[1]],
            readings=[
                Reading(row.node_id, row.hostname, Kind(row.type), float(row.value), row.timestamp)
                for row in readings
            ],
            offline=[OfflineNode(r.node_id, r.hostname, r.last_seen_at) for r in offline],
            failed=[FailedAgent(r.node_id, r.hostname, r.agent_id, r.updated_at) for r in failed],
            candidates=int(over_count or 0) + (total - up_count) + agent_counts.get(_FAILED, 0),
        )


def _top(row: Any) -> TopEntry:
    return TopEntry(row.node_id, row.hostname, float(row.value))
