"""Update jobs: an update pushed to one node or many, and each node's result.

A job and its targets (one per node, state ``pending``) are created in one transaction;
each target then moves on its own (accepted, refused, unreachable, then the daemon's
result) as the REST layer pushes and polls.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from transport.manager._errors import NotFoundError
from transport.manager._model import Page, UpdateJob, UpdateTarget

from ._engine import StoreBase, page_bounds, record
from ._schema import update_jobs, update_targets

__all__ = ["PENDING", "UpdatesMixin"]

PENDING = "pending"
"""The state of a target before the update is pushed to its node."""


def _target(row: Mapping[Any, Any]) -> UpdateTarget:
    return record(UpdateTarget, row)


def _jobs(conn: sa.Connection, rows: Sequence[sa.Row[Any]]) -> list[UpdateJob]:
    """Jobs from ``update_jobs`` rows, with their targets (by node id)."""
    ids = [row.id for row in rows]
    targets: dict[int, list[UpdateTarget]] = {}
    if ids:
        query = (
            sa.select(update_targets)
            .where(update_targets.c.job_id.in_(ids))
            .order_by(update_targets.c.job_id, update_targets.c.node_id)
        )
        for target in conn.execute(query):
            targets.setdefault(target.job_id, []).append(_target(target._mapping))
    return [record(UpdateJob, row._mapping, targets=tuple(targets.get(row.id, ()))) for row in rows]


class UpdatesMixin(StoreBase):
    """The update-job methods of :class:`~transport.manager._store.Store`."""

    def create_update_job(
        self,
        actor: str,
        component: str,
        version: str,
        download_url: str,
        hash: str,
        node_ids: Sequence[str],
        *,
        now: float,
    ) -> UpdateJob:
        """Record an update about to be pushed, each node ``pending``.

        Args:
            actor: Who pushes it.
            component: ``daemon`` or ``agent``.
            version: The version pushed.
            download_url: Where the daemons download it.
            hash: The package's SHA-256 (hex).
            node_ids: The nodes (a node named twice is one target).
            now: When.

        Returns:
            The job with its targets.

        Raises:
            StoreError: The database failed.
        """
        with self._write() as conn:
            job_id = conn.scalar(
                sa.insert(update_jobs)
                .values(
                    created_at=now,
                    actor=actor,
                    component=component,
                    version=version,
                    download_url=download_url,
                    hash=hash,
                )
                .returning(update_jobs.c.id)
            )
            targets = sorted(set(node_ids))
            if targets:
                conn.execute(
                    sa.insert(update_targets),
                    [
                        {"job_id": job_id, "node_id": n, "state": PENDING, "updated_at": now}
                        for n in targets
                    ],
                )
            rows = conn.execute(sa.select(update_jobs).where(update_jobs.c.id == job_id)).all()
            return _jobs(conn, rows)[0]

    def set_update_target(
        self,
        job_id: int,
        node_id: str,
        *,
        state: str,
        update_id: str = "",
        message: str = "",
        now: float,
    ) -> UpdateTarget:
        """Move one node's part of a job to ``state``.

        Args:
            job_id: The job.
            node_id: The node.
            state: Its new state.
            update_id: The daemon's id of the update; empty keeps the stored one.
            message: What the daemon or the push said.
            now: When.

        Returns:
            The target as stored.

        Raises:
            NotFoundError: The job has no such node.
            StoreError: The database failed.
        """
        values: dict[str, Any] = {"state": state, "message": message, "updated_at": now}
        if update_id:
            values["update_id"] = update_id
        stmt = (
            sa.update(update_targets)
            .where(update_targets.c.job_id == job_id, update_targets.c.node_id == node_id)
            .values(**values)
            .returning(*update_targets.c)
        )
        with self._write() as conn:
            row = conn.execute(stmt).first()
        if row is None:
            raise NotFoundError(f"update job {job_id} has no node {node_id}")
        return _target(row._mapping)

    def get_update_job(self, id: int) -> UpdateJob:
        """A job with its targets.

        Raises:
            NotFoundError: No such job.
            StoreError: The database failed.
        """
        with self._read() as conn:
            rows = conn.execute(sa.select(update_jobs).where(update_jobs.c.id == id)).all()
            if not rows:
                raise NotFoundError(f"no update job has id {id}")
            return _jobs(conn, rows)[0]

    def list_update_jobs(self, page: int, page_size: int) -> Page[UpdateJob]:
        """One page of the jobs, newest first.

        Raises:
            ValueError: ``page`` or ``page_size`` below 1.
            StoreError: The database failed.
        """
        offset, limit = page_bounds(page, page_size)
        with self._read() as conn:
            total = conn.scalar(sa.select(sa.func.count()).select_from(update_jobs)) or 0
            rows = conn.execute(
                sa.select(update_jobs).order_by(update_jobs.c.id.desc()).offset(offset).limit(limit)
            ).all()
            items = tuple(_jobs(conn, rows))
        return Page(items=items, page=page, page_size=page_size, total=total)
