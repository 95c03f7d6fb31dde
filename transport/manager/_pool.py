"""The Manager's clients to its daemons: one gRPC channel per node, reused, capped, mended.

Theory of operation
-------------------
:class:`DaemonPool` keeps at most one channel per daemon target (``ip:port``, see
:func:`~transport.manager._pool_policy.target_of`) and makes every call the Manager makes to
a daemon: ListAgents, OperateAgent, GetAgentMetrics, PushUpdate (``proto.DaemonService``)
and GetAgentLogs, GetUpdateResult, ListAgentDetails and the stream FollowAgentLogs
(``hostvisor.v1.HostvisorService``; records in :mod:`._pool_streams`). A followed log holds
its channel in use for as long as it is read (it is never closed as idle or by the cap).

**Ownership.** :meth:`DaemonPool.run` owns every channel: it runs a nursery, and each
channel is opened by a task of that nursery (the first call to a target starts it and
waits until the channel exists; opening is lazy, the call itself connects). Cancelling
``run`` cancels those tasks, which close their channels before ``run`` returns; calls made
before ``run`` started or after it stopped raise :class:`~transport.manager.ManagerError`,
as do calls still in flight when it stops. It needs :func:`transport.open_grpc_loop`
around it (the Manager opens the loop once, for its gRPC server and this pool).

**Which channels close** (the rules are pure, in :mod:`transport.manager._pool_policy`):

* *The cap*: when more than ``max_channels`` are open, the least recently used idle ones
  are closed. A channel in use is never closed; if every channel is busy the cap is
  exceeded until calls end (a call never waits for a free channel).
* *Idleness*: a channel no call has used for ``idle_s`` is closed (a task of ``run``
  sleeps until the next one is due).
* *Eviction*: a call that ends ``UNAVAILABLE`` or ``DEADLINE_EXCEEDED`` takes its channel
  out of the pool; the next call to that target opens a new one, so it connects at once
  instead of inheriting grpc's reconnect backoff or a half-open connection. The evicted
  channel is closed when its last call ends.

**Keepalive.** With ``keepalive_s`` the channel pings every ``keepalive_s`` while calls
are in flight (timeout 10 s) but never while idle. Our daemon permits pings every 10 s,
idle or not (:data:`transport.daemon._server.SERVER_OPTIONS`); the original Go daemon
runs grpc-go's default policy (at most one ping per 5 minutes, none without a call,
GOAWAY after two strikes, strikes forgiven whenever it sends a response), which at most
two pings per call of up to 90 s stay within. Idle channels need no pings: they close
after ``idle_s``, and a dead connection found by a call is evicted.

**Errors.** A daemon's non-OK answer passes through unchanged as
:class:`~transport.RemoteError` (``NOT_FOUND``, ``INVALID_ARGUMENT``,
``FAILED_PRECONDITION``, ``PERMISSION_DENIED``, ``UNIMPLEMENTED`` from an original daemon
asked for logs, ...). ``UNAVAILABLE`` and ``DEADLINE_EXCEEDED`` (no connection, refused,
TLS handshake failed, too slow) become :class:`~transport.manager.DaemonUnreachableError`
naming the node and target, with the RemoteError as ``__cause__``. An answer of
``success: false`` (the original's way to fail OperateAgent or PushUpdate) is raised as
``RemoteError(INTERNAL, message)``, exactly what our daemon answers for a failed
operation, so callers handle one shape. A response that breaks the contract raises
:class:`DaemonAnswerError`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import trio
from google.protobuf.message import Message

from transport import (
    CLOSE_TIMEOUT_S,
    UPDATE_ID_METADATA_KEY,
    AgentInfoRecord,
    Channel,
    ClientTls,
    DaemonService,
    HostvisorService,
    InvalidMessageError,
    Metadata,
    Operation,
    RemoteError,
    Reply,
    ResourcePoint,
    StatusCode,
    TransportError,
    agent_info_from_message,
    daemon_pb2,
    hostvisor_pb2,
    open_channel,
    resource_point_from_message,
)

from ._errors import DaemonUnreachableError, ManagerError
from ._pool_policy import (
    DEFAULT_DAEMON_PORT,
    Disposition,
    Slot,
    UpdateStatus,
    disposition,
    idle_expired,
    next_idle_deadline,
    over_cap,
    target_of,
    update_status,
)
from ._pool_streams import (
    KEEPALIVE_TIMEOUT_S,
    AgentDetailRecord,
    LogStream,
    PoolStatistics,
    agent_detail_record,
    channel_options,
)

if TYPE_CHECKING:
    from transport import UnaryMethod

    from ._model import Node

__all__ = [
    "CALL_TIMEOUT_S",
    "DEFAULT_FOLLOW_LINES",
    "KEEPALIVE_TIMEOUT_S",
    "OPERATE_TIMEOUT_S",
    "DaemonAnswerError",
    "DaemonPool",
    "PoolStatistics",
    "UpdateStatus",
]

logger = logging.getLogger("hostvisor.manager.pool")

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)
M = TypeVar("M", bound=Message)
T = TypeVar("T")

CALL_TIMEOUT_S = 30.0
"""A call's deadline (every method but OperateAgent)."""
OPERATE_TIMEOUT_S = 90.0
"""OperateAgent's deadline: longer than a graceful stop."""
DEFAULT_FOLLOW_LINES = 100
"""FollowAgentLogs' history when the caller asks for none in particular."""


class DaemonAnswerError(ManagerError):
    """A daemon answered with a message that breaks the contract (an invalid field)."""


@dataclass(eq=False)
class _Entry:
    """One channel and its bookkeeping (identity matters: one target may briefly have an
    old, evicted entry beside its new one)."""

    target: str
    last_used: float
    in_use: int = 0
    channel: Channel | None = None
    retired: bool = False
    """Out of the pool: closed once ``in_use`` drops to 0."""
    ready: trio.Event = field(default_factory=trio.Event)
    """Set once the opening attempt ended (``channel`` is set when it succeeded)."""
    closing: trio.Event = field(default_factory=trio.Event)
    """Set to make the owner task close the channel (and by the owner when it is
    cancelled, so that no new call picks the channel)."""
    calls: set[trio.CancelScope] = field(default_factory=set)
    """The cancel scopes of the calls on the channel now."""
    drained: trio.Event = field(default_factory=trio.Event)
    """Set when the last of ``calls`` ended."""


class DaemonPool:
    """Channels to the daemons, and the calls the Manager makes on them.

    Args:
        tls: The Manager's client TLS (its certificate for mutual TLS and the CA the
            daemons' certificates chain to); None: plaintext.
        max_channels: The most channels open at once (least recently used closed first).
        idle_s: Close a channel no call used for this long; None: never.
        timeout_s: A call's deadline.
        operate_timeout_s: OperateAgent's deadline.
        keepalive_s: Ping interval during calls (at least 10 s, what our daemon permits);
            None: no pings.
        default_port: The daemon port of nodes that announced none.
        options: More grpc channel arguments (they override the pool's).

    Raises:
        ValueError: A limit out of range.
    """

    def __init__(
        self,
        tls: ClientTls | None = None,
        *,
        max_channels: int = 256,
        idle_s: float | None = 300.0,
        timeout_s: float = CALL_TIMEOUT_S,
        operate_timeout_s: float = OPERATE_TIMEOUT_S,
        keepalive_s: float | None = 30.0,
        default_port: int = DEFAULT_DAEMON_PORT,
        options: Sequence[tuple[str, int | str]] = (),
    ) -> None:
        if max_channels < 1:
            raise ValueError(f"max_channels must be at least 1; got {max_channels}")
        if idle_s is not None and not idle_s > 0:
            raise ValueError(f"idle_s must be positive; got {idle_s}")
        if not (timeout_s > 0 and operate_timeout_s > 0):
            raise ValueError("timeouts must be positive")
        if keepalive_s is not None and not keepalive_s >= 10:
            raise ValueError(
                f"keepalive_s must be at least 10 (our daemon's minimum): {keepalive_s}"
            )
        if not 1 <= default_port <= 65535:
            raise ValueError(f"default_port must be 1 to 65535; got {default_port}")
        self._tls = tls
        self._max_channels = max_channels
        self._idle_s = idle_s
        self._timeout_s = timeout_s
        self._operate_timeout_s = operate_timeout_s
        self._default_port = default_port
        self._options = tuple({**dict(channel_options(keepalive_s)), **dict(options)}.items())
        self._nursery: trio.Nursery | None = None
        self._state = "new"  # new -> running -> stopping -> stopped
        self._entries: dict[str, _Entry] = {}  # the pool's channels by target, LRU first
        self._retiring: set[_Entry] = set()  # evicted, still in use
        self._live: set[_Entry] = set()  # owner task running (channel not yet closed)
        self._idle_changed = trio.Event()
        self._counts = dict.fromkeys(
            ("opened", "calls", "failures", "unreachable", "evictions", "lru", "idle"), 0
        )

    # -- lifetime -------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the channels until cancelled; every channel is closed before it returns.

        Args:
            task_status: Started once calls may be made.

        Raises:
            RuntimeError: The pool ran before (a pool runs once).
        """
        if self._state != "new":
            raise RuntimeError("a DaemonPool runs once")
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._state = "running"
                task_status.started()
                try:
                    await self._expire_idle()
                finally:
                    self._state = "stopping"  # no new call while the channels close
        finally:
            self._state = "stopped"
            self._nursery = None
            self._entries.clear()
            self._retiring.clear()

    def statistics(self) -> PoolStatistics:
        """The pool's counts now."""
        c = self._counts
        return PoolStatistics(
            open_channels=len(self._live),
            opened=c["opened"],
            calls=c["calls"],
            failures=c["failures"],
            unreachable=c["unreachable"],
            evictions=c["evictions"],
            lru_closes=c["lru"],
            idle_closes=c["idle"],
        )

    def targets(self) -> list[str]:
        """The targets of the pool's channels, least recently used first."""
        return list(self._entries)

    # -- the calls ------------------------------------------------------------------------

    async def list_agents(self, node: Node) -> list[AgentInfoRecord]:
        """The node's agents (ListAgents).

        Raises:
            DaemonUnreachableError: The daemon could not be reached in time.
            RemoteError: The daemon's non-OK answer.
            DaemonAnswerError: An agent in the answer breaks the contract.
            ManagerError: The pool is not running.
        """
        reply = await self._call(
            node, DaemonService.ListAgents, daemon_pb2.ListAgentsRequest(), self._timeout_s
        )
        return _converted(node, "ListAgents", agent_info_from_message, reply.response.agents)

    async def operate(self, node: Node, agent_id: str, operation: Operation) -> None:
        """Start, stop or restart an agent (OperateAgent); returns once the daemon did it.

        Raises:
            DaemonUnreachableError: The daemon could not be reached in time (90 s).
            RemoteError: ``NOT_FOUND`` (unknown agent), ``INVALID_ARGUMENT``, ``INTERNAL``
                with the reason when the operation failed (also for an original daemon's
                ``success: false``).
            ManagerError: The pool is not running.
        """
        request = daemon_pb2.AgentOperationRequest(agent_id=agent_id, operation=operation.value)
        method = DaemonService.OperateAgent
        reply = await self._call(node, method, request, self._operate_timeout_s)
        if not reply.response.success:
            reason = reply.response.error_message or "the daemon gave no reason"
            raise RemoteError(
                StatusCode.INTERNAL,
                f"{operation.value} of agent {agent_id!r} failed: {reason}",
                method=method.path,
            )

    async def agent_metrics(
        self, node: Node, agent_id: str, duration_s: int
    ) -> list[ResourcePoint]:
        """An agent's resource samples of the last ``duration_s`` seconds, oldest first
        (GetAgentMetrics; 0 or less: the daemon's default, an hour).

        Raises:
            DaemonUnreachableError, RemoteError, DaemonAnswerError, ManagerError: As
                :meth:`list_agents` (``NOT_FOUND`` for an unknown agent).
        """
        request = daemon_pb2.AgentMetricsRequest(agent_id=agent_id, duration_seconds=duration_s)
        reply = await self._call(node, DaemonService.GetAgentMetrics, request, self._timeout_s)
        return _converted(
            node, "GetAgentMetrics", resource_point_from_message, reply.response.data_points
        )

    async def agent_logs(self, node: Node, agent_id: str, lines: int) -> list[str]:
        """The last ``lines`` lines of an agent's log, oldest first (GetAgentLogs of
        ``hostvisor.v1``; 1 to 1000, 0: the daemon's default, 100).

        Raises:
            DaemonUnreachableError, RemoteError, ManagerError: As :meth:`list_agents`
                (an original daemon answers ``UNIMPLEMENTED``).
        """
        request = hostvisor_pb2.GetAgentLogsRequest(agent_id=agent_id, lines=lines)
        reply = await self._call(node, HostvisorService.GetAgentLogs, request, self._timeout_s)
        return list(reply.response.lines)

    async def push_update(
        self,
        node: Node,
        component: str,
        version: str,
        download_url: str,
        hash: str,
        signature: str,
        *,
        update_id: str | None = None,
    ) -> str:
        """Hand a signed update to the node's daemon (PushUpdate); returns once accepted.

        The request names the node (``node_id``): a daemon that is another node (an
        address reused) refuses it with ``INVALID_ARGUMENT``.

        Args:
            node: The node.
            component: ``daemon`` or an agent's component.
            version: The version to install.
            download_url: Where the daemon downloads the artifact.
            hash: The artifact's SHA-256 (hex).
            signature: The signed envelope (JSON) or the original's legacy signature.
            update_id: The id to give the update; a retry with the same id and request
                is the same update. None: the daemon makes one up.

        Returns:
            The daemon's id of the update ("" from a daemon that names none, such as the
            original).

        Raises:
            DaemonUnreachableError, ManagerError: As :meth:`list_agents`.
            RemoteError: ``FAILED_PRECONDITION`` (updates not configured, a replayed
                request), ``INVALID_ARGUMENT`` naming the field, ``ALREADY_EXISTS`` (the
                id names another update), ``INTERNAL`` for ``success: false``.
        """
        request = daemon_pb2.UpdateRequest(
            node_id=node.node_id,
            component=component,
            version=version,
            download_url=download_url,
            hash=hash,
            signature=signature,
        )
        metadata: Metadata = ((UPDATE_ID_METADATA_KEY, update_id),) if update_id else ()
        method = DaemonService.PushUpdate
        reply = await self._call(node, method, request, self._timeout_s, metadata=metadata)
        if not reply.response.success:
            reason = reply.response.message or "the daemon gave no reason"
            raise RemoteError(StatusCode.INTERNAL, f"update refused: {reason}", method=method.path)
        ids = [v for k, v in reply.initial_metadata if k == UPDATE_ID_METADATA_KEY]
        return ids[-1] if ids else (update_id or "")

    async def update_result(self, node: Node, update_id: str) -> UpdateStatus:
        """The state of an update the daemon accepted (GetUpdateResult of ``hostvisor.v1``).

        Raises:
            DaemonUnreachableError, ManagerError: As :meth:`list_agents`.
            RemoteError: ``NOT_FOUND`` (no such update), ``INVALID_ARGUMENT``.
        """
        request = hostvisor_pb2.GetUpdateResultRequest(update_id=update_id)
        reply = await self._call(node, HostvisorService.GetUpdateResult, request, self._timeout_s)
        return update_status(reply.response)

    async def agent_details(self, node: Node) -> list[AgentDetailRecord]:
        """The node's agents with health and errors (ListAgentDetails of ``hostvisor.v1``).

        Raises:
            DaemonUnreachableError, RemoteError, DaemonAnswerError, ManagerError: As
                :meth:`list_agents` (an original daemon answers ``UNIMPLEMENTED``).
        """
        request = hostvisor_pb2.ListAgentDetailsRequest()
        method = HostvisorService.ListAgentDetails
        reply = await self._call(node, method, request, self._timeout_s)
        return _converted(node, "ListAgentDetails", agent_detail_record, reply.response.agents)

    @asynccontextmanager
    async def follow_logs(
        self, node: Node, agent_id: str, tail_lines: int = DEFAULT_FOLLOW_LINES
    ) -> AsyncIterator[LogStream]:
        """Follow an agent's log (FollowAgentLogs of ``hostvisor.v1``) for the block.

        ``async with pool.follow_logs(node, "web") as stream: async for chunk in stream``:
        the first chunk is the last ``tail_lines`` lines (0 to 1000), then each new line as
        it is written. Leaving the block cancels the call (the daemon's handler ends).

        Raises:
            DaemonUnreachableError: The node has no address, or (while reading) the daemon
                went away.
            RemoteError: While reading: the daemon's refusal (``NOT_FOUND``,
                ``INVALID_ARGUMENT``, ``UNIMPLEMENTED`` from an original daemon, ...).
            ManagerError: The pool is not running, or stopped during the stream.
        """
        request = hostvisor_pb2.FollowAgentLogsRequest(agent_id=agent_id, tail_lines=tail_lines)
        target = self._target(node)
        async with self._using(target) as entry:
            assert entry.channel is not None
            where = f"node {node.node_id} ({entry.target})"
            with trio.CancelScope() as scope:
                entry.calls.add(scope)
                try:
                    method = HostvisorService.FollowAgentLogs
                    async with entry.channel.stream(method, request) as responses:
                        yield LogStream(
                            responses, where, lambda exc: self._failure(entry, where, exc)
                        )
                finally:
                    entry.calls.discard(scope)
                    if not entry.calls:
                        entry.drained.set()
            if scope.cancelled_caught:
                raise ManagerError(f"{where}: the daemon pool stopped during the stream")

    # -- machinery ------------------------------------------------------------------------

    def _target(self, node: Node) -> str:
        """The node's daemon target; a call is counted (and failed when there is none)."""
        self._counts["calls"] += 1
        try:
            return target_of(node.ip, node.grpc_port, default_port=self._default_port)
        except ValueError as exc:
            self._failed(unreachable=True)
            raise DaemonUnreachableError(f"node {node.node_id}: {exc}") from None

    def _failure(self, entry: _Entry, where: str, exc: RemoteError) -> Exception:
        """The error a failed call raises: ``exc`` itself, or (evicting the channel)
        :class:`DaemonUnreachableError` for ``UNAVAILABLE`` and ``DEADLINE_EXCEEDED``."""
        if disposition(exc.status) is Disposition.PASS:
            self._failed(unreachable=False)
            return exc
        self._evict(entry)
        self._failed(unreachable=True)
        return DaemonUnreachableError(
            f"{where}: the daemon is unreachable ({exc.status.name}: {exc.details})"
        )

    async def _call(
        self,
        node: Node,
        method: UnaryMethod[Req, Resp],
        request: Req,
        timeout_s: float,
        *,
        metadata: Metadata = (),
    ) -> Reply[Resp]:
        """One call on the node's channel, its errors translated (see the module)."""
        target = self._target(node)
        try:
            async with self._using(target) as entry:
                return await self._call_on(entry, node, method, request, timeout_s, metadata)
        except (DaemonUnreachableError, RemoteError):
            raise  # counted by _failure
        except Exception:
            self._failed(unreachable=False)
            raise

    async def _call_on(
        self,
        entry: _Entry,
        node: Node,
        method: UnaryMethod[Req, Resp],
        request: Req,
        timeout_s: float,
        metadata: Metadata,
    ) -> Reply[Resp]:
        """The call on an acquired channel; the pool may cancel it (when ``run`` stops)."""
        assert entry.channel is not None
        where = f"node {node.node_id} ({entry.target})"
        with trio.CancelScope() as scope:
            entry.calls.add(scope)
            try:
                return await entry.channel.call_with_metadata(
                    method, request, timeout_s=timeout_s, metadata=metadata
                )
            except RemoteError as exc:
                error = self._failure(entry, where, exc)
                if error is exc:
                    raise
                raise error from exc
            except TransportError as exc:
                raise ManagerError(f"{where}: {exc}") from exc
            finally:
                entry.calls.discard(scope)
                if not entry.calls:
                    entry.drained.set()
        raise ManagerError(f"{where}: the daemon pool stopped during the call")

    def _failed(self, *, unreachable: bool) -> None:
        self._counts["failures"] += 1
        if unreachable:
            self._counts["unreachable"] += 1

    @asynccontextmanager
    async def _using(self, target: str) -> AsyncIterator[_Entry]:
        """The target's channel, counted as in use for the block."""
        entry = await self._acquire(target)
        try:
            yield entry
        finally:
            self._release(entry)

    async def _acquire(self, target: str) -> _Entry:
        while True:
            nursery = self._nursery
            if nursery is None or self._state != "running":
                raise ManagerError("the daemon pool is not running")
            entry = self._entries.get(target)
            if entry is None:
                entry = _Entry(target, last_used=trio.current_time(), in_use=1)
                self._entries[target] = entry
                try:
                    await nursery.start(self._own, entry)
                except BaseException as exc:
                    entry.in_use -= 1
                    self._discard(entry)
                    if isinstance(exc, RuntimeError):  # the nursery closed: run stopped
                        raise ManagerError("the daemon pool is not running") from exc
                    if isinstance(exc, Exception):
                        raise ManagerError(f"cannot open a channel to {target}: {exc}") from exc
                    raise
                finally:
                    entry.ready.set()
            else:
                entry.in_use += 1
                try:
                    await entry.ready.wait()
                except BaseException:
                    self._release(entry)
                    raise
                if entry.channel is None or entry.retired or entry.closing.is_set():
                    self._release(entry)
                    await trio.lowlevel.checkpoint()
                    continue
            self._touch(entry)
            self._trim()
            return entry

    async def _own(self, entry: _Entry, *, task_status: trio.TaskStatus[None]) -> None:
        """The task that holds one channel open until told to close it (or cancelled)."""
        self._live.add(entry)
        try:
            async with open_channel(entry.target, tls=self._tls, options=self._options) as ch:
                entry.channel = ch
                self._counts["opened"] += 1
                logger.debug("channel to %s opened", entry.target)
                task_status.started()
                try:
                    await entry.closing.wait()
                finally:
                    entry.closing.set()
                    await self._cancel_calls(entry)
        finally:
            self._live.discard(entry)
            self._discard(entry)
            logger.debug("channel to %s closed", entry.target)

    @staticmethod
    async def _cancel_calls(entry: _Entry) -> None:
        """Cancel the calls still on a channel about to close (only when ``run`` stops:
        the pool closes no other channel in use), and wait until they are gone, so that
        their callers get a ManagerError, not grpc's cancellation."""
        if not entry.calls:
            return
        entry.drained = trio.Event()
        for scope in list(entry.calls):
            scope.cancel()
        with trio.move_on_after(CLOSE_TIMEOUT_S, shield=True):
            await entry.drained.wait()

    def _touch(self, entry: _Entry) -> None:
        """Mark use: the entry becomes the most recently used."""
        entry.last_used = trio.current_time()
        if self._entries.get(entry.target) is entry:
            del self._entries[entry.target]
            self._entries[entry.target] = entry

    def _release(self, entry: _Entry) -> None:
        entry.in_use -= 1
        self._touch(entry)
        if entry.retired and entry.in_use == 0:
            self._retiring.discard(entry)
            entry.closing.set()
        self._trim()
        self._idle_changed.set()

    def _discard(self, entry: _Entry) -> None:
        """Take the entry out of the pool (if it is still the target's)."""
        if self._entries.get(entry.target) is entry:
            del self._entries[entry.target]

    def _evict(self, entry: _Entry) -> None:
        """Out of the pool after a failure; closed when its last call ends."""
        if entry.retired:
            return
        self._discard(entry)
        entry.retired = True
        self._retiring.add(entry)
        self._counts["evictions"] += 1
        logger.info("channel to %s evicted after a failed call", entry.target)

    def _close(self, target: str, reason: str) -> None:
        entry = self._entries.pop(target)
        entry.retired = True
        entry.closing.set()
        self._counts[reason] += 1

    def _slots(self) -> list[Slot]:
        return [Slot(e.target, e.in_use, e.last_used) for e in self._entries.values()]

    def _trim(self) -> None:
        """Close least recently used idle channels while more than the cap are open."""
        open_total = len(self._entries) + len(self._retiring)
        if open_total <= self._max_channels:
            return
        for target in over_cap(self._slots(), open_total=open_total, cap=self._max_channels):
            self._close(target, "lru")

    async def _expire_idle(self) -> None:
        """Close channels unused for ``idle_s``; sleeps until the next is due."""
        idle_s = self._idle_s
        if idle_s is None:
            await trio.sleep_forever()
        while True:
            slots = self._slots()
            for target in idle_expired(slots, now=trio.current_time(), idle_s=idle_s):
                self._close(target, "idle")
            self._idle_changed = trio.Event()
            with trio.move_on_at(next_idle_deadline(self._slots(), idle_s=idle_s)):
                await self._idle_changed.wait()


def _converted(
    node: Node, method: str, convert: Callable[[M], T], messages: Iterable[M]
) -> list[T]:
    """Each message of an answer converted; a contract breach is the daemon's fault."""
    try:
        return [convert(message) for message in messages]
    except InvalidMessageError as exc:
        raise DaemonAnswerError(f"node {node.node_id}: {method} answered {exc}") from exc
