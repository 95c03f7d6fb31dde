"""Nodes: registration, heartbeats, offline detection, listing, deletion.

Theory of operation: every write is one statement or one short transaction, built so that
concurrent callers (threads of one Manager, or several Managers on one PostgreSQL) cannot
collide. Registration is an upsert (``INSERT .. ON CONFLICT (node_id) DO UPDATE``), so two
overlapping registrations of one node both succeed. Heartbeats come in batches from the
gRPC ingest's group commit: one transaction updates the known nodes (rows locked in
node-id order, so two batches never deadlock) and upserts the unknown ones as "unknown"
nodes, the way the original Manager revives nodes it lost. Offline detection is
``UPDATE .. WHERE online AND last_seen_at < cutoff RETURNING node_id``: a row changes once,
so each node is reported by exactly one of several Managers running it at once. Its rows
are chosen by ``SELECT .. ORDER BY node_id FOR UPDATE SKIP LOCKED`` (PostgreSQL; SQLite
has one writer at a time and ignores the clause): locked in the heartbeats' order, so the
two never deadlock, and a node whose heartbeat or sync is being written right now is
skipped (it is alive; the next check looks at it again).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence, Set as AbstractSet
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from transport.manager._errors import NotFoundError
from transport.manager._model import Node, NodeStatus, Page

from ._engine import StoreBase, insert, node_not_found, prepare, record
from ._schema import metrics, nodes

if TYPE_CHECKING:
    from transport import NodeRegistration

__all__ = ["UNKNOWN", "NodesMixin", "node_from_row", "online_clause", "search_clause"]

UNKNOWN = "unknown"
"""hostname, ip, os and arch of a node created from a heartbeat (as the original)."""

_ONLINE = NodeStatus.ONLINE.value
_OFFLINE = NodeStatus.OFFLINE.value


def node_from_row(row: Mapping[Any, Any]) -> Node:
    """A :class:`Node` from a ``nodes`` row."""
    labels = MappingProxyType(dict(row["labels"] or {}))
    return record(Node, row, status=NodeStatus(row["status"]), labels=labels)


class NodesMixin(StoreBase):
    """The node methods of :class:`~transport.manager._store.Store`."""

    def register_node(self, reg: NodeRegistration, *, now: float, grpc_port: int | None) -> Node:
        """Create or update a node from its daemon's RegisterNode (one upsert).

        The node is online, seen and registered ``now``; ``created_at`` is kept.

        Args:
            reg: The registration.
            now: The time of the call.
            grpc_port: The port the daemon announced for its gRPC service, or None.

        Returns:
            The node as stored.

        Raises:
            StoreError: The database failed.
        """
        with self._write() as conn:
            return register_in(conn, self._dialect, reg, grpc_port, now)

    def heartbeat(self, node_id: str, *, now: float) -> bool:
        """Mark a known node online and seen ``now``.

        Args:
            node_id: The node.
            now: The time of the heartbeat.

        Returns:
            True: the node is known (and updated); False: unknown, nothing changed.

        Raises:
            StoreError: The database failed.
        """
        with self._write() as conn:
            result = conn.execute(
                sa.update(nodes)
                .where(nodes.c.node_id == node_id)
                .values(status=_ONLINE, last_seen_at=now, updated_at=now)
            )
            return bool(result.rowcount)

    def heartbeat_or_create(self, node_id: str, *, now: float) -> tuple[Node, bool]:
        """A heartbeat that creates an unknown node (hostname, ip, os, arch ``"unknown"``).

        Args:
            node_id: The node.
            now: The time of the heartbeat.

        Returns:
            The node, and whether it was created by this heartbeat.

        Raises:
            StoreError: The database failed.
        """
        with self._write() as conn:
            created = self._heartbeats(conn, {node_id: now})
            row = conn.execute(sa.select(nodes).where(nodes.c.node_id == node_id)).one()
        return node_from_row(row._mapping), node_id in created

    def heartbeats(self, items: Sequence[tuple[str, float]]) -> list[bool]:
        """Many heartbeats in one transaction (the gRPC ingest's group commit).

        Known nodes are marked online and seen; unknown ones are created as by
        :meth:`heartbeat_or_create`. A node named twice is seen at its later time.

        Args:
            items: ``(node_id, now)`` per heartbeat.

        Returns:
            Per item, whether its node was unknown (created by this batch).

        Raises:
            StoreError: The database failed (no heartbeat of the batch is stored).
        """
        latest: dict[str, float] = {}
        for node_id, now in items:
            latest[node_id] = max(now, latest.get(node_id, now))
        if not latest:
            return []
        with self._write() as conn:
            created = self._heartbeats(conn, latest)
        return [node_id in created for node_id, _ in items]

    def _heartbeats(
        self,
        conn: sa.Connection,
        latest: Mapping[str, float],
        registered: AbstractSet[str] | None = None,
    ) -> set[str]:
        """Apply heartbeats; return the node ids that were created. ``registered``: the
        nodes known to exist (a superset is fine), when the caller looked them up."""
        if registered is None:
            known = self._known_nodes(conn, latest)
        else:
            known = {node_id for node_id in latest if node_id in registered}
        if known:
            rows = [{"b_node": n, "b_t": latest[n]} for n in sorted(known)]
            if self._dialect == "sqlite":
                prepare(_HEARTBEAT).executemany(conn, rows)
            else:
                conn.execute(_HEARTBEAT, rows)
        unknown = sorted(set(latest) - known)
        if unknown:
            rows = [_unknown_node(n, latest[n]) for n in unknown]
            conn.execute(_create_from_heartbeat(self._dialect), rows)
        return set(unknown)

    def mark_offline(self, *, cutoff: float, now: float) -> list[str]:
        """Mark offline every online node last seen before ``cutoff``.

        Exactly once across Managers: a node is returned by the one call that changed it.

        Args:
            cutoff: Nodes last seen before this time are offline.
            now: The time of the check.

        Returns:
            The node ids marked offline by this call, sorted.

        Raises:
            StoreError: The database failed.
        """
        with self._write() as conn:
            return sorted(conn.scalars(_MARK_OFFLINE, {"b_cutoff": cutoff, "b_now": now}))

    def get_node(self, node_id: str) -> Node:
        """The node with the daemon's id ``node_id``.

        Raises:
            NotFoundError: No such node.
            StoreError: The database failed.
        """
        query = sa.select(nodes).where(nodes.c.node_id == node_id)
        return node_from_row(self._first(query, node_not_found(node_id)))

    def get_node_by_id(self, id: int) -> Node:
        """The node with the numeric ``id`` (the REST API's ``:id``).

        Raises:
            NotFoundError: No such node.
            StoreError: The database failed.
        """
        query = sa.select(nodes).where(nodes.c.id == id)
        return node_from_row(self._first(query, NotFoundError(f"no node has id {id}")))

    def list_nodes(
        self,
        *,
        page: int,
        page_size: int,
        status: NodeStatus | None = None,
        online_since: float | None = None,
        search: str = "",
    ) -> Page[Node]:
        """One page of the nodes, by id.

        Args:
            page: The page, from 1.
            page_size: Nodes per page (at least 1).
            status: Only nodes with this status, or all.
            online_since: When given, a node counts as online only if it is stored online
                and was last seen at or after this time (so that a list filtered by
                status agrees with the status shown, before the offline job has run).
            search: Only nodes it names (see :func:`search_clause`); empty: all.

        Returns:
            The page with the total count.

        Raises:
            ValueError: ``page`` or ``page_size`` below 1.
            StoreError: The database failed.
        """
        query = sa.select(nodes).order_by(nodes.c.id)
        if status is not None:
            online = _online(online_since)
            query = query.where(online if status is NodeStatus.ONLINE else sa.not_(online))
        if search.strip():
            query = query.where(search_clause(search))
        return self._page(query, node_from_row, page=page, page_size=page_size)

    def node_counts(self, *, online_since: float | None = None) -> dict[str, int]:
        """How many nodes there are: ``{"total", "online", "offline"}``.

        Args:
            online_since: As for :meth:`list_nodes`.

        Raises:
            StoreError: The database failed.
        """
        online = sa.case((_online(online_since), 1), else_=0)
        with self._read() as conn:
            total, up = conn.execute(
                sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(online), 0))
            ).one()
        return {"total": int(total), _ONLINE: int(up), _OFFLINE: int(total) - int(up)}

    def delete_node(self, id: int) -> Node:
        """Delete a node with its agents and metrics.

        Args:
            id: The node's numeric id.

        Returns:
            The node as it was.

        Raises:
            NotFoundError: No such node.
            StoreError: The database failed (nothing is deleted).
        """
        with self._write() as conn:
            node_id = conn.scalar(sa.select(nodes.c.node_id).where(nodes.c.id == id))
            if node_id is None:
                raise NotFoundError(f"no node has id {id}")
            conn.execute(sa.delete(metrics).where(metrics.c.node_id == node_id))
            row = conn.execute(sa.delete(nodes).where(nodes.c.id == id).returning(*nodes.c)).one()
        return node_from_row(row._mapping)


_STALE = (nodes.c.status == _ONLINE, nodes.c.last_seen_at < sa.bindparam("b_cutoff"))
_MARK_OFFLINE = (
    sa.update(nodes)
    .where(
        *_STALE,
        nodes.c.id.in_(
            sa.select(nodes.c.id)
            .where(*_STALE)
            .order_by(nodes.c.node_id)
            .with_for_update(skip_locked=True)
        ),
    )
    .values(status=_OFFLINE, updated_at=sa.bindparam("b_now"))
    .returning(nodes.c.node_id)
)
_HEARTBEAT = (
    sa.update(nodes)
    .where(nodes.c.node_id == sa.bindparam("b_node"))
    .values(status=_ONLINE, last_seen_at=sa.bindparam("b_t"), updated_at=sa.bindparam("b_t"))
)


@functools.cache
def _register(dialect: str) -> sa.Executable:
    stmt = insert(dialect, nodes)
    kept = ("id", "node_id", "created_at")
    return stmt.on_conflict_do_update(
        index_elements=[nodes.c.node_id],
        set_={c.name: stmt.excluded[c.name] for c in nodes.c if c.name not in kept},
    ).returning(*nodes.c)


@functools.cache
def _create_from_heartbeat(dialect: str) -> sa.Executable:
    stmt = insert(dialect, nodes)
    return stmt.on_conflict_do_update(
        index_elements=[nodes.c.node_id],
        set_={
            "status": _ONLINE,
            "last_seen_at": stmt.excluded.last_seen_at,
            "updated_at": stmt.excluded.updated_at,
        },
    )


def _unknown_node(node_id: str, now: float) -> dict[str, Any]:
    return {
        "node_id": node_id,
        "hostname": UNKNOWN,
        "ip": UNKNOWN,
        "os": UNKNOWN,
        "arch": UNKNOWN,
        "labels": {},
        "daemon_version": "",
        "agent_version": "",
        "status": _ONLINE,
        "grpc_port": None,
        "last_seen_at": now,
        "register_at": None,
        "created_at": now,
        "updated_at": now,
    }


def search_clause(search: str) -> sa.ColumnElement[bool]:
    """The nodes a console search names.

    ``key=value`` names the nodes with that label (the value compared case-insensitively);
    anything else is a case-insensitive substring of the hostname, node id or IP, or the
    exact key of a label. LIKE's wildcards in ``search`` are literal.

    Args:
        search: The search text (trimmed here).

    Returns:
        The ``WHERE`` clause.
    """
    text = search.strip()
    key, equals, value = text.partition("=")
    if equals and key.strip():
        label = nodes.c.labels[key.strip()].as_string()
        return sa.func.lower(label) == value.strip().lower()
    needle = text.lower()
    return sa.or_(
        *(sa.func.lower(column).contains(needle, autoescape=True) for column in _SEARCHED),
        nodes.c.labels[text].as_string().is_not(None),
    )


_SEARCHED = (nodes.c.hostname, nodes.c.node_id, nodes.c.ip)


def online_clause(since: float | None) -> sa.ColumnElement[bool]:
    """Whether a node counts as online (see :meth:`NodesMixin.list_nodes`)."""
    return _online(since)


def _online(since: float | None) -> sa.ColumnElement[bool]:
    """Whether a node counts as online: stored so, and seen at or after ``since``."""
    stored = nodes.c.status == _ONLINE
    if since is None:
        return stored
    return sa.and_(stored, nodes.c.last_seen_at.is_not(None), nodes.c.last_seen_at >= since)


def register_in(
    conn: sa.Connection, dialect: str, reg: NodeRegistration, grpc_port: int | None, now: float
) -> Node:
    """A RegisterNode in ``conn``'s transaction (see :meth:`NodesMixin.register_node`)."""
    values: dict[str, Any] = {
        "node_id": reg.node_id,
        "hostname": reg.hostname,
        "ip": reg.ip,
        "os": reg.os,
        "arch": reg.arch,
        "labels": dict(reg.labels),
        "daemon_version": reg.daemon_version,
        "agent_version": reg.agent_version,
        "status": _ONLINE,
        "grpc_port": grpc_port,
        "last_seen_at": now,
        "register_at": now,
        "created_at": now,
        "updated_at": now,
    }
    return node_from_row(conn.execute(_register(dialect), values).one()._mapping)
