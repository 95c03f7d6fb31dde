"""The supervisor: the seed's MultiAgentManager, as a Trio service.

:class:`Supervisor` owns one task per agent (:class:`~supervisor._runner.AgentRunner`),
each owning at most one process. ``await nursery.start(supervisor.run)`` starts it (the
enabled agents are started, or adopted from an earlier run) and returns once it is up; the
public methods then operate on agents. Cancelling the scope it runs in ends it: every
agent is stopped, gracefully and concurrently, unless ``run(leave_running=True)`` was
asked, in which case agents keep running and their records are saved to the
:class:`~supervisor.AgentStore`, so that the next run adopts them (seed 3.1.2).

:func:`open_supervisor` wraps this in an ``async with`` block.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from functools import partial
from types import MappingProxyType

import trio

from ._adoption import choose, spawned_with, stop_unconfigured, stop_unconfigured_record
from ._errors import SupervisorClosedError
from ._events import EventHub, EventSubscription
from ._exits import ExitWatcher
from ._health import HealthMonitor, ResourceAlert, ResourceSample, socket_dir_for
from ._leftovers import Found, find_agents, stop_processes
from ._lifecycle import AgentState
from ._persist import AgentRecord, AgentStore, spec_digest
from ._process import (
    OrphanReaper,
    identify,
    owner_marker,
    set_child_subreaper,
)
from ._registry import Registry, ReloadPlan, plan_reload
from ._requests import Adopt, Hold, Replace, Request, Restart, Start, Stop, Unhealthy, Update
from ._runner import AgentRunner, RunnerContext, wall_clock
from ._spec import DEFAULT_WORK_DIR, AgentSpec, AgentType
from ._status import AgentInfo, Outcome, SupervisorStatistics

__all__ = ["Supervisor", "open_supervisor"]

logger = logging.getLogger("supervisor")

#: Log files are checked for rotation on this shared tick (one timer for all agents).
LOG_CHECK_INTERVAL_S = 10.0
#: At most this many spawns are in flight at once (each forks from a worker thread).
SPAWN_CONCURRENCY = 4
#: State-file writes are coalesced over this window.
STATE_WRITE_DELAY_S = 0.05


class Supervisor:
    """Supervises a set of agents.

    Args:
        agents: The agents to supervise.
        work_dir: Runtime directory (logs, default agent work dirs, sockets).
        store: Where agents' records are kept across runs, for adoption (see
            :class:`AgentStore`); None keeps nothing.
        subreaper: Become the child subreaper so that orphaned descendants of agents are
            re-parented to us, found at stop time and reaped. Only enable it when this
            process spawns no other children it waits for through ``waitpid`` outside
            Trio.
        log_check_interval_s: How often log files are checked for rotation (one shared
            timer for all agents; ``math.inf`` disables the check).
        health_checks: Run the health checks of ``health_check`` (heartbeat and notify
            sockets, resource sampling, probes). False supervises processes only.
        on_alert: Called with each :class:`ResourceAlert` (also on the event stream);
            must not block.
        socket_dir: Where the heartbeat and notify sockets go; defaults to
            ``{work_dir}/run`` (or a short private directory under ``/tmp`` when that
            path is too long for a Unix socket).
    """

    def __init__(
        self,
        agents: Sequence[AgentSpec] = (),
        *,
        work_dir: str = DEFAULT_WORK_DIR,
        store: AgentStore | None = None,
        subreaper: bool = False,
        log_check_interval_s: float = LOG_CHECK_INTERVAL_S,
        health_checks: bool = True,
        on_alert: Callable[[ResourceAlert], None] | None = None,
        socket_dir: str | None = None,
    ) -> None:
        self.work_dir = os.path.abspath(work_dir)
        self.store = store
        self._subreaper = subreaper
        self._log_check_interval_s = log_check_interval_s
        self._hub = EventHub()
        self.reaper: OrphanReaper | None = OrphanReaper() if subreaper else None
        self._ctx = RunnerContext(
            work_dir=self.work_dir,
            publish=self._hub.publish,
            persist=self._mark_dirty,
            owner=owner_marker(self.work_dir),
            reaper=self.reaper,
            note_spawn=getattr(store, "note_spawn", None),
        )
        self.registry = Registry(is_active=self._is_active)
        self._runners: dict[str, AgentRunner] = {}
        self.monitor: HealthMonitor | None = None
        if health_checks:
            self.monitor = self._ctx.observer = HealthMonitor(
                socket_dir=socket_dir or socket_dir_for(self.work_dir),
                publish=self._hub.publish,
                wall=wall_clock,
                on_alert=on_alert,
            )
        for spec in agents:
            self.registry.register(spec)
            self._runners[spec.id] = AgentRunner(spec, self._ctx)
        self._nursery: trio.Nursery | None = None
        self._dirty = trio.Event()
        self._holds: dict[str, int] = {}
        self._journaled = self._ctx.note_spawn is not None

    # -- service ----------------------------------------------------------------------

    @property
    def leave_running(self) -> bool:
        """Whether the agents' processes are left running when :meth:`run` ends.

        Set by ``run(leave_running=...)``; may be changed while running (a daemon whose
        configuration changed its mind about it on reload).
        """
        return not self._ctx.stop_on_exit

    @leave_running.setter
    def leave_running(self, value: bool) -> None:
        self._ctx.stop_on_exit = not value

    async def run(
        self,
        *,
        leave_running: bool = False,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Supervise until cancelled. Signals readiness once the initial starts are done.

        Args:
            leave_running: When cancelled, leave the agents' processes running (their
                records go to the store, for the next run to adopt) instead of stopping
                them.

        Raises:
            StateFileError: the store could not load the records.
            SocketSetupError: the heartbeat or notify socket could not be created.
            RuntimeError: this supervisor is already running.
        """
        if self._nursery is not None:
            raise RuntimeError("this Supervisor is already running")
        self._ctx.spawn_limiter = trio.CapacityLimiter(SPAWN_CONCURRENCY)
        self._ctx.stop_on_exit = not leave_running
        records: dict[str, AgentRecord] = {}
        try:
            if self.store is not None:
                records = dict(self.store.load())
            if self.monitor is not None:
                self.monitor.bind()  # raises SocketSetupError here, not in a group
            if self._subreaper and not set_child_subreaper():
                logger.warning("could not become child subreaper; escaped orphans go to init")
            async with trio.open_nursery() as nursery:
                self._nursery = self._ctx.nursery = nursery
                exits = self._ctx.exits = ExitWatcher()
                await nursery.start(exits.run)  # serves until the last runner ended
                if self.reaper is not None:
                    await nursery.start(self.reaper.run)
                nursery.start_soon(self._rotate_logs)
                if self.monitor is not None:
                    await nursery.start(self.monitor.run)
                if self.store is not None:
                    nursery.start_soon(self._write_state_loop, self.store)
                for runner in self._runners.values():
                    await nursery.start(runner.run)
                await self._initial_start(records)
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = self._ctx.nursery = self._ctx.exits = None
            if self.monitor is not None:
                self.monitor.close()
            self._hub.close()
            if self.store is not None:
                try:
                    self.store.save(self._records())
                except Exception as exc:
                    logger.error("%s", exc)

    async def _initial_start(self, records: dict[str, AgentRecord]) -> None:
        # What runs, whatever the records say: every live process with our markers.
        found = await trio.to_thread.run_sync(find_agents, self._ctx.owner)
        async with trio.open_nursery() as nursery:
            for agent_id, runner in self._runners.items():
                nursery.start_soon(
                    self._bring_up, runner, records.pop(agent_id, None), found.pop(agent_id, None)
                )
            for agent_id, entry in found.items():
                nursery.start_soon(stop_unconfigured, agent_id, entry)
            for agent_id, record in records.items():
                if record.process is not None and identify(record.process.pid) is not None:
                    # Spawned before processes carried the owner marker.
                    nursery.start_soon(stop_unconfigured_record, agent_id, record)

    async def _bring_up(
        self, runner: AgentRunner, record: AgentRecord | None, found: Found | None
    ) -> None:
        spec = runner.spec
        desired = "running" if spec.enabled else "stopped"
        if record is not None and record.enabled == spec.enabled:
            # What the user last asked stands, unless the configuration's enabled changed.
            desired = record.desired
        child, strays = choose(record, found, spec, trust_records=self._journaled)
        if strays:
            logger.warning(
                "agent %s: stopping %d process(es) of earlier runs: %s",
                spec.id,
                len(strays),
                ", ".join(map(str, strays)),
            )
            await stop_processes(
                strays, stop_signal=spec.stop_signal, timeout_s=spec.stop_timeout_s
            )
        # Restarts count across runs, from the records and from the markers of what runs
        # (a spawn the last run could not record carries its count); a start now of an
        # agent that had run before, and died while nobody watched, is one more.
        known = max(
            record.restart_count if record is not None else 0,
            found.restart_count if found is not None else 0,
        )
        ran_before = found is not None or (
            record is not None
            and (record.spawns > 0 or bool(record.run_id) or record.restart_count > 0)
        )
        if record is not None:
            runner.spawns = record.spawns
        respawn = child is None and ran_before and desired == "running"
        runner.machine.restart_count = known + int(respawn)
        if child is not None:
            await runner.request(Adopt(child))
            logger.info("agent %s: adopted running pid %d", spec.id, child.pid)
            if desired == "stopped":
                await runner.request(Stop())
            elif spawned_with(record, found, child) != spec_digest(spec):
                logger.info("agent %s: spec changed while we were away; restarting", spec.id)
                await runner.request(Restart())
            else:
                runner.desired = desired
            return
        runner.desired = desired
        if desired == "running":
            await runner.request(Start())

    async def _rotate_logs(self) -> None:
        while True:
            await trio.sleep(self._log_check_interval_s)
            for runner in list(self._runners.values()):
                try:
                    runner.log.rotate_if_needed(running=runner.child is not None)
                except OSError as exc:
                    logger.warning("agent %s: log rotation failed: %s", runner.spec.id, exc)

    def _mark_dirty(self) -> None:
        self._dirty.set()

    async def _write_state_loop(self, store: AgentStore) -> None:
        while True:
            await self._dirty.wait()
            await trio.sleep(STATE_WRITE_DELAY_S)
            self._dirty = trio.Event()
            try:
                # Snapshot here, in the Trio thread; only the fsyncs go to a worker thread.
                # (Reading the identities there too measured worse: that thread then holds
                # the GIL long enough to delay restarts at 300 agents.)
                records = self._records()
                await trio.to_thread.run_sync(store.save, records)
            except Exception as exc:
                logger.error("%s", exc)

    def _records(self) -> dict[str, AgentRecord]:
        records = {}
        for agent_id, runner in self._runners.items():
            child = runner.child
            # Read the identity afresh: the agent may have exec'd since it was spawned.
            identity = identify(child.pid) if child is not None and not child.exited else None
            records[agent_id] = AgentRecord(
                desired=runner.desired,
                process=identity,
                run_id=child.run_id if child is not None else runner.last_run_id,
                digest=runner.digest,
                restart_count=runner.machine.restart_count,
                enabled=runner.spec.enabled,
                spawns=runner.spawns,
            )
        return records

    # -- agents -----------------------------------------------------------------------

    def _is_active(self, agent_id: str) -> bool:
        runner = self._runners.get(agent_id)
        return runner is not None and runner.active

    def _runner(self, agent_id: str) -> AgentRunner:
        self.registry.get(agent_id)  # raises UnknownAgentError
        if self._nursery is None:
            raise SupervisorClosedError("the supervisor is not running")
        return self._runners[agent_id]

    async def start(self, agent_id: str) -> Outcome:
        """Start an agent (also a disabled one); clears ``failed`` and the retry count.

        Returns once the process is spawned (state ``starting``) or could not be.

        Raises:
            UnknownAgentError: no such agent.
            SupervisorClosedError: the supervisor is not running.
        """
        return await self._runner(agent_id).request(Start())

    async def stop(self, agent_id: str, *, graceful: bool = True) -> Outcome:
        """Stop an agent and its whole process tree; returns once it is gone.

        Args:
            agent_id: The agent.
            graceful: Send the stop signal and wait ``stop_timeout`` before SIGKILL;
                False sends SIGKILL at once.

        Raises:
            UnknownAgentError: no such agent.
            SupervisorClosedError: the supervisor is not running.
        """
        return await self._runner(agent_id).request(Stop(graceful))

    async def restart(self, agent_id: str) -> Outcome:
        """Stop an agent gracefully (if running) and start it again at once.

        Raises:
            UnknownAgentError: no such agent.
            SupervisorClosedError: the supervisor is not running.
        """
        return await self._runner(agent_id).request(Restart())

    async def report_unhealthy(self, agent_id: str, reason: str) -> Outcome:
        """Ask for recovery of an unhealthy agent through its restart policy.

        This is the seam for health checks: the agent is stopped and restarted with the
        same backoff and retry budget as after a crash; ``reason`` becomes its last error.
        """
        return await self._runner(agent_id).request(Unhealthy(reason))

    async def _all(self, request: Request, ids: Iterable[str]) -> dict[str, Outcome]:
        results: dict[str, Outcome] = {}

        async def one(agent_id: str) -> None:
            try:
                results[agent_id] = await self._runner(agent_id).request(request)
            except SupervisorClosedError as exc:
                results[agent_id] = Outcome(
                    agent_id, False, self._runners[agent_id].state, str(exc)
                )

        async with trio.open_nursery() as nursery:
            for agent_id in ids:
                nursery.start_soon(one, agent_id)
        return {agent_id: results[agent_id] for agent_id in self._runners if agent_id in results}

    async def start_all(self, *, include_disabled: bool = False) -> dict[str, Outcome]:
        """Start every enabled agent concurrently; return each one's outcome."""
        ids = [s.id for s in self.registry.list() if s.enabled or include_disabled]
        return await self._all(Start(), ids)

    async def stop_all(self, *, graceful: bool = True) -> dict[str, Outcome]:
        """Stop every agent concurrently; return each one's outcome."""
        return await self._all(Stop(graceful), [s.id for s in self.registry.list()])

    def status(self, agent_id: str) -> AgentInfo:
        """A snapshot of one agent.

        Raises:
            UnknownAgentError: no such agent.
        """
        self.registry.get(agent_id)
        return self._info(self._runners[agent_id])

    def statuses(self) -> list[AgentInfo]:
        """Snapshots of every agent, in registration order."""
        return [self._info(self._runners[spec.id]) for spec in self.registry.list()]

    def list_by_type(self, agent_type: AgentType) -> list[AgentInfo]:
        """Snapshots of the agents of one type."""
        agents = self.registry.list_by_type(agent_type)
        return [self._info(self._runners[spec.id]) for spec in agents]

    def _info(self, runner: AgentRunner) -> AgentInfo:
        if self.monitor is None:
            return runner.info()
        health = self.monitor.snapshot(runner.spec.id, trio.current_time())
        info = runner.info(health)
        if health is None or (health.last_heartbeat is None and health.version is None):
            return info
        beat = health.last_heartbeat
        return replace(
            info,
            last_heartbeat=wall_clock(beat) if beat is not None else None,
            version=health.version,
        )

    async def wait_state(self, agent_id: str, *states: AgentState) -> AgentInfo:
        """Wait until the agent is in one of ``states``; return its snapshot.

        Raises:
            UnknownAgentError: no such agent.
        """
        self.registry.get(agent_id)
        runner = self._runners[agent_id]
        await runner.wait_state(frozenset(states))
        return self._info(runner)

    def subscribe(self, max_buffer: int = 1024) -> EventSubscription:
        """Follow state changes from now on (``async with`` / ``async for``)."""
        return self._hub.subscribe(max_buffer)

    def metrics(self, agent_id: str, seconds: float) -> list[ResourceSample]:
        """An agent's resource samples of the last ``seconds`` (the seed's GetAgentMetrics).

        Samples are taken every ``health_check.interval`` while the agent runs and kept for
        an hour (at most 720). Each is the whole process tree's CPU percent (100 per core)
        and resident bytes; ``at`` is wall-clock time, oldest first.

        Raises:
            UnknownAgentError: no such agent.
            ValueError: ``seconds`` is negative.
        """
        self.registry.get(agent_id)
        if self.monitor is None:
            return []
        now = trio.current_time()
        offset = wall_clock(now) - now
        samples = self.monitor.history(agent_id, now, seconds)
        return [sample._replace(at=sample.at + offset) for sample in samples]

    def log_position(self, agent_id: str) -> int:
        """A mark in the agent's output (bytes so far, rotations included; only grows).

        Raises:
            UnknownAgentError: no such agent.
        """
        self.registry.get(agent_id)
        return self._runners[agent_id].log.position()

    def tail_since(self, agent_id: str, position: int, lines: int = 100) -> list[str]:
        """The last lines the agent wrote after :meth:`log_position` gave ``position``.

        Raises:
            UnknownAgentError: no such agent.
            ValueError: ``lines`` out of range (1 to 1000).
        """
        self.registry.get(agent_id)
        return self._runners[agent_id].log.tail_since(position, lines)

    def tail(self, agent_id: str, lines: int = 100) -> list[str]:
        """The last lines of an agent's output (the seed's GetAgentLogs).

        Args:
            agent_id: The agent.
            lines: 1 to 1000 (default 100).

        Raises:
            UnknownAgentError: no such agent.
            ValueError: ``lines`` out of range.
        """
        self.registry.get(agent_id)
        return self._runners[agent_id].log.tail(lines)

    # -- registry changes ---------------------------------------------------------------

    async def add(self, spec: AgentSpec, *, start: bool = True) -> Outcome:
        """Register a new agent while running, and start it if enabled and ``start``.

        Raises:
            DuplicateAgentError: the id is taken.
            SupervisorClosedError: the supervisor is not running.
        """
        if self._nursery is None:
            raise SupervisorClosedError("the supervisor is not running")
        self.registry.register(spec)
        runner = AgentRunner(spec, self._ctx)
        self._runners[spec.id] = runner
        await self._nursery.start(runner.run)
        if start and spec.enabled:
            return await runner.request(Start())
        runner.desired = "stopped"
        self._mark_dirty()
        return runner.outcome()

    async def remove(self, agent_id: str) -> Outcome:
        """Stop an agent and unregister it.

        Raises:
            UnknownAgentError: no such agent.
        """
        runner = self._runner(agent_id)
        outcome = await runner.request(Stop())
        self.registry.unregister(agent_id)
        runner.scope.cancel()
        del self._runners[agent_id]
        self._mark_dirty()
        return outcome

    async def reload(self, agents: Sequence[AgentSpec]) -> ReloadPlan:
        """Apply a re-read configuration: add, remove, restart changed, update in place.

        Unchanged agents are not touched. Returns the plan that was applied.

        Raises:
            SupervisorClosedError: the supervisor is not running.
        """
        plan = plan_reload(self.registry.list(), agents)
        async with trio.open_nursery() as nursery:
            for agent_id in plan.remove:
                nursery.start_soon(self.remove, agent_id)
            for spec in plan.add:
                nursery.start_soon(self.add, spec)
            for spec in plan.restart:
                self.registry.replace(spec)
                nursery.start_soon(self._runners[spec.id].request, Replace(spec))
            for spec in plan.update:
                self.registry.replace(spec)
                nursery.start_soon(self._runners[spec.id].request, Update(spec))
        return plan

    @contextlib.contextmanager
    def hold_restarts(self, agent_id: str) -> Iterator[None]:
        """No automatic restart of the agent while the context is entered (holds nest).

        While held, every exit of the agent's process is final (``stopped`` or
        ``failed``) and an unhealthy verdict restarts nothing: the holder decides what
        happens next. An updater holds an agent during an update's trial this way.

        Raises:
            UnknownAgentError: no such agent.
        """
        runner = self._runner(agent_id)
        self._holds[agent_id] = self._holds.get(agent_id, 0) + 1
        if self._holds[agent_id] == 1:
            runner.post(Hold(True))
        try:
            yield
        finally:
            self._holds[agent_id] -= 1
            if not self._holds[agent_id]:
                del self._holds[agent_id]
                with contextlib.suppress(SupervisorClosedError):
                    runner.post(Hold(False))

    def statistics(self) -> SupervisorStatistics:
        """How many agents are in each state, and how many orphans were reaped."""
        counts = dict.fromkeys(AgentState, 0)
        for runner in self._runners.values():
            counts[runner.state] += 1
        return SupervisorStatistics(
            agents=len(self._runners),
            by_state=MappingProxyType(counts),
            orphans_reaped=self.reaper.reaped if self.reaper else 0,
            health=self.monitor.statistics() if self.monitor else None,
        )


