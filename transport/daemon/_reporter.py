"""The daemon's client of the Manager: registration, heartbeats, metrics, agent states. IO.

Theory of operation
-------------------
:meth:`Reporter.run` owns one gRPC channel to ``manager.address`` and four tasks::

    Reporter.run          the grpc loop (unless the caller's), the channel, the spool
    ├─ _link_loop         RegisterNode with backoff; then Heartbeat on a fixed grid
    ├─ _send_loop         delivers the outbox in order: ReportMetrics, SyncAgentStates
    ├─ _metrics_loop      collector results -> one ReportMetrics per collection round
    └─ _states_loop       supervisor events + timetable -> full SyncAgentStates

**The link.** The node registers at start, after every loss of the connection, and
whenever the Manager says it does not know the node: a heartbeat answered
``success: false``, a ``NOT_FOUND``/``FAILED_PRECONDITION`` status, a refusal whose
message says so, or the ``hostvisor-register`` response metadata
(:mod:`transport.daemon._retry`). A call failing with ``UNAVAILABLE`` or
``DEADLINE_EXCEEDED`` means the connection is lost (error D2001): registration is tried
again after a capped, jittered exponential backoff up to ``reconnect_interval``.
Heartbeats follow a fixed grid from each registration (:mod:`._report_schedule`) and are
never spooled: a late heartbeat says nothing.

**Reports** are never lost to an outage. Each is numbered when made and waits in the
:class:`~transport.daemon._outbox.Outbox`: in memory while the Manager is reachable, in
the spool on disk (``{work_dir}/spool``) otherwise, and is delivered in order once the
node is registered again. ``INVALID_ARGUMENT`` (and the other statuses that cannot succeed
later) drops a report at once, counted and logged with the reason (D2003); other failures
are retried with backoff. A report the spool cannot keep (full: the oldest go first;
older than ``max_age``) is counted as dropped.

**Shutdown** (the caller cancels): intake stops, what waits in memory is written to the
spool (durable before anything else), then, if the node is registered, the spool is
delivered for up to ``shutdown_grace_s`` (an interrupted call is simply sent again: the
Manager drops a duplicate), and the channel closes. What is left is delivered by the next
run.

Errors carry the seed's codes in the log and in :meth:`Reporter.statistics`: D2001
(connect), D2002 (register), D2003 (report).
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import trio

from transport import (
    Channel,
    ClientTls,
    DaemonService,
    ManagerService,
    Metadata,
    NodeRegistration,
    RemoteError,
    TransportError,
    UnaryMethod,
    agent_state_to_message,
    daemon_pb2,
    manager_pb2,
    open_channel,
    open_grpc_loop,
    registration_to_message,
)

from ._agent_states import agent_states, agent_version_summary
from ._manager_config import (
    ManagerSpec,
    TlsFiles,
    channel_options,
    load_tls_files,
    manager_config,
)
from ._metric_keys import HostExtras
from ._node import HostFacts, cpu_extras, host_facts, node_id
from ._outbox import MAX_MEMORY, Outbox, Pending
from ._report_intake import AgentSource, MetricSource, batch_metrics
from ._report_schedule import SyncSchedule, next_tick
from ._retry import Backoff, Disposition, answer_disposition, disposition
from ._spool import SPOOL_DIR, ReportSpool, SpoolStatistics
from ._spool_policy import EntryKind

if TYPE_CHECKING:
    from google.protobuf.message import Message

    from collectors import Metrics
    from supervisor import AgentEvent

    from ._config import DaemonConfig
    from ._updates import DaemonUpdates

__all__ = [
    "DEBOUNCE_S",
    "ERROR_CODES",
    "GRPC_PORT_METADATA_KEY",
    "LINGER_S",
    "SHUTDOWN_GRACE_S",
    "AgentSource",
    "MetricSource",
    "Reporter",
    "ReporterStatistics",
    "build_reporter",
]

logger = logging.getLogger("hostvisor.manager")

ERROR_CODES = ("D2001", "D2002", "D2003")
"""Connect, register, report (seed 004 section 7.1)."""
DEBOUNCE_S = 0.5
"""The longest an agent state change waits before it is synced."""
LINGER_S = 0.5
"""How long a collection round may take to be batched into one report."""
SHUTDOWN_GRACE_S = 5.0
"""How long delivery may go on after the daemon is asked to stop."""
GRPC_PORT_METADATA_KEY = "hostvisor-grpc-port"
"""RegisterNode request metadata announcing the TCP port of this daemon's gRPC service, so
that our Manager dials it there (an original Manager ignores it and dials 9091)."""


VersionSource = Callable[[], Awaitable[Mapping[str, str]]]
"""Installed agent versions by agent id (the updater's)."""


@dataclass(frozen=True, slots=True)
class ReporterStatistics:
    """How the conversation with the Manager goes.

    Attributes:
        node_id: This node's id.
        address: The Manager's address.
        registered: Whether the node is registered now (the link is up).
        registrations: Successful registrations.
        heartbeats: Heartbeats the Manager accepted.
        heartbeat_failures: Heartbeats that failed or were refused.
        reports: Metric reports delivered.
        syncs: Agent-state syncs delivered.
        invalid: Reports dropped because the Manager answered ``INVALID_ARGUMENT`` (or
            another status that cannot succeed later).
        refused: Reports dropped after being answered ``success: false`` too often.
        waiting: Reports waiting (memory and spool).
        spool: The spool's contents and counters (evicted, expired, ...).
        errors: How often each error code was raised (D2001, D2002, D2003).
        last_error: The last error, with its code, or None.
    """

    node_id: str
    address: str
    registered: bool
    registrations: int
    heartbeats: int
    heartbeat_failures: int
    reports: int
    syncs: int
    invalid: int
    refused: int
    waiting: int
    spool: SpoolStatistics
    errors: Mapping[str, int]
    last_error: str | None


@dataclass
class _Counters:
    registrations: int = 0
    heartbeats: int = 0
    heartbeat_failures: int = 0
    reports: int = 0
    syncs: int = 0
    invalid: int = 0
    refused: int = 0
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ERROR_CODES, 0))
    last_error: str | None = None


@dataclass
class Reporter:
    """The Manager client (see the module documentation).

    Args:
        spec: The validated ``manager`` section.
        node_id: This node's id (:func:`transport.daemon._node.node_id`).
        work_dir: The daemon's work directory (the spool is ``work_dir/spool``).
        agents: The supervisor, or None to sync no agent states.
        metrics: The collectors, or None to report no metrics.
        labels: ``daemon.labels``.
        daemon_version: The daemon's version.
        versions: Installed agent versions, or None.
        grpc_port: The TCP port this daemon serves gRPC on, announced in RegisterNode's
            metadata (:data:`GRPC_PORT_METADATA_KEY`); None: not announced.
        tls: The TLS files' contents; read from ``spec`` when None and TLS is configured
            (at construction: a missing file raises ``ConfigError`` there).
        open_loop: Open the grpc loop in :meth:`run`; False when the caller runs it inside
            an ``open_grpc_loop()`` it shares (one grpc loop per process).
        facts: Host facts for registration (blocking; run in a thread).
        extras: CPU figures the collectors lack (blocking; run in a thread).
        wall: The wall clock (seconds since the epoch).
        rand: Random numbers in ``[0, 1)`` for backoff jitter.
        debounce_s: See :data:`DEBOUNCE_S`.
        linger_s: See :data:`LINGER_S`.
        shutdown_grace_s: See :data:`SHUTDOWN_GRACE_S`.
    """

    spec: ManagerSpec
    node_id: str
    work_dir: str
    agents: AgentSource | None = None
    metrics: MetricSource | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    daemon_version: str = ""
    versions: VersionSource | None = None
    grpc_port: int | None = None
    tls: TlsFiles | None = None
    open_loop: bool = True
    facts: Callable[[], HostFacts] | None = None
    extras: Callable[[], HostExtras] = cpu_extras
    wall: Callable[[], float] = time.time
    rand: Callable[[], float] = field(default_factory=lambda: random.Random().random)
    debounce_s: float = DEBOUNCE_S
    linger_s: float = LINGER_S
    shutdown_grace_s: float = SHUTDOWN_GRACE_S

    def __post_init__(self) -> None:
        if self.tls is None:
            self.tls = load_tls_files(self.spec)  # ConfigError now, never plaintext later
        spool = ReportSpool(f"{self.work_dir}/{SPOOL_DIR}", self.spec.spool.limits)
        self.outbox = Outbox(spool)
        self.backoff = Backoff(
            min(1.0, self.spec.reconnect_interval_s), self.spec.reconnect_interval_s
        )
        self._counters = _Counters()
        self._registered = False
        self._up = trio.Event()
        self._link_changed = trio.Event()
        self._sync = SyncSchedule(self.spec.sync_interval_s, self.debounce_s, now=0.0)
        self._sync_wake = trio.Event()
        self._channel: Channel | None = None
        self._failing: str | None = None

    # --- statistics and errors ------------------------------------------------------------

    def statistics(self) -> ReporterStatistics:
        """A frozen snapshot of the counters (the daemon's statistics for D2001-D2003)."""
        c = self._counters
        return ReporterStatistics(
            node_id=self.node_id,
            address=self.spec.address,
            registered=self._registered,
            registrations=c.registrations,
            heartbeats=c.heartbeats,
            heartbeat_failures=c.heartbeat_failures,
            reports=c.reports,
            syncs=c.syncs,
            invalid=c.invalid,
            refused=c.refused,
            waiting=len(self.outbox),
            spool=self.outbox.spool.statistics(),
            errors=MappingProxyType(dict(c.errors)),
            last_error=c.last_error,
        )

    def _error(self, code: str, message: str) -> None:
        """Count and log an error; a repeated one is logged at debug level only."""
        self._counters.errors[code] += 1
        text = f"{code} {message}"
        self._counters.last_error = text
        level = logging.DEBUG if text == self._failing else logging.WARNING
        self._failing = text
        logger.log(level, "%s", text)

    # --- the link ---------------------------------------------------------------------------

    @property
    def registered(self) -> bool:
        """Whether the node is registered with the Manager now."""
        return self._registered

    async def wait_registered(self) -> None:
        """Wait until the node is registered."""
        while not self._registered:
            await self._up.wait()

    def _lose(self, why: str, *, connection: bool) -> None:
        if connection:
            self.outbox.spooling = True
        if self._registered:
            self._registered = False
            self._up = trio.Event()
            logger.info("the link to the Manager is down (%s); registering again", why)
        self._link_changed.set()

    def _channel_or_fail(self) -> Channel:
        if self._channel is None:
            raise TransportError("the reporter is not running")
        return self._channel

    async def _call(
        self, method: UnaryMethod[Any, Any], request: Message, metadata: Metadata = ()
    ) -> Any:
        return await self._channel_or_fail().call_with_metadata(
            method, request, timeout_s=self.spec.timeout_s, metadata=metadata
        )

    async def _installed(self) -> Mapping[str, str]:
        if self.versions is None:
            return {}
        try:
            return await self.versions()
        except Exception as exc:  # a version store we cannot read must not stop reporting
            logger.warning("installed agent versions unknown: %s", exc)
            return {}

    async def _register(self) -> bool:
        lookup = self.facts or partial(host_facts, self.spec.host, self.spec.port)
        facts = await trio.to_thread.run_sync(lookup)
        installed = await self._installed()
        registration = NodeRegistration(
            node_id=self.node_id,
            hostname=facts.hostname,
            ip=facts.ip,
            os=facts.os,
            arch=facts.arch,
            labels=dict(self.labels),
            daemon_version=self.daemon_version,
            agent_version=agent_version_summary(installed.items()),
        )
        announce: Metadata = ()
        if self.grpc_port:
            announce = ((GRPC_PORT_METADATA_KEY, str(self.grpc_port)),)
        try:
            reply = await self._call(
                ManagerService.RegisterNode, registration_to_message(registration), announce
            )
        except RemoteError as exc:
            code = "D2001" if disposition(exc.status) is Disposition.RECONNECT else "D2002"
            self._error(code, f"RegisterNode with the Manager at {self.spec.address} failed: {exc}")
            return False
        except TransportError as exc:
            self._error("D2001", f"cannot reach the Manager at {self.spec.address}: {exc}")
            return False
        if not reply.response.success:
            self._error(
                "D2002", f"the Manager refused the registration: {reply.response.message!r}"
            )
            return False
        self._registered = True
        self._failing = None
        self._counters.registrations += 1
        self.outbox.spooling = False
        self._up.set()
        self._sync.registered(trio.current_time())
        self._sync_wake.set()
        logger.info(
            "registered as node %s with the Manager at %s (ip %s)",
            self.node_id,
            self.spec.address,
            facts.ip or "unknown",
        )
        return True

    async def _heartbeat(self) -> None:
        request = manager_pb2.HeartbeatRequest(node_id=self.node_id, timestamp=int(self.wall()))
        try:
            reply = await self._call(ManagerService.Heartbeat, request)
        except (RemoteError, TransportError) as exc:
            self._counters.heartbeat_failures += 1
            status = exc.status if isinstance(exc, RemoteError) else None
            what = disposition(status) if status is not None else Disposition.RECONNECT
            if what is Disposition.DROP:
                self._counters.invalid += 1
                self._error("D2001", f"the Manager rejected a heartbeat: {exc}")
            elif what is Disposition.REGISTER:
                self._lose(f"heartbeat: {exc}", connection=False)
            else:
                self._error("D2001", f"heartbeat to the Manager at {self.spec.address}: {exc}")
                self._lose(str(exc), connection=True)
            return
        metadata = reply.initial_metadata + reply.trailing_metadata
        if not reply.response.success or answer_disposition(True, "", metadata) is not None:
            self._counters.heartbeat_failures += 1
            self._lose(f"heartbeat answered {reply.response.message!r}", connection=False)
            return
        self._counters.heartbeats += 1

    async def _link_loop(self) -> None:
        attempt = 0
        deadline = 0.0
        while True:
            if not self._registered:
                if not await self._register():
                    await trio.sleep(self.backoff.delay(attempt, self.rand()))
                    attempt += 1
                    continue
                attempt = 0
                deadline = trio.current_time()  # the first heartbeat at once
            self._link_changed = trio.Event()
            with trio.move_on_at(deadline):
                await self._link_changed.wait()
            now = trio.current_time()
            if self._registered and now >= deadline:
                await self._heartbeat()
                deadline = next_tick(deadline, self.spec.heartbeat_interval_s, trio.current_time())

    # --- delivery -------------------------------------------------------------------------

    async def _deliver(self, pending: Pending, refusals: int) -> Disposition | None:
        """Send one report; None when it is done with (delivered)."""
        report = pending.report
        method: UnaryMethod[Any, Any] = (
            ManagerService.ReportMetrics
            if report.kind is EntryKind.METRICS
            else DaemonService.SyncAgentStates
        )
        what = "ReportMetrics" if report.kind is EntryKind.METRICS else "SyncAgentStates"
        try:
            request = method.request_type.FromString(report.payload)
        except Exception as exc:  # a damaged spool file: protobuf's DecodeError
            self._error("D2003", f"a spooled {what} cannot be decoded ({exc}); dropped")
            return Disposition.DROP
        try:
            reply = await self._call(method, request)
        except (RemoteError, TransportError) as exc:
            status = exc.status if isinstance(exc, RemoteError) else None
            failed = disposition(status) if status is not None else Disposition.RECONNECT
            code = "D2001" if failed is Disposition.RECONNECT else "D2003"
            self._error(code, f"{what} to the Manager at {self.spec.address}: {exc}")
            if failed is Disposition.DROP:
                self._counters.invalid += 1
            return failed
        metadata = reply.initial_metadata + reply.trailing_metadata
        response = reply.response
        verdict = answer_disposition(
            response.success, response.message, metadata, refusals=refusals
        )
        if response.success:
            if report.kind is EntryKind.METRICS:
                self._counters.reports += 1
            else:
                self._counters.syncs += 1
            if verdict is Disposition.REGISTER:  # delivered; register before the next one
                self._lose("the Manager asked for a registration", connection=False)
            return None
        if verdict is Disposition.DROP:
            self._counters.refused += 1
        self._error("D2003", f"the Manager refused a {what}: {response.message!r}")
        return verdict

    async def _send_one(self, pending: Pending, refusals: int) -> Disposition | None:
        verdict = await self._deliver(pending, refusals)
        if verdict is None or verdict is Disposition.DROP:
            await self.outbox.done(pending)
        elif verdict is Disposition.RECONNECT:
            self._lose("a report could not be delivered", connection=True)
        elif verdict is Disposition.REGISTER:
            self._lose("the Manager does not know this node", connection=False)
        return verdict

    async def _send_loop(self) -> None:
        attempt = 0
        refusals: tuple[int, int] = (0, 0)  # (seq, refusals of that report)
        while True:
            await self.outbox.wait_nonempty()
            if not self._registered:
                await self.outbox.spill()
                await self.wait_registered()
                continue
            if self.outbox.in_memory > MAX_MEMORY:
                await self.outbox.spill()
            pending = await self.outbox.head()
            if pending is None:
                continue
            seq = pending.report.seq
            count = refusals[1] if refusals[0] == seq else 0
            verdict = await self._send_one(pending, count)
            if verdict is Disposition.RETRY:
                refusals = (seq, count + 1)
                await trio.sleep(self.backoff.delay(attempt, self.rand()))
                attempt += 1
            elif verdict is not Disposition.RECONNECT:
                attempt = 0

    async def _shutdown(self) -> None:
        """Persist what waits in memory, then deliver what can be within the grace."""
        await self.outbox.spill()
        with trio.move_on_after(self.shutdown_grace_s):
            while self._registered and len(self.outbox):
                pending = await self.outbox.head()
                if pending is None:
                    break
                verdict = await self._send_one(pending, 0)
                if verdict is not None and verdict is not Disposition.DROP:
                    break
        waiting = len(self.outbox)
        if waiting:
            logger.info("%d report(s) stay in the spool for the next start", waiting)

    # --- intake ---------------------------------------------------------------------------

    async def _put(self, kind: EntryKind, request: Message) -> None:
        await self.outbox.put(kind, request.SerializeToString(), created=self.wall())

    async def _metrics_loop(self, results: trio.MemoryReceiveChannel[Metrics]) -> None:
        async def put(request: manager_pb2.ReportMetricsRequest) -> None:
            await self._put(EntryKind.METRICS, request)

        await batch_metrics(
            results,
            node_id=self.node_id,
            put=put,
            extras=self.extras,
            linger_s=self.linger_s,
            error=lambda message: self._error("D2003", message),
        )

    async def _events(self, events: AsyncIterator[AgentEvent]) -> None:
        async for event in events:
            if event.old is not event.new or event.dropped:
                self._sync.changed(trio.current_time())
                self._sync_wake.set()

    async def _states_loop(self, agents: AgentSource) -> None:
        seen: dict[str, float] = {}
        self._sync.synced(trio.current_time())
        self._sync.registered(trio.current_time())  # the first sync at once
        events = agents.subscribe()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._events, events)
                while True:
                    self._sync_wake = trio.Event()
                    with trio.move_on_at(self._sync.due_at()):
                        await self._sync_wake.wait()
                    if trio.current_time() < self._sync.due_at():
                        continue
                    self._sync.synced(trio.current_time())
                    installed = await self._installed()
                    records, seen = agent_states(
                        agents.statuses(), versions=installed, seen=seen, now=self.wall()
                    )
                    request = daemon_pb2.SyncAgentStatesRequest(
                        node_id=self.node_id, states=[agent_state_to_message(r) for r in records]
                    )
                    await self._put(EntryKind.STATES, request)
        finally:
            events.close()

    # --- the service ----------------------------------------------------------------------

    def _client_tls(self) -> ClientTls | None:
        files = self.tls
        if files is None:
            return None
        return ClientTls(
            server_ca=files.ca,
            cert_chain=files.cert_chain,
            private_key=files.private_key,
            server_name=files.server_name,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Talk to the Manager until cancelled; started once the spool is open.

        Start with ``await nursery.start(reporter.run)``. Starting never waits for the
        Manager: an unreachable Manager is retried in the background.

        Raises:
            OSError: The spool directory cannot be used.
        """
        subscription = (
            self.metrics.subscribe(max_buffer_size=256)
            if self.metrics is not None
            else contextlib.nullcontext(None)
        )
        with subscription as results:
            await self.outbox.open(now=self.wall())
            loop = open_grpc_loop() if self.open_loop else contextlib.nullcontext()
            async with (
                loop,
                open_channel(
                    self.spec.address, tls=self._client_tls(), options=channel_options(self.spec)
                ) as channel,
            ):
                self._channel = channel
                try:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._link_loop)
                        nursery.start_soon(self._send_loop)
                        if results is not None:
                            nursery.start_soon(self._metrics_loop, results)
                        if self.agents is not None:
                            nursery.start_soon(self._states_loop, self.agents)
                        logger.info(
                            "reporting to the Manager at %s as node %s (%s)",
                            self.spec.address,
                            self.node_id,
                            "TLS" if self.tls is not None else "plaintext",
                        )
                        task_status.started()
                finally:
                    with trio.CancelScope(shield=True):
                        await self._shutdown()
                    self._channel = None
                    self._registered = False


def build_reporter(
    config: DaemonConfig,
    agents: AgentSource,
    metrics: MetricSource | None,
    updates: DaemonUpdates | None = None,
    *,
    daemon_version: str = "",
    open_loop: bool = True,
) -> Reporter | None:
    """The daemon's Manager client for a configuration, or None without ``manager:``.

    Args:
        config: The daemon's configuration.
        agents: The supervisor.
        metrics: The collectors (they run whenever ``manager:`` is present).
        updates: The update service, for the installed agent versions.
        daemon_version: The daemon's version.
        open_loop: As for :class:`Reporter`.

    Returns:
        The reporter, not yet running.

    Raises:
        ConfigError: The ``manager`` section is invalid or a TLS file is missing or
            unreadable (never a fall-back to plaintext).
        OSError: The node id file cannot be read or written.
    """
    spec = manager_config(config)
    if spec is None:
        return None
    versions: VersionSource | None = None
    if updates is not None:
        read = updates.installed_versions  # by agent id, as the readers look them up

        async def installed() -> Mapping[str, str]:
            return await trio.to_thread.run_sync(read)

        versions = installed
    daemon = config.daemon
    return Reporter(
        spec,
        node_id=node_id(daemon.id, daemon.work_dir),
        work_dir=daemon.work_dir,
        agents=agents,
        metrics=metrics,
        labels=dict(getattr(daemon, "labels", {})),
        daemon_version=daemon_version,
        versions=versions,
        grpc_port=daemon.grpc_port or None,  # 0: no TCP listener
        open_loop=open_loop,
    )
