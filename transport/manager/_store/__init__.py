"""The Manager's database: one query layer (SQLAlchemy Core) for SQLite and PostgreSQL.

Theory of operation: :class:`Store` is synchronous and thread-safe; the Trio code calls it
through ``trio.to_thread.run_sync``. Each method is one short transaction on a pooled
connection (``_engine``): SQLite in WAL mode with ``BEGIN IMMEDIATE`` for writes, so
concurrent writers queue instead of failing; PostgreSQL through psycopg 3, where work that
must happen once across several Managers is an ``UPDATE .. RETURNING`` or an advisory
lock. :meth:`Store.open` runs the Alembic migrations (``migrations/``) under a lock and,
on PostgreSQL, creates the metric partitions of the next days. The methods are grouped by
subject in mixins: nodes (``_nodes``), agents (``_agents``), metrics (``_metrics``,
``_partitions``), users, tokens and audit (``_users``), updates (``_updates``), the
console's dashboard (``_dashboard``). Database errors leave as
:class:`~transport.manager.StoreError` (``NotFoundError``, ``ConflictError``) with the
driver's error as ``__cause__``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING

from ._agents import AgentsMixin
from ._dashboard import DashboardMixin
from ._engine import create_engine, migrate
from ._metrics import STANDARD_TYPES, MetricsMixin
from ._nodes import UNKNOWN, NodesMixin, register_in
from ._updates import PENDING, UpdatesMixin
from ._users import UsersMixin

if TYPE_CHECKING:
    from transport import AgentStateRecord, MetricPoint, NodeRegistration
    from transport.manager._model import Node

__all__ = ["PENDING", "STANDARD_TYPES", "UNKNOWN", "Store"]


class Store(NodesMixin, AgentsMixin, MetricsMixin, UsersMixin, UpdatesMixin, DashboardMixin):
    """The Manager's database (see the module's documentation)."""

    @classmethod
    def open(
        cls,
        url: str,
        *,
        migrate: bool = True,
        pool_size: int = 10,
        max_overflow: int | None = None,
        recycle_s: float | None = None,
    ) -> Store:
        """Connect to a database, migrating it to the newest schema first.

        Args:
            url: ``sqlite:///path/to/manager.db`` or ``postgresql+psycopg://user@host/db``.
            migrate: Run the migrations (and, on PostgreSQL, create the metric partitions
                of the coming days).
            pool_size: Connections kept open.
            max_overflow: How many more may open under load; None: ``pool_size``.
            recycle_s: Replace connections older than this; None: never.

        Returns:
            The store; :meth:`close` it.

        Raises:
            StoreError: The database cannot be reached, or a migration failed.
        """
        engine = create_engine(
            url, pool_size=pool_size, max_overflow=max_overflow, recycle_s=recycle_s
        )
        try:
            if migrate:
                _migrate(engine)
            store = cls(engine)
            if migrate:
                store.ensure_partitions(time.time())
        except BaseException:
            engine.dispose()
            raise
        return store

    def write_batch(
        self,
        registrations: Sequence[tuple[NodeRegistration, int | None, float]],
        heartbeats: Sequence[tuple[str, float]],
        reports: Sequence[tuple[str, Sequence[MetricPoint]]],
        syncs: Sequence[tuple[str, Sequence[AgentStateRecord], float]],
        *,
        now: float,
    ) -> tuple[list[Node], list[bool], list[int | None], list[int | None]]:
        """The gRPC ingest's batch in one transaction: registrations, then heartbeats,
        metric reports and full agent syncs (each kind sees what the ones before wrote).

        One node's item never fails another's: an unknown node is a per-item result
        (None), not an error (the requests are validated before they get here).

        Args:
            registrations: ``(registration, grpc_port, when)`` as for :meth:`register_node`.
            heartbeats: As for :meth:`heartbeats`.
            reports: As for :meth:`report_metrics_batch`.
            syncs: ``(node_id, states, when)`` as for :meth:`sync_agent_states` (full).
            now: The time of the batch (the reports' ``created_at``).

        Returns:
            Per registration the node as stored; per heartbeat whether its node was
            created; per report the rows inserted or None; per sync the agents written or
            None (unknown node).

        Raises:
            StoreError: The database failed (nothing of the batch is stored).
        """
        latest: dict[str, float] = {}
        for node_id, seen in heartbeats:
            latest[node_id] = max(seen, latest.get(node_id, seen))
        if not (registrations or latest or reports or syncs):
            return [], [], [], []
        with self._write() as conn:
            registered = [register_in(conn, self._dialect, *item) for item in registrations]
            # Which nodes exist, in one query for the whole batch (a statement costs the
            # writer more than its rows; a batch under light load has a few items).
            named = {*latest, *(node_id for node_id, _ in reports)}
            named.update(node_id for node_id, _, _ in syncs)
            known = self._known_nodes(conn, named)
            created = self._heartbeats(conn, latest, known) if latest else set()
            known |= created
            inserted = self._reports(conn, reports, now, known) if reports else []
            synced = self._sync_many(conn, syncs, known) if syncs else []
        return registered, [node_id in created for node_id, _ in heartbeats], inserted, synced

    def close(self) -> None:
        """Close every pooled connection (the store cannot be used after)."""
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


_migrate = migrate
