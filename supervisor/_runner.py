"""The IO shell around one agent's :class:`~supervisor._machine.AgentMachine`.

One :class:`AgentRunner` task per agent owns at most one process at a time, its machine
and its log: no other object changes them. It is a short loop: wait for a message in its
inbox, or for the machine's next deadline; feed the machine; perform the actions it
returns (spawn, kill).

Every outside change is a frozen request in the closed union :data:`Request` (``Start``,
``Stop``, ``Restart``, ``Unhealthy``, ``Ready``, ``Adopt``, ``Replace``, ``Update``,
``Hold``), dispatched with ``match`` in one place (:meth:`AgentRunner._handle`). Requests
are handled one at a time, so a stop always finishes before the next start begins, and a
reload's restart of a changed agent is one atomic :class:`Replace`.

Each process's exit is noticed by the supervisor's one :class:`~supervisor._exits.ExitWatcher`
(all pidfds in one epoll set, one task), which posts it to the inbox; it serves until the
last runner has ended, so that, when the supervisor shuts down, the runner can still wait
for its process to exit, or forget it deliberately and leave the process running. (A
process without a pidfd has a watcher task of its own, in a shielded scope, instead.)
Every exit, seen by the watcher or at the end of a kill, is reported
through :meth:`AgentRunner._report_exit`, which handles each process once; an exit that
nobody asked for (a crash) first clears what is left of the agent's tree, so that a
replacement never starts beside its predecessor's children.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from ._errors import InvalidTransitionError, SupervisorClosedError
from ._events import AgentEvent
from ._exits import ExitWatcher
from ._health import HealthSnapshot
from ._leftovers import stop_leftovers
from ._lifecycle import AgentState, is_active
from ._logs import AgentLog
from ._machine import Action, AgentMachine, ExitStatus, Kill, Spawn, StateChange
from ._persist import AgentRecord, spec_digest
from ._process import (
    ENV_AGENT_ID,
    ENV_BINARY,
    ENV_OWNER,
    ENV_RESTARTS,
    ENV_RUN_ID,
    ENV_SPEC,
    Child,
    OrphanReaper,
    PrepareError,
    file_identity,
    spawn,
    terminate_tree,
)
from ._requests import (
    Adopt,
    Hold,
    Ready,
    Replace,
    Request,
    Restart,
    Start,
    Stop,
    Unhealthy,
    Update,
)
from ._spec import AgentSpec
from ._status import AgentInfo, Outcome
from ._view import ProcessObserver, ProcessView

__all__ = ["AgentRunner", "RunnerContext", "wall_clock"]


logger = logging.getLogger("supervisor")


@dataclass(slots=True)
class RunnerContext:
    """What runners share, provided by the supervisor."""

    work_dir: str
    publish: Callable[[AgentEvent], None]
    persist: Callable[[], None]
    owner: str = ""
    note_spawn: Callable[[str, AgentRecord], None] | None = None
    reaper: OrphanReaper | None = None
    stop_on_exit: bool = True
    spawn_limiter: trio.CapacityLimiter | None = None
    nursery: trio.Nursery | None = None
    base_env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    observer: ProcessObserver | None = None
    exits: ExitWatcher | None = None

    def wall(self, monotonic: float | None) -> float | None:
        """Convert a Trio clock reading (or None) into wall-clock seconds since the epoch."""
        return None if monotonic is None else wall_clock(monotonic)


def wall_clock(monotonic: float) -> float:
    """Convert a Trio clock reading into wall-clock seconds since the epoch."""
    return time.time() + (monotonic - trio.current_time())


_STARTED = frozenset({AgentState.STARTING, AgentState.RUNNING})
_STOPPED = frozenset({AgentState.STOPPED})


@dataclass(slots=True)
class _Pending:
    request: Request
    done: trio.Event = field(default_factory=trio.Event)
    error: Exception | None = None
    goal: frozenset[AgentState] | None = None


@dataclass(frozen=True, slots=True)
class _Exited:
    child: Child


class AgentRunner:
    """Runs one agent: owns its machine, its process and its log.

    Args:
        spec: The agent.
        context: Shared supervisor facilities.
    """

    __slots__ = (
        "_changed",
        "_closed",
        "_ctx",
        "_generation",
        "_queue",
        "_spec",
        "_wakeup",
        "_watchers",
        "child",
        "created_at",
        "desired",
        "digest",
        "last_run_id",
        "log",
        "machine",
        "scope",
        "spawns",
        "updated_at",
    )

    def __init__(self, spec: AgentSpec, context: RunnerContext) -> None:
        self.spec = spec
        self._ctx = context
        self.machine = AgentMachine(spec.restart, spec.start_seconds_s)
        self._generation = 0
        self.child: Child | None = None
        #: The run marker of the latest process (kept after it exited).
        self.last_run_id = ""
        #: Processes started for this agent so far, across supervisor runs.
        self.spawns = 0
        self.log = self._make_log(spec)
        self.desired = "running" if spec.enabled else "stopped"
        self.created_at = time.time()
        self.updated_at = self.created_at
        # A list and a parking lot: a memory channel (or a deque) per agent costs more
        # memory, and the queue rarely holds more than one message.
        self._queue: list[_Pending | _Exited] = []
        self._wakeup = trio.lowlevel.ParkingLot()
        self._closed = False
        self._watchers: dict[int, trio.CancelScope] = {}  # children without a pidfd
        self._changed: trio.lowlevel.ParkingLot | None = None  # made by wait_state
        self.scope = trio.CancelScope()
        self._publish_view()

    @property
    def spec(self) -> AgentSpec:
        """The agent's spec."""
        return self._spec

    @spec.setter
    def spec(self, spec: AgentSpec) -> None:
        self._spec = spec
        self.digest = spec_digest(spec)  # computed once per spec: records need it often

    def _make_log(self, spec: AgentSpec) -> AgentLog:
        path = spec.log.file or os.path.join(self._ctx.work_dir, "logs", f"{spec.id}.log")
        return AgentLog(path, spec.log.max_bytes, spec.log.backups)

    @property
    def work_dir(self) -> str:
        """The agent's working directory."""
        return self.spec.work_dir or os.path.join(self._ctx.work_dir, "agents", self.spec.id)

    @property
    def state(self) -> AgentState:
        """The agent's lifecycle state."""
        return self.machine.state

    # -- requests (called from other tasks) ---------------------------------------

    async def request(self, request: Request) -> Outcome:
        """Queue a request and wait until it has been handled; return the outcome.

        Raises:
            SupervisorClosedError: the runner is not running.
        """
        pending = _Pending(request)
        self._post(pending)
        await pending.done.wait()
        return self.outcome(pending.error, pending.goal)

    def post(self, request: Request) -> None:
        """Queue a request without waiting for it (from synchronous callbacks).

        Raises:
            SupervisorClosedError: the runner is not running.
        """
        self._post(_Pending(request))

    def _post(self, message: _Pending | _Exited) -> None:
        if self._closed:
            raise SupervisorClosedError(f"agent {self.spec.id!r} is not supervised")
        self._queue.append(message)
        self._wakeup.unpark_all()

    def outcome(
        self, error: Exception | None = None, goal: frozenset[AgentState] | None = None
    ) -> Outcome:
        """The agent's current state as an operation result.

        Args:
            error: Why the request was refused, if it was.
            goal: The states in which the operation counts as successful.
        """
        state = self.machine.state
        reached = state in goal if goal is not None else state is not AgentState.FAILED
        ok = error is None and reached
        message = str(error) if error else None
        if message is None and not ok:
            message = self.machine.last_error or f"agent is {state.value}"
        return Outcome(self.spec.id, ok, state, message)

    async def wait_state(self, states: frozenset[AgentState]) -> None:
        """Wait until the agent is in one of ``states``."""
        while self.machine.state not in states:
            if self._changed is None:
                self._changed = trio.lowlevel.ParkingLot()
            await self._changed.park()

    # -- the loop -----------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled; then stop the process or leave it, as configured."""
        exits = self._ctx.exits
        if exits is not None:
            exits.attach()
        with self.scope:
            try:
                task_status.started()
                await self._loop()
            finally:
                self._closed = True
                with trio.CancelScope(shield=True) as cleanup:
                    cleanup.deadline = trio.current_time() + self.spec.stop_timeout_s + 5
                    await self._shutdown()
                for scope in self._watchers.values():
                    scope.cancel()
                if exits is not None:
                    if self.child is not None:
                        self._forget(self.child)
                    exits.detach()
                self._fail_pending()
                if self._ctx.observer is not None:
                    self._ctx.observer.forget(self.view())

    async def _loop(self) -> None:
        while True:
            deadline = self.machine.deadline
            if not self._queue:
                if deadline is None:  # the common idle case: no cancel scope kept alive
                    await self._wakeup.park()
                else:
                    with trio.move_on_at(deadline):
                        await self._wakeup.park()
            message = self._queue.pop(0) if self._queue else None
            if message is None:
                await self._perform(self.machine.tick(trio.current_time()))
            elif isinstance(message, _Exited):
                await self._perform(await self._report_exit(message.child, expected=False))
            else:
                await self._handle(message)

    async def _handle(self, pending: _Pending) -> None:
        now = trio.current_time()
        try:
            match pending.request:
                case Start():
                    self.desired = "running"
                    pending.goal = _STARTED
                    actions = self.machine.request_start(now)
                case Stop(graceful=graceful):
                    self.desired = "stopped"
                    pending.goal = _STOPPED
                    actions = self.machine.request_stop(now, graceful=graceful)
                case Restart():
                    self.desired = "running"
                    pending.goal = _STARTED
                    actions = self.machine.request_restart(now)
                case Unhealthy(reason=reason):
                    actions = self.machine.unhealthy(now, reason)
                case Ready():
                    actions = self.machine.confirm_start(now)
                case Adopt(child=child):
                    actions = self._adopt(child, now)
                case Update(spec=spec):
                    actions = self._update(spec)
                case Replace(spec=spec):
                    pending.goal = await self._replace(spec)
                    actions = []
                case Hold(on=on):
                    actions = self.machine.hold(now) if on else self.machine.release(now)
            await self._perform(actions)
        except InvalidTransitionError as exc:
            pending.error = exc
        finally:
            self._flush()
            pending.done.set()

    async def _replace(self, spec: AgentSpec) -> frozenset[AgentState]:
        """Stop (if active), take the new spec and log, start again if it should run."""
        old = self.spec
        was_active = self.active
        if was_active:
            await self._perform(self.machine.request_stop(trio.current_time()))
        self._update(spec)
        old_log, self.log = self.log, self._make_log(spec)
        # Positions only grow: the same file goes on; another one starts after the old.
        same = old_log.path == self.log.path
        self.log.rotated_bytes = old_log.rotated_bytes if same else old_log.position()
        wanted = was_active or self.desired == "running" or not old.enabled
        if not spec.enabled or not wanted:
            self.desired = "stopped"
            return _STOPPED
        self.desired = "running"
        await self._perform(self.machine.request_start(trio.current_time()))
        return _STARTED

    def _adopt(self, child: Child, now: float) -> list[Action]:
        identity = child.identity
        uptime = max(0.0, time.time() - identity.create_time) if identity else 0.0
        actions = self.machine.adopted(now, child.pid, uptime)  # may refuse: nothing changed
        self.child = child
        self.last_run_id = child.run_id
        self._watch(child)
        self._process_started(now, spawned=False)
        return actions

    def _update(self, spec: AgentSpec) -> list[Action]:
        self.spec = spec
        self.machine.update_settings(spec.restart, spec.start_seconds_s)
        self.log.max_bytes, self.log.backups = spec.log.max_bytes, spec.log.backups
        self._publish_view()  # the monitor reconfigures changed checks in place
        return []

    # -- what the health monitor is told ------------------------------------------

    def view(self) -> ProcessView:
        """The agent as the health monitor sees it."""
        return ProcessView(
            agent_id=self.spec.id,
            pid=self.machine.pid or 0,
            generation=self._generation,
            state=self.machine.state,
            checks=self.spec.health_check,
            post=self.post,
        )

    def _publish_view(self) -> None:
        if self._ctx.observer is not None:
            self._ctx.observer.update(self.view())

    def _process_started(self, now: float, *, spawned: bool) -> None:
        self._generation += 1
        if self._ctx.observer is not None:
            self._ctx.observer.process_started(self.view(), now, spawned=spawned)

    def _exited(self, status: ExitStatus) -> list[Action]:
        now = trio.current_time()
        actions = self.machine.exited(now, status)
        if self._ctx.observer is not None:
            stopped = self.machine.state is AgentState.STOPPED
            self._ctx.observer.process_exited(self.view(), now, status.describe(), stopped=stopped)
        return actions

    async def _perform(self, actions: list[Action]) -> None:
        queue: deque[Action] = deque(actions)
        while queue:
            self._flush()  # "running -> stopping" is told when the stop begins, not ends
            action = queue.popleft()
            if isinstance(action, Spawn):
                queue.extend(await self._spawn())
            elif isinstance(action, Kill):
                queue.extend(await self._kill(action.graceful))
            self._flush()
        self._flush()

    async def _spawn(self) -> list[Action]:
        limiter = self._ctx.spawn_limiter
        if limiter is None:
            return await self._spawn_now()
        # A slot first, then the environment: at start-up hundreds of spawns wait here,
        # and an environment built by each while it waits would be garbage held at once.
        async with limiter:
            return await self._spawn_now()

    async def _spawn_now(self) -> list[Action]:
        spec = self.spec
        run_id = os.urandom(16).hex()
        observer = self._ctx.observer
        checks = observer.env(spec) if observer is not None else {}
        env = {
            **self._ctx.base_env,
            **spec.env,
            **checks,
            ENV_OWNER: self._ctx.owner,
            ENV_AGENT_ID: spec.id,
            ENV_RUN_ID: run_id,
            ENV_BINARY: file_identity(spec.binary_path),
            ENV_RESTARTS: str(self.machine.restart_count),
            ENV_SPEC: self.digest,
        }
        try:
            # The work dir and the log are prepared in the spawning thread, not here.
            child = await spawn(
                spec.argv,
                cwd=self.work_dir,
                env=env,
                output_fd=self.log.open_for_child,
                run_id=run_id,
                reaper=self._ctx.reaper,
                create_cwd=True,
            )
        except PrepareError as exc:  # the work dir or the log: no process was started
            return self.machine.spawn_failed(trio.current_time(), str(exc))
        except Exception as exc:  # SpawnError, or OSError from a vanished work dir
            logger.warning("agent %s: %s", spec.id, exc)
            return self.machine.spawn_failed(trio.current_time(), str(exc))
        self.child = child
        self.last_run_id = child.run_id
        self.spawns += 1
        self._note_spawn(child)
        self._watch(child)
        now = trio.current_time()
        actions = self.machine.spawned(now, child.pid)
        self._process_started(now, spawned=True)
        return actions

    def _note_spawn(self, child: Child) -> None:
        """Tell the store's journal, if it keeps one, before anything else can happen."""
        if self._ctx.note_spawn is None:
            return
        record = AgentRecord(
            desired=self.desired,
            process=child.identity,
            run_id=child.run_id,
            digest=self.digest,
            restart_count=self.machine.restart_count,
            enabled=self.spec.enabled,
            spawns=self.spawns,
        )
        try:
            self._ctx.note_spawn(self.spec.id, record)
        except Exception as exc:  # a full disk must not stop supervision
            logger.warning("agent %s: cannot note the spawn: %s", self.spec.id, exc)

    def _watch(self, child: Child) -> None:
        """Have the child's exit noticed: by the exit watcher, else by a task of its own."""
        exits = self._ctx.exits
        if exits is not None and exits.watch(child, self._on_exit):
            return
        assert self._ctx.nursery is not None
        scope = trio.CancelScope(shield=True)
        self._watchers[id(child)] = scope

        async def watcher() -> None:
            with scope:
                try:
                    await child.watch()
                finally:
                    self._watchers.pop(id(child), None)
                    if self._ctx.reaper is not None:
                        self._ctx.reaper.disown(child.pid)
            if child.exited and not self._closed:
                self._post(_Exited(child))

        self._ctx.nursery.start_soon(watcher)

    def _forget(self, child: Child) -> None:
        """No longer wait for the child's exit (as a cancelled watcher task would not)."""
        if self._ctx.exits is not None:
            self._ctx.exits.forget(child)
        if self._ctx.reaper is not None:
            self._ctx.reaper.disown(child.pid)

    def _on_exit(self, child: Child) -> None:
        """The exit watcher reaped the child (see :meth:`_watch`)."""
        if self._ctx.reaper is not None:
            self._ctx.reaper.disown(child.pid)
        if not self._closed:
            self._post(_Exited(child))

    async def _kill(self, graceful: bool) -> list[Action]:
        child = self.child
        if child is None:
            return []
        await terminate_tree(
            child,
            stop_signal=self.spec.stop_signal,
            timeout_s=self.spec.stop_timeout_s,
            graceful=graceful,
            reaper=self._ctx.reaper,
        )
        return await self._report_exit(child, expected=True)

    async def _report_exit(self, child: Child, *, expected: bool) -> list[Action]:
        """The one place an exit is reported: once per process, whoever saw it first.

        Args:
            child: The process that exited.
            expected: It exited because we stopped it (its tree is gone already);
                otherwise its leftovers (the group, escaped descendants, marked orphans)
                are stopped before the machine may start a replacement.
        """
        if child is not self.child:
            return []  # already reported (the kill and the watcher both saw it)
        self.child = None
        status = await child.wait()
        if not expected:
            await self._clear_leftovers(child)
        return self._exited(status)

    async def _clear_leftovers(self, child: Child) -> None:
        """Stop whatever of a dead leader's tree lives on, within the stop timeout."""
        spec = self.spec
        stopped = await stop_leftovers(
            child,
            owner=self._ctx.owner,
            agent_id=spec.id,
            stop_signal=spec.stop_signal,
            timeout_s=spec.stop_timeout_s,
            reaper=self._ctx.reaper,
        )
        if stopped:
            logger.warning(
                "agent %s: pid %d exited and left %d process(es) behind; stopped them",
                spec.id,
                child.pid,
                stopped,
            )

    async def _shutdown(self) -> None:
        child = self.child
        if child is None or child.exited:
            return
        if self._ctx.stop_on_exit:
            try:
                actions = self.machine.request_stop(trio.current_time())
                await self._perform(actions)
            except InvalidTransitionError:
                pass
            if self.child is not None:  # a stop already under way was cut short: finish it
                await self._kill(graceful=True)
        else:
            scope = self._watchers.pop(id(child), None)
            if scope is not None:
                scope.cancel()
            self._forget(child)
            child.close()
        self._flush()

    def _fail_pending(self) -> None:
        while self._queue:
            message = self._queue.pop(0)
            if isinstance(message, _Pending):
                message.error = SupervisorClosedError("the supervisor is shutting down")
                message.done.set()

    # -- reporting ------------------------------------------------------------------

    def _flush(self) -> None:
        changes = self.machine.drain_changes()
        if not changes:
            return
        self.updated_at = time.time()
        for change in changes:
            self._ctx.publish(self._event(change))
            log = logger.warning if change.new is AgentState.FAILED else logger.info
            log(
                "agent %s: %s -> %s (%s)",
                self.spec.id,
                change.old.value,
                change.new.value,
                change.reason,
            )
        self._ctx.persist()
        self._publish_view()
        if self._changed is not None:
            self._changed.unpark_all()

    def _event(self, change: StateChange) -> AgentEvent:
        return AgentEvent(
            agent_id=self.spec.id,
            old=change.old,
            new=change.new,
            reason=change.reason,
            event=change.event.value,
            time=self._ctx.wall(change.at) or time.time(),
            pid=self.machine.pid or 0,
            last_exit=self.machine.last_exit,
            at=change.at,
        )

    def info(self, health: HealthSnapshot | None = None) -> AgentInfo:
        """A snapshot of the agent: the seed's AgentInfo plus supervision details.

        Args:
            health: The agent's health, from the health monitor (None without one).
        """
        spec, machine, wall = self.spec, self.machine, self._ctx.wall
        return AgentInfo(
            id=spec.id,
            type=spec.type,
            name=spec.name,
            binary_path=spec.binary_path,
            config_file=spec.config_file,
            work_dir=self.work_dir,
            socket_path=spec.socket_path,
            enabled=spec.enabled,
            pid=machine.pid or 0,
            status=machine.state,
            restart_count=machine.restart_count,
            last_restart=wall(machine.last_restart_at),
            started_at=wall(machine.started_at) if machine.pid else None,
            created_at=self.created_at,
            updated_at=self.updated_at,
            last_exit=machine.last_exit,
            last_error=machine.last_error,
            next_restart_at=wall(machine.next_restart_at),
            consecutive_restarts=machine.consecutive,
            log_file=self.log.path,
            health=health,
            healthy=health.healthy if health is not None else None,
        )

    @property
    def active(self) -> bool:
        """Whether the agent has, or is about to have, a process."""
        return is_active(self.machine.state) or self.child is not None