@contextlib.asynccontextmanager
async def open_supervisor(
    agents: Sequence[AgentSpec] = (),
    *,
    work_dir: str = DEFAULT_WORK_DIR,
    store: AgentStore | None = None,
    leave_running: bool = False,
    subreaper: bool = False,
    log_check_interval_s: float = LOG_CHECK_INTERVAL_S,
    health_checks: bool = True,
    on_alert: Callable[[ResourceAlert], None] | None = None,
    socket_dir: str | None = None,
) -> AsyncIterator[Supervisor]:
    """Run a :class:`Supervisor` for the duration of an ``async with`` block.

    Leaving the block stops every agent, or leaves them running with
    ``leave_running=True``. The other arguments are those of :class:`Supervisor`. A
    start-up failure (:class:`StateFileError`, :class:`SocketSetupError`) is raised as
    itself from ``async with``.

    Example::

        async with open_supervisor([AgentSpec(id="web", binary_path="/usr/bin/web")]) as sup:
            await sup.wait_state("web", AgentState.RUNNING)
    """
    supervisor = Supervisor(
        agents,
        work_dir=work_dir,
        store=store,
        subreaper=subreaper,
        log_check_interval_s=log_check_interval_s,
        health_checks=health_checks,
        on_alert=on_alert,
        socket_dir=socket_dir,
    )
    failure: Exception | None = None
    async with trio.open_nursery() as nursery:
        try:
            await nursery.start(partial(supervisor.run, leave_running=leave_running))
        except Exception as exc:  # start-up failed and nothing runs: raise it unwrapped
            failure = exc
        else:
            try:
                yield supervisor
            finally:
                nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure
