"""Agents: a node's SyncAgentStates (and the REST "sync" from ListAgents) in one transaction.

Theory of operation: a sync first locks its node's row (``SELECT .. FOR NO KEY UPDATE`` on
PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` already serialises writers), which both checks
that the node exists and makes concurrent syncs of one node run one after the other: no
deadlock, no lost update, and no duplicate row (``UNIQUE (node_id, agent_id)`` besides).
Then one executemany upsert writes every reported agent, in agent-id order; a field the
daemon left empty keeps the stored value (``CASE WHEN excluded.x = '' THEN agents.x``):

* ``type``, ``version``, ``status``: empty keeps; ``last_heartbeat``: None keeps;
* ``pid``: taken as reported whenever a status is reported (0 is how a stopped agent
  reports), and kept when neither a status nor a pid is.

A full sync then marks every other agent of the node ``gone`` with pid 0 in one
``UPDATE .. WHERE agent_id NOT IN (..)``. On PostgreSQL the upsert and the marking are one
statement (the upsert fed by arrays in a data-modifying CTE, the same ``SET`` built by
:func:`_keep_stored`): one round trip after the lock instead of a pipeline of rows; the
gRPC ingest's batch of full syncs is one such statement for all its nodes
(:func:`_postgres_sync`; a node synced twice in a batch falls back to one statement
per sync, in order).
Killing the Manager anywhere in between rolls the whole transaction back: the database
holds either the old states or the new ones.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence, Set as AbstractSet
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from transport.manager._errors import NotFoundError
from transport.manager._model import GONE, Agent

from ._engine import StoreBase, chunks, insert, node_not_found, prepare, record
from ._schema import agents, nodes

if TYPE_CHECKING:
    from transport import AgentInfoRecord, AgentStateRecord

__all__ = ["AgentsMixin", "agent_from_row"]

_MAX_NOT_IN = 1000
"""A full sync naming more agents than this finds the missing ones in Python."""


def agent_from_row(row: Mapping[Any, Any]) -> Agent:
    """An :class:`Agent` from an ``agents`` row."""
    return record(Agent, row)


def _state_row(node_id: str, state: AgentStateRecord, now: float) -> dict[str, Any]:
    return {
        "node_id": node_id,
        "agent_id": state.agent_id,
        "type": state.type,
        "version": state.version,
        "status": state.status.value if state.status else "",
        "pid": state.pid,
        "last_heartbeat": None if state.last_heartbeat is None else float(state.last_heartbeat),
        "last_sync_time": now,
        "created_at": now,
        "updated_at": now,
    }


_STATE_COLUMNS = (
    "node_id",
    "agent_id",
    "type",
    "version",
    "status",
    "pid",
    "last_heartbeat",
    "last_sync_time",
    "created_at",
    "updated_at",
)
"""The columns of :func:`_state_row`."""

_LOCK_NODE = (
    sa.select(nodes.c.id)
    .where(nodes.c.node_id == sa.bindparam("node_id"))
    .with_for_update(key_share=True)
)
_LOCK_NODES = (
    sa.select(nodes.c.node_id)
    .where(nodes.c.node_id.in_(sa.bindparam("b_nodes", expanding=True)))
    .order_by(nodes.c.node_id)
    .with_for_update(key_share=True)
)
_ALIVE_OF_NODES_SQLITE = sa.text(
    "SELECT node_id, agent_id FROM agents"
    " WHERE node_id IN (SELECT value FROM json_each(:nodes)) AND status != :gone"
).bindparams(gone=GONE)
"""The agents not gone of some nodes, the nodes as one JSON array (see
:data:`~._engine._KNOWN_NODES_SQLITE`)."""
_MARK_ONE_GONE = (
    sa.update(agents)
    .where(agents.c.node_id == sa.bindparam("b_node"), agents.c.agent_id == sa.bindparam("b_agent"))
    .values(status=GONE, pid=0, updated_at=sa.bindparam("b_now"))
)
_ALIVE_WHERE = (agents.c.node_id == sa.bindparam("b_node"), agents.c.status != GONE)
_ALIVE = sa.select(agents.c.agent_id).where(*_ALIVE_WHERE)
_MARK_GONE = (
    sa.update(agents)
    .where(*_ALIVE_WHERE, agents.c.agent_id.not_in(sa.bindparam("b_named", expanding=True)))
    .values(status=GONE, pid=0, updated_at=sa.bindparam("b_now"))
)
_MARK_LISTED_GONE = (
    sa.update(agents)
    .where(*_ALIVE_WHERE, agents.c.agent_id.in_(sa.bindparam("b_listed", expanding=True)))
    .values(status=GONE, pid=0, updated_at=sa.bindparam("b_now"))
)


def _keep_stored(new: Any) -> dict[str, Any]:
    """The ``SET`` of the agents' upsert: empty reported fields keep the stored values."""

    def keep_empty(name: str) -> sa.ColumnElement[Any]:
        return sa.case((new[name] == "", agents.c[name]), else_=new[name])

    return {
        "type": keep_empty("type"),
        "version": keep_empty("version"),
        "status": keep_empty("status"),
        "pid": sa.case((sa.and_(new.status == "", new.pid == 0), agents.c.pid), else_=new.pid),
        "last_heartbeat": sa.func.coalesce(new.last_heartbeat, agents.c.last_heartbeat),
        "last_sync_time": new.last_sync_time,
        "updated_at": new.updated_at,
    }


@functools.cache
def _upsert_agents(dialect: str) -> sa.Executable:
    """The upsert of reported agents (executemany, one row per agent)."""
    stmt = insert(dialect, agents)
    return stmt.on_conflict_do_update(
        index_elements=[agents.c.node_id, agents.c.agent_id], set_=_keep_stored(stmt.excluded)
    )


def _array(name: str, type_: Any) -> sa.ColumnElement[Any]:
    return sa.cast(sa.bindparam(name), postgresql.ARRAY(type_))


_ARRAYS = (
    ("agent_id", sa.Text),
    ("type", sa.Text),
    ("version", sa.Text),
    ("status", sa.Text),
    ("pid", sa.Integer),
    ("last_heartbeat", sa.Float),
)


_BATCH_ARRAYS = (("node_id", sa.Text), *_ARRAYS, ("synced_at", sa.Float))


@functools.cache
def _postgres_sync() -> sa.Executable:
    """PostgreSQL's syncs of one or more nodes (each once) in one statement: every
    reported agent in one upsert fed by arrays (``unnest``) in a data-modifying CTE, in
    (node, agent) order, and as the main ``UPDATE`` the agents of the nodes named in
    ``b_sync_node`` (the full syncs) that their sync did not list marked ``gone`` as of
    that node's sync (the ``UPDATE`` cannot see the CTE's rows, and excludes every
    reported agent)."""
    reported = (
        sa.func.unnest(*(_array(f"b_{name}", type_) for name, type_ in _BATCH_ARRAYS))
        .table_valued(*(name for name, _ in _BATCH_ARRAYS))
        .render_derived(name="reported")
    )
    when = reported.c.synced_at
    rows = sa.select(
        reported.c.node_id, *(reported.c[name] for name, _ in _ARRAYS), when, when, when
    ).order_by(reported.c.node_id, reported.c.agent_id)
    names = ["node_id", *(name for name, _ in _ARRAYS), "last_sync_time", "created_at"]
    upsert = postgresql.insert(agents).from_select([*names, "updated_at"], rows)
    upsert = upsert.on_conflict_do_update(
        index_elements=[agents.c.node_id, agents.c.agent_id], set_=_keep_stored(upsert.excluded)
    )
    written = upsert.returning(agents.c.id).cte("written")
    synced = (
        sa.func.unnest(_array("b_sync_node", sa.Text), _array("b_sync_at", sa.Float))
        .table_valued("node_id", "synced_at")
        .render_derived(name="synced")
    )
    listed = (
        sa.func.unnest(_array("b_node_id", sa.Text), _array("b_agent_id", sa.Text))
        .table_valued("node_id", "agent_id")
        .render_derived(name="listed")
    )
    still_listed = sa.exists().where(
        listed.c.node_id == agents.c.node_id, listed.c.agent_id == agents.c.agent_id
    )
    return (
        sa.update(agents)
        .where(agents.c.node_id == synced.c.node_id, agents.c.status != GONE, ~still_listed)
        .values(status=GONE, pid=0, updated_at=synced.c.synced_at)
        .add_cte(written)
    )


def _sync_postgres(
    conn: sa.Connection, rows: Sequence[Mapping[str, Any]], full: Sequence[tuple[str, float]]
) -> None:
    """Upsert ``rows`` (:func:`_state_row`; each agent of a node once) and, for each
    ``(node_id, when)`` of ``full``, mark the node's agents not among them gone as of
    ``when``: :func:`_postgres_sync`, one statement."""
    params: dict[str, Any] = {
        f"b_{name}": [row[name] for row in rows] for name, _ in _BATCH_ARRAYS[:-1]
    }
    params["b_synced_at"] = [row["last_sync_time"] for row in rows]
    params["b_sync_node"] = [node_id for node_id, _ in full]
    params["b_sync_at"] = [when for _, when in full]
    conn.execute(_postgres_sync(), params)


class AgentsMixin(StoreBase):
    """The agent methods of :class:`~transport.manager._store.Store`."""

    def sync_agent_states(
        self,
        node_id: str,
        states: Sequence[AgentStateRecord],
        *,
        now: float,
        full: bool = True,
    ) -> int:
        """Apply a node's SyncAgentStates in one transaction.

        Args:
            node_id: The node.
            states: The agents' states; an agent named twice takes its last state.
            now: The time of the sync (each reported agent's ``last_sync_time``).
            full: The list names every agent of the node: the others become ``gone``.

        Returns:
            How many agents were written.

        Raises:
            NotFoundError: The node is not registered.
            StoreError: The database failed (nothing of the sync is applied).
        """
        with self._write() as conn:
            count = self._sync(conn, node_id, states, now=now, full=full)
        if count is None:
            raise node_not_found(node_id)
        return count

    def _sync(
        self,
        conn: sa.Connection,
        node_id: str,
        states: Sequence[AgentStateRecord],
        *,
        now: float,
        full: bool,
        locked: bool = False,
    ) -> int | None:
        """Apply a sync in ``conn``'s transaction (see :meth:`sync_agent_states`); the
        agents written, or None (nothing done) when the node is not registered.
        ``locked``: the caller locked the node's row already (and knows it exists)."""
        if not locked and conn.scalar(_LOCK_NODE, {"node_id": node_id}) is None:
            return None
        latest = {state.agent_id: state for state in states}
        rows = [_state_row(node_id, latest[agent_id], now) for agent_id in sorted(latest)]
        if self._dialect == "postgresql":
            _sync_postgres(conn, rows, [(node_id, now)] if full else [])
            return len(rows)
        if rows:
            conn.execute(_upsert_agents(self._dialect), rows)
        if full:
            self._mark_gone(conn, node_id, sorted(latest), now)
        return len(rows)

    def _sync_many(
        self,
        conn: sa.Connection,
        syncs: Sequence[tuple[str, Sequence[AgentStateRecord], float]],
        registered: AbstractSet[str] | None = None,
    ) -> list[int | None]:
        """Apply full syncs in ``conn``'s transaction (the gRPC ingest's batch): per sync
        the agents written, or None when its node is not registered.

        Their nodes are locked in one query (in node-id order); on SQLite every reported
        agent is upserted by one executemany and the agents missing from each node's last
        list are found by one query, so a batch costs a few statements, not three per sync.
        """
        ids = sorted({node_id for node_id, _, _ in syncs})
        known: AbstractSet[str]
        if self._dialect == "sqlite":  # the transaction holds the database's write lock
            known = self._known_nodes(conn, ids) if registered is None else registered
        else:  # the nodes' rows are locked (in node-id order), whatever the caller knows
            locked: set[str] = set()
            for part in chunks(ids):
                locked.update(conn.scalars(_LOCK_NODES, {"b_nodes": part}))
            known = locked
        order = sorted(range(len(syncs)), key=lambda i: syncs[i][0])  # stable: per node in order
        counts: list[int | None] = [None] * len(syncs)
        rows: list[dict[str, Any]] = []
        if self._dialect == "postgresql":
            applied = [i for i in order if syncs[i][0] in known]
            if applied and len({syncs[i][0] for i in applied}) == len(applied):
                for i in applied:
                    node_id, states, when = syncs[i]
                    latest = {state.agent_id: state for state in states}
                    rows += [_state_row(node_id, latest[a], when) for a in sorted(latest)]
                    counts[i] = len(latest)
                _sync_postgres(conn, rows, [(syncs[i][0], syncs[i][2]) for i in applied])
                return counts
            for i in applied:  # a node synced twice in the batch: one after the other
                node_id, states, when = syncs[i]
                counts[i] = self._sync(conn, node_id, states, now=when, full=True, locked=True)
            return counts
        last: dict[str, tuple[set[str], float]] = {}
        for i in order:
            node_id, states, when = syncs[i]
            if node_id not in known:
                continue
            latest = {state.agent_id: state for state in states}
            rows += [_state_row(node_id, latest[agent_id], when) for agent_id in sorted(latest)]
            counts[i] = len(latest)
            last[node_id] = (set(latest), when)
        if rows:
            prepare(_upsert_agents("sqlite"), _STATE_COLUMNS).executemany(conn, rows)
        gone: list[dict[str, Any]] = []
        if last:
            nodes = {"nodes": json.dumps(sorted(last))}
            alive = prepare(_ALIVE_OF_NODES_SQLITE).rows(conn, nodes)
            for node_id, agent_id in alive:
                named, when = last[node_id]
                if agent_id not in named:
                    gone.append({"b_node": node_id, "b_agent": agent_id, "b_now": when})
        if gone:
            conn.execute(_MARK_ONE_GONE, gone)
        return counts

    def _mark_gone(
        self, conn: sa.Connection, node_id: str, named: Sequence[str], now: float
    ) -> None:
        """Mark the node's agents not in ``named`` gone (pid 0)."""
        if len(named) <= _MAX_NOT_IN:
            conn.execute(_MARK_GONE, {"b_node": node_id, "b_named": list(named), "b_now": now})
            return
        # A long list: compare in Python rather than send thousands of parameters.
        present = conn.scalars(_ALIVE, {"b_node": node_id})
        missing = sorted(set(present) - set(named))
        for part in chunks(missing):
            conn.execute(_MARK_LISTED_GONE, {"b_node": node_id, "b_listed": part, "b_now": now})

    def replace_agents(self, node_id: str, infos: Sequence[AgentInfoRecord], *, now: float) -> int:
        """Store a node's ListAgents answer (the REST sync): a full sync of those agents.

        Args:
            node_id: The node.
            infos: Every agent the daemon runs.
            now: The time of the sync.

        Returns:
            How many agents were written.

        Raises:
            NotFoundError: The node is not registered.
            StoreError: The database failed (nothing is applied).
        """
        from transport import AgentStateRecord

        states = [
            AgentStateRecord(
                agent_id=info.id,
                status=info.status,
                pid=info.pid,
                last_heartbeat=info.last_heartbeat,
                type=info.type,
                version=info.version,
            )
            for info in infos
        ]
        return self.sync_agent_states(node_id, states, now=now, full=True)

    def list_agents(self, node_id: str) -> list[Agent]:
        """A node's agents by agent id (``gone`` ones included).

        Raises:
            NotFoundError: The node is not registered.
            StoreError: The database failed.
        """
        with self._read() as conn:
            self._require_node(conn, node_id)
            rows = conn.execute(
                sa.select(agents).where(agents.c.node_id == node_id).order_by(agents.c.agent_id)
            )
            return [agent_from_row(row._mapping) for row in rows]

    def get_agent(self, node_id: str, agent_id: str) -> Agent:
        """One agent of a node.

        Raises:
            NotFoundError: The node is not registered or has no such agent.
            StoreError: The database failed.
        """
        with self._read() as conn:
            row = conn.execute(
                sa.select(agents).where(agents.c.node_id == node_id, agents.c.agent_id == agent_id)
            ).first()
            if row is None:
                self._require_node(conn, node_id)
                raise NotFoundError(f"node {node_id} has no agent {agent_id}")
        return agent_from_row(row._mapping)

    def agent_counts(self) -> dict[str, int]:
        """How many agents there are by status, over every node (``gone`` included; an
        agent whose status was never reported counts as ``unknown``).

        Raises:
            StoreError: The database failed.
        """
        query = sa.select(agents.c.status, sa.func.count()).group_by(agents.c.status)
        with self._read() as conn:
            rows = conn.execute(query).all()
        counts: dict[str, int] = {}
        for status, count in rows:
            key = status or "unknown"
            counts[key] = counts.get(key, 0) + count
        return counts

    def purge_gone_agents(self, *, before: float) -> int:
        """Delete the agents that went ``gone`` before ``before``.

        Returns:
            How many were deleted.

        Raises:
            StoreError: The database failed.
        """
        with self._write() as conn:
            result = conn.execute(
                sa.delete(agents).where(agents.c.status == GONE, agents.c.updated_at < before)
            )
            return result.rowcount
