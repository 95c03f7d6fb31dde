"""The daemon's ``hostvisor.v1.HostvisorService``: logs, live states, details, updates.

Theory of operation
-------------------
Our additions to the original contract, served beside ``proto.DaemonService`` on the same
listeners (:mod:`transport.daemon._service` explains validation, statuses and
cancellation; every method here only reads).

Streams never make the daemon wait for a client. Each has a bounded buffer filled by the
daemon's side at its own pace and drained by the client's; when a slow client lets it
overflow, the oldest entries go:

* FollowAgentLogs: a reader task polls the log file (:class:`~transport.daemon._logfollow.
  LogFollower`, every :data:`FOLLOW_POLL_S`) into at most :data:`MAX_BUFFERED_LINES`
  lines; the next chunk counts the lines dropped (``dropped_lines``). The first message is
  the history (``tail_lines``, possibly none): from then on every new line is followed,
  across rotations, until the client leaves or the agent is removed (``NOT_FOUND``).
* WatchAgentStates: a subscription to the supervisor's events (bounded, see
  :meth:`supervisor.Supervisor.subscribe`). A snapshot comes first, then each change of an
  agent's status; whenever the subscription dropped events or the set of agents changed
  (a reload; looked at every :data:`RESYNC_S` too), a fresh snapshot. Health events that
  keep the status are not sent: the next snapshot or ListAgentDetails shows them.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Sequence

import trio

from supervisor import AgentInfo, UnknownAgentError
from transport import (
    AgentStatus,
    CallContext,
    HostvisorService,
    Route,
    Send,
    StateChange,
    StatusCode,
    StatusError,
    agent_detail_from_supervisor,
    hostvisor_pb2,
    parse_follow_request,
    parse_log_request,
    state_change_to_message,
    stream_route,
    unary_route,
)

from ._logfollow import MAX_LINE_BYTES, LogFollower, NotFollowableError
from ._service import Backend, heartbeat_of, not_found, version_of

__all__ = [
    "FOLLOW_POLL_S",
    "MAX_BUFFERED_LINES",
    "MAX_CHUNK_LINES",
    "MAX_LOG_REPLY_BYTES",
    "RESYNC_S",
    "HostvisorHandlers",
]

logger = logging.getLogger("hostvisor.grpc")

FOLLOW_POLL_S = 0.25
"""How often a followed log file is looked at."""
RECHECK_S = 2.0
"""How often a log follower checks that its agent still exists and where it logs."""
MAX_BUFFERED_LINES = 10_000
"""Lines a log stream holds for a slow client before it drops the oldest."""
MAX_CHUNK_LINES = 500
"""Most lines in one LogChunk."""
MAX_LOG_REPLY_BYTES = 3 << 20
"""Most bytes of lines in one answer (gRPC's default message limit is 4 MiB)."""
RESYNC_S = 5.0
"""How often a state stream checks whether the set of agents changed."""
WATCH_BUFFER = 256
"""Events a state stream holds for a slow client before it sends a snapshot instead."""


class HostvisorHandlers:
    """The handlers of ``hostvisor.v1.HostvisorService``.

    Args:
        backend: What they serve from.
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def routes(self) -> list[Route]:
        """Every method of the service, routed."""
        s = HostvisorService
        return [
            unary_route(s.GetAgentLogs, self.get_agent_logs),
            stream_route(s.FollowAgentLogs, self.follow_agent_logs),
            stream_route(s.WatchAgentStates, self.watch_agent_states),
            unary_route(s.ListAgentDetails, self.list_agent_details),
            unary_route(s.GetUpdateResult, self.get_update_result),
        ]

    # -- details --------------------------------------------------------------------------

    async def _details(self, infos: Sequence[AgentInfo]) -> list[hostvisor_pb2.AgentDetail]:
        installed = await self.backend.versions()
        return [
            agent_detail_from_supervisor(
                info, version=version_of(info, installed), last_heartbeat=heartbeat_of(info)
            )
            for info in infos
        ]

    def _selected(self, agent_ids: Sequence[str], field: str) -> list[AgentInfo]:
        """Snapshots of the agents asked for (all when none is), in the order asked."""
        if not agent_ids:
            return self.backend.supervisor.statuses()
        infos: dict[str, AgentInfo] = {}
        for index, agent_id in enumerate(agent_ids):
            if agent_id not in infos:
                infos[agent_id] = self.backend.agent(agent_id, f"{field}[{index}]")
        return list(infos.values())

    async def list_agent_details(
        self, request: hostvisor_pb2.ListAgentDetailsRequest, ctx: CallContext
    ) -> hostvisor_pb2.ListAgentDetailsResponse:
        """What ``hostvisor status`` shows: the original AgentInfo plus health and errors.

        Raises:
            InvalidMessageError: An empty id.
            StatusError: ``NOT_FOUND`` for an unknown id.
        """
        infos = self._selected(request.agent_ids, "ListAgentDetailsRequest.agent_ids")
        return hostvisor_pb2.ListAgentDetailsResponse(agents=await self._details(infos))

    # -- logs -----------------------------------------------------------------------------

    async def get_agent_logs(
        self, request: hostvisor_pb2.GetAgentLogsRequest, ctx: CallContext
    ) -> hostvisor_pb2.GetAgentLogsResponse:
        """The last lines of the agent's log (``lines`` 1 to 1000, 0 meaning 100).

        Raises:
            InvalidMessageError: Empty agent_id, lines out of range.
            StatusError: ``NOT_FOUND``.
        """
        wanted = parse_log_request(request)
        self.backend.agent(wanted.agent_id, "GetAgentLogsRequest.agent_id")
        try:
            lines = await trio.to_thread.run_sync(
                self.backend.supervisor.tail, wanted.agent_id, wanted.lines
            )
        except UnknownAgentError:
            not_found(wanted.agent_id)
        except OSError as exc:
            raise StatusError(StatusCode.UNAVAILABLE, f"the log cannot be read: {exc}") from exc
        return hostvisor_pb2.GetAgentLogsResponse(lines=_within(lines, MAX_LOG_REPLY_BYTES))

    async def follow_agent_logs(
        self,
        request: hostvisor_pb2.FollowAgentLogsRequest,
        ctx: CallContext,
        send: Send[hostvisor_pb2.LogChunk],
    ) -> None:
        """The last ``tail_lines`` lines, then every new line, until the client leaves.

        Raises:
            InvalidMessageError: Empty agent_id, tail_lines out of range.
            StatusError: ``NOT_FOUND`` (also when the agent is removed meanwhile);
                ``FAILED_PRECONDITION`` when its log is not a regular file.
        """
        wanted = parse_follow_request(request)
        info = self.backend.agent(wanted.agent_id, "FollowAgentLogsRequest.agent_id")
        follower = LogFollower(info.log_file)
        try:
            try:
                history = follower.start(wanted.lines)
            except NotFollowableError as exc:
                raise StatusError(StatusCode.FAILED_PRECONDITION, str(exc)) from None
            except OSError as exc:
                raise StatusError(StatusCode.UNAVAILABLE, f"the log cannot be read: {exc}") from exc
            lines = _LineBuffer(MAX_BUFFERED_LINES)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read_log, wanted.agent_id, follower, lines)
                await send(hostvisor_pb2.LogChunk(lines=_within(history, MAX_LOG_REPLY_BYTES)))
                while True:
                    await lines.wait()
                    chunk, dropped = lines.take(MAX_CHUNK_LINES, MAX_LOG_REPLY_BYTES)
                    await send(hostvisor_pb2.LogChunk(lines=chunk, dropped_lines=dropped))
        finally:
            follower.close()

    async def _read_log(self, agent_id: str, follower: LogFollower, lines: _LineBuffer) -> None:
        supervisor = self.backend.supervisor
        next_check = trio.current_time() + RECHECK_S
        while True:
            try:
                new, more = follower.poll()
            except NotFollowableError as exc:
                raise StatusError(StatusCode.FAILED_PRECONDITION, str(exc)) from None
            except OSError as exc:
                raise StatusError(StatusCode.UNAVAILABLE, f"the log cannot be read: {exc}") from exc
            lines.extend(new)
            if trio.current_time() >= next_check:
                next_check = trio.current_time() + RECHECK_S
                try:
                    path = supervisor.status(agent_id).log_file
                except UnknownAgentError:
                    raise StatusError(
                        StatusCode.NOT_FOUND, f"agent {agent_id!r} was removed"
                    ) from None
                if path != follower.path:  # a reload moved its log: follow the new file
                    follower.close()
                    follower.path = path
            if more:
                await trio.lowlevel.checkpoint()
            else:
                await trio.sleep(FOLLOW_POLL_S)

    # -- states ---------------------------------------------------------------------------

    async def watch_agent_states(
        self,
        request: hostvisor_pb2.WatchAgentStatesRequest,
        ctx: CallContext,
        send: Send[hostvisor_pb2.AgentStateEvent],
    ) -> None:
        """A snapshot, then each status change, until the client leaves.

        Raises:
            InvalidMessageError: An empty id.
            StatusError: ``NOT_FOUND`` for an unknown id; ``UNAVAILABLE`` when the daemon
                stops.
        """
        field = "WatchAgentStatesRequest.agent_ids"
        wanted = [info.id for info in self._selected(request.agent_ids, field)]
        only = set(wanted) if request.agent_ids else None
        supervisor = self.backend.supervisor

        def present() -> list[str]:
            ids = [spec.id for spec in supervisor.registry.list()]
            return ids if only is None else [i for i in ids if i in only]

        async def snapshot() -> list[str]:
            infos = [i for i in supervisor.statuses() if only is None or i.id in only]
            agents = await self._details(infos)
            event = hostvisor_pb2.AgentSnapshot(agents=agents, timestamp_ms=_wall_ms())
            await send(hostvisor_pb2.AgentStateEvent(snapshot=event))
            return [info.id for info in infos]

        with supervisor.subscribe(WATCH_BUFFER) as events:  # before the snapshot: no gap
            known = await snapshot()
            while True:
                event = None
                with trio.move_on_after(RESYNC_S):
                    try:
                        event = await events.receive()
                    except trio.EndOfChannel:
                        raise StatusError(
                            StatusCode.UNAVAILABLE, "the daemon is shutting down"
                        ) from None
                if event is not None and event.dropped == 0 and present() == known:
                    if event.old is event.new or (only is not None and event.agent_id not in only):
                        continue
                    change = StateChange(
                        agent_id=event.agent_id,
                        old_status=AgentStatus(event.old.value),
                        new_status=AgentStatus(event.new.value),
                        reason=event.reason,
                        timestamp_ms=round(event.time * 1000) if event.time > 0 else None,
                        pid=event.pid if 0 < event.pid < 2**31 else 0,
                    )
                    message = state_change_to_message(change)
                    await send(hostvisor_pb2.AgentStateEvent(change=message))
                elif event is not None or present() != known:
                    known = await snapshot()

    # -- updates --------------------------------------------------------------------------

    async def get_update_result(
        self, request: hostvisor_pb2.GetUpdateResultRequest, ctx: CallContext
    ) -> hostvisor_pb2.UpdateResult:
        """The outcome of an update accepted by PushUpdate.

        Raises:
            InvalidMessageError: Neither update_id nor component.
            StatusError: ``NOT_FOUND``; ``FAILED_PRECONDITION`` without an ``update:``
                block.
        """
        updates = self.backend.updates
        if updates is None:
            raise StatusError(
                StatusCode.FAILED_PRECONDITION,
                "updates are not configured on this daemon (no update: block)",
            )
        return await updates.result(request)


class _LineBuffer:
    """Lines waiting for a slow reader; the oldest go when more than ``limit`` wait."""

    def __init__(self, limit: int) -> None:
        self._lines: collections.deque[str] = collections.deque()
        self._limit = limit
        self._dropped = 0
        self._ready = trio.Event()

    def extend(self, lines: Sequence[str]) -> None:
        if not lines:
            return
        self._lines.extend(lines)
        overflow = len(self._lines) - self._limit
        for _ in range(max(0, overflow)):
            self._lines.popleft()
        self._dropped += max(0, overflow)
        self._ready.set()

    async def wait(self) -> None:
        await self._ready.wait()

    def take(self, most: int, budget: int) -> tuple[list[str], int]:
        taken: list[str] = []
        while self._lines and len(taken) < most:
            size = len(self._lines[0]) * 4  # worst case of UTF-8
            if taken and size > budget:
                break
            budget -= size
            taken.append(self._lines.popleft())
        dropped, self._dropped = self._dropped, 0
        if not self._lines:
            self._ready = trio.Event()
        return taken, dropped


def _within(lines: Sequence[str], budget: int) -> list[str]:
    """The newest lines that fit in ``budget`` bytes (UTF-8), each cut at 16 KiB."""
    kept: list[str] = []
    for whole in reversed(lines):
        line = whole if len(whole) <= MAX_LINE_BYTES else whole[:MAX_LINE_BYTES] + "[...]"
        size = len(line.encode("utf-8", errors="replace")) + 2
        if kept and size > budget:
            break
        budget -= size
        kept.append(line)
    kept.reverse()
    return kept


def _wall_ms() -> int:
    """Now, in unix milliseconds (a snapshot's time for the client)."""
    return round(time.time() * 1000)
