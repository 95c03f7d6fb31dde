"""Pushing signed updates to nodes, and seeing each node's result (beyond the original).

Theory of operation
-------------------
``POST /api/v1/updates`` with ``{node_ids, component, version, download_url, hash,
signature}`` (operator) checks every node exists (2001 naming the unknown ones, before
anything is pushed), records an update job with one ``pending`` target per node, then
pushes the request to every node's daemon at once (PushUpdate through the pool, at most
:data:`PUSH_CONCURRENCY` calls in flight) and records each answer: ``accepted`` with the
daemon's update id, ``refused`` with the daemon's reason (a bad signature, updates not
configured, ...), or ``unreachable``. One node's failure never stops the others'. The
answer (201) is the job with every target's state; the push is audited with the counts.

The daemon verifies everything (signature, hash, trust, version floor) and installs on its
own schedule, so ``accepted`` is not the end: ``GET /api/v1/updates/:id`` asks each
daemon whose target is still unfinished (:data:`UNFINISHED`) for its result
(GetUpdateResult), records what changed, and answers the job. A daemon that cannot be asked
leaves its target as it was. ``GET /api/v1/updates`` pages the jobs, newest first, without
asking anyone.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from transport import RemoteError
from transport.manager._errors import DaemonUnreachableError, ManagerError, NotFoundError
from transport.manager._http._auth import audited, principal
from transport.manager._http._envelope import (
    ApiError,
    ErrorCode,
    Fields,
    json_body,
    ok,
    page_ok,
    paging,
)
from transport.manager._http._json import update_job_json
from transport.manager._http._nodes import Fleet, logger, path_id
from transport.manager._model import Node, Role, UpdateJob

__all__ = ["MAX_TARGETS", "PUSH_CONCURRENCY", "UNFINISHED", "state_counts", "update_routes"]

PUSH_CONCURRENCY = 32
"""How many PushUpdate (or GetUpdateResult) calls one request makes at once."""
MAX_TARGETS = 1000
"""The most nodes one update may target."""
UNFINISHED = frozenset({"pending", "accepted", "running"})
"""Target states whose result may still change (a daemon is asked again)."""
_API = "/api/v1/updates"


def state_counts(states: Iterable[str]) -> dict[str, int]:
    """How many targets are in each state.

    Args:
        states: The targets' states.

    Returns:
        State -> count, in sorted order.
    """
    counts: dict[str, int] = {}
    for state in states:
        counts[state] = counts.get(state, 0) + 1
    return dict(sorted(counts.items()))


def _unique(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(items))


class _UpdateRoutes:
    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.limit = trio.CapacityLimiter(PUSH_CONCURRENCY)

    def _nodes(self, node_ids: Sequence[str]) -> tuple[list[Node], list[str]]:
        """The nodes named, and the names of those that do not exist (in a worker thread)."""
        found: list[Node] = []
        missing: list[str] = []
        for node_id in node_ids:
            try:
                found.append(self.fleet.store.get_node(node_id))
            except NotFoundError:
                missing.append(node_id)
        return found, missing

    async def _push_one(
        self, job: UpdateJob, node: Node, fields: dict[str, str], update_id: str
    ) -> None:
        async with self.limit:
            try:
                update_id = await self.fleet.pool.push_update(node, **fields, update_id=update_id)
            except RemoteError as error:
                state, update_id, message = "refused", "", f"{error.status.name}: {error.details}"
            except DaemonUnreachableError as error:
                state, update_id, message = "unreachable", "", str(error)
            except ManagerError as error:  # a contract breach, or the pool stopped
                state, update_id, message = "error", "", str(error)
            else:
                state, message = "accepted", ""
        await self.fleet.db(
            self.fleet.store.set_update_target,
            job.id,
            node.node_id,
            state=state,
            update_id=update_id,
            message=message[:1000],
            now=self.fleet.clock(),
        )
        self._changed(job.id)

    def _changed(self, job_id: int) -> None:
        """Tell the console's open pages that a target of ``job_id`` changed."""
        if self.fleet.events is not None:
            self.fleet.events.update(job_id)

    async def push(self, request: Request) -> JSONResponse:
        async with audited(request, Role.OPERATOR, "update.push") as act:
            fields = Fields(await json_body(request))
            node_ids = _unique(fields.text_list("node_ids", max_items=MAX_TARGETS, max_len=128))
            wire = {
                "component": fields.text("component", max_len=128),
                "version": fields.text("version", max_len=128),
                "download_url": fields.text("download_url", max_len=4096),
                "hash": fields.text("hash", required=False, max_len=256),
                "signature": fields.text("signature", required=False, max_len=65536),
            }
            act.target = "nodes:" + ",".join(node_ids)[:200]
            act.detail.update(component=wire["component"], version=wire["version"])
            nodes, missing = await self.fleet.db(self._nodes, node_ids)
            if missing:
                shown = ", ".join(repr(name) for name in missing[:10])
                raise ApiError(ErrorCode.NODE_NOT_FOUND, f"node_ids: unknown node(s) {shown}")
            job = await self.fleet.db(
                self.fleet.store.create_update_job,
                act.principal.name,
                wire["component"],
                wire["version"],
                wire["download_url"],
                wire["hash"],
                node_ids,
                now=self.fleet.clock(),
            )
            act.target = f"update:{job.id}"
            # The daemons' id of this update: a retry with it is the same update.
            update_id = f"hvm{job.id}-{secrets.token_hex(6)}"
            async with trio.open_nursery() as nursery:
                for node in nodes:
                    nursery.start_soon(self._push_one, job, node, wire, update_id)
            job = await self.fleet.db(self.fleet.store.get_update_job, job.id)
            act.detail["states"] = state_counts(target.state for target in job.targets)
        return ok({"update": update_job_json(job)}, status=201, message="created")

    async def list_jobs(self, request: Request) -> JSONResponse:
        await principal(request, Role.VIEWER)
        page, size = paging(request)
        found = await self.fleet.db(self.fleet.store.list_update_jobs, page=page, page_size=size)
        return page_ok(found, update_job_json)

    async def _refresh_one(self, job: UpdateJob, node_id: str, update_id: str) -> None:
        async with self.limit:
            try:
                node = await self.fleet.db(self.fleet.store.get_node, node_id)
                state, message = await self.fleet.pool.update_result(node, update_id)
            except (ManagerError, RemoteError) as error:
                logger.info("update %s on %s: result not refreshed: %s", job.id, node_id, error)
                return
        await self.fleet.db(
            self.fleet.store.set_update_target,
            job.id,
            node_id,
            state=state,
            update_id=update_id,
            message=message[:1000],
            now=self.fleet.clock(),
        )
        self._changed(job.id)

    async def get_job(self, request: Request) -> JSONResponse:
        await principal(request, Role.VIEWER)
        number = path_id(request)
        try:
            job = await self.fleet.db(self.fleet.store.get_update_job, number)
        except NotFoundError:
            raise ApiError(ErrorCode.NOT_FOUND, f"update {number} not found") from None
        unfinished = [t for t in job.targets if t.state in UNFINISHED and t.update_id]
        if unfinished:
            async with trio.open_nursery() as nursery:
                for target in unfinished:
                    nursery.start_soon(self._refresh_one, job, target.node_id, target.update_id)
            job = await self.fleet.db(self.fleet.store.get_update_job, job.id)
        return ok({"update": update_job_json(job)})


def update_routes(fleet: Fleet) -> list[Route]:
    """The update routes (``/api/v1/updates``).

    Args:
        fleet: What they serve from.

    Returns:
        The routes.
    """
    r = _UpdateRoutes(fleet)
    return [
        Route(_API, r.push, methods=["POST"]),
        Route(_API, r.list_jobs, methods=["GET"]),
        Route(f"{_API}/{{id}}", r.get_job, methods=["GET"]),
    ]
