"""The IO shell around one agent's :class:`~supervisor._machine.AgentMachine`.

One :class:`AgentRunner` task per agent owns at most one process at a time. It is a
short loop: wait for a request, a process exit or the machine's next deadline; feed the
machine; perform the actions it returns (spawn, kill). Requests from the API are queued
and handled one at a time, so a stop always finishes before the next start begins.

Each process has a watcher task that waits for its exit (pidfd) and posts it to the
loop; the watcher runs in a shielded scope so that, when the supervisor shuts down, the
runner can still wait for its process to exit, or cancel the watcher deliberately and
leave the process running (daemon mode).
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import trio

from ._errors import InvalidTransitionError, SupervisorClosedError
from ._events import AgentEvent
from ._health import AgentHealth
from ._lifecycle import AgentState, is_active
from ._logs import AgentLog
from ._machine import Action, AgentMachine, ExitStatus, Kill, Spawn, StateChange
from ._process import ENV_AGENT_ID, ENV_RUN_ID, Child, OrphanReaper, spawn, terminate_tree
from ._resources import CpuMeter
from ._spec import AgentSpec
from ._status import AgentInfo, Outcome

__all__ = ["AgentRunner", "ProcessObserver", "RunnerContext", "wall_clock"]


class ProcessObserver(Protocol):
    """What the health monitor needs from runners (see :mod:`supervisor._monitor`)."""

    def env(self, spec: AgentSpec) -> Mapping[str, str]:
        """Variables added to the agent's environment (notify and heartbeat sockets)."""
        ...

    def process_changed(self, runner: AgentRunner) -> None:
        """The runner's process started, ended, or its checks were reconfigured."""
        ...


logger = logging.getLogger("supervisor")


@dataclass(slots=True)
class RunnerContext:
    """What runners share, provided by the supervisor."""

    work_dir: str
    publish: Callable[[AgentEvent], None]
    persist: Callable[[], None]
    reaper: OrphanReaper | None = None
    stop_on_exit: bool = True
    spawn_limiter: trio.CapacityLimiter | None = None
    nursery: trio.Nursery | None = None
    base_env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    observer: ProcessObserver | None = None

    def wall(self, monotonic: float | None) -> float | None:
        """Convert a Trio clock reading (or None) into wall-clock seconds since the epoch."""
        return None if monotonic is None else wall_clock(monotonic)


def wall_clock(monotonic: float) -> float:
    """Convert a Trio clock reading into wall-clock seconds since the epoch."""
    return time.time() + (monotonic - trio.current_time())


_STARTED = frozenset({AgentState.STARTING, AgentState.RUNNING})
_GOALS = {
    "start": _STARTED,
    "restart": _STARTED,
    "stop": frozenset({AgentState.STOPPED}),
}


@dataclass(slots=True)
class _Request:
    kind: str
    graceful: bool = True
    reason: str = ""
    spec: AgentSpec | None = None
    child: Child | None = None
    done: trio.Event = field(default_factory=trio.Event)
    error: Exception | None = None


@dataclass(frozen=True, slots=True)
class _Exited:
    child: Child


class AgentRunner:
    """Runs one agent: owns its machine, its process and its log.

    Args:
        spec: The agent.
        context: Shared supervisor facilities.
    """

    def __init__(self, spec: AgentSpec, context: RunnerContext) -> None:
        self.spec = spec
        self._ctx = context
        self.machine = AgentMachine(spec.restart, spec.start_seconds_s)
        self.health = AgentHealth(spec.id, spec.health_check)
        self.cpu_meter = CpuMeter()
        self.child: Child | None = None
        self.log = self._make_log(spec)
        self.desired = "running" if spec.enabled else "stopped"
        self.created_at = time.time()
        self.updated_at = self.created_at
        # A plain queue and a parking lot: a memory channel per agent costs more memory.
        self._queue: deque[_Request | _Exited] = deque()
        self._wakeup = trio.lowlevel.ParkingLot()
        self._closed = False
        self._watchers: dict[int, trio.CancelScope] = {}
        self._changed = trio.lowlevel.ParkingLot()
        self.scope = trio.CancelScope()

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

    async def request(self, kind: str, **kwargs: object) -> Outcome:
        """Queue a request and wait until it has been handled.

        Raises:
            SupervisorClosedError: the runner is not running.
        """
        req = _Request(kind, **kwargs)  # type: ignore[arg-type]
        self._post(req)
        await req.done.wait()
        return self.outcome(req.error, _GOALS.get(kind))

    def post(self, kind: str, **kwargs: object) -> None:
        """Queue a request without waiting for it (from synchronous callbacks).

        Raises:
            SupervisorClosedError: the runner is not running.
        """
        self._post(_Request(kind, **kwargs))  # type: ignore[arg-type]

    def _post(self, message: _Request | _Exited) -> None:
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
            await self._changed.park()

    # -- the loop -----------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled; then stop the process or leave it, as configured."""
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
                self._fail_pending()

    async def _loop(self) -> None:
        while True:
            deadline = self.machine.deadline
            if not self._queue:
                if deadline is None:  # the common idle case: no cancel scope kept alive
                    await self._wakeup.park()
                else:
                    with trio.move_on_at(deadline):
                        await self._wakeup.park()
            message = self._queue.popleft() if self._queue else None
            if message is None:
                await self._perform(self.machine.tick(trio.current_time()))
            elif isinstance(message, _Exited):
                if message.child is self.child:
                    self.child = None
                    status = await message.child.wait()
                    await self._perform(self._exited(status))
            else:
                await self._handle(message)

    async def _handle(self, req: _Request) -> None:
        now = trio.current_time()
        try:
            match req.kind:
                case "start":
                    self.desired = "running"
                    actions = self.machine.request_start(now)
                case "stop":
                    self.desired = "stopped"
                    actions = self.machine.request_stop(now, graceful=req.graceful)
                case "restart":
                    self.desired = "running"
                    actions = self.machine.request_restart(now)
                case "unhealthy":
                    actions = self.machine.unhealthy(now, req.reason)
                case "ready":
                    actions = self.machine.confirm_start(now)
                case "adopt":
                    assert req.child is not None
                    actions = self._adopt(req.child, now)
                case "update":
                    assert req.spec is not None
                    actions = self._update(req.spec)
                case _:  # pragma: no cover - internal
                    raise ValueError(f"unknown request {req.kind!r}")
            await self._perform(actions)
        except InvalidTransitionError as exc:
            req.error = exc
        finally:
            self._flush()
            req.done.set()

    def _adopt(self, child: Child, now: float) -> list[Action]:
        self.child = child
        self._watch(child)
        identity = child.identity
        uptime = max(0.0, time.time() - identity.create_time) if identity else 0.0
        actions = self.machine.adopted(now, child.pid, uptime)
        self._process_started(now, spawned=False)
        return actions

    def _update(self, spec: AgentSpec) -> list[Action]:
        old, self.spec = self.spec, spec
        self.machine.update_settings(spec.restart, spec.start_seconds_s)
        self.log.max_bytes, self.log.backups = spec.log.max_bytes, spec.log.backups
        if spec.health_check != old.health_check:
            self.health.reconfigure(trio.current_time(), spec.health_check)
            self._observe()
        return []

    # -- health facts from the process lifecycle ---------------------------------

    def _process_started(self, now: float, *, spawned: bool) -> None:
        self.health.process_started(now)
        self.cpu_meter.reset()
        if spawned:  # a new tree has used (almost) no CPU yet: the first sample counts
            self.cpu_meter.update(now, 0)
        self._observe()

    def _exited(self, status: ExitStatus) -> list[Action]:
        now = trio.current_time()
        actions = self.machine.exited(now, status)
        if self.machine.state is AgentState.STOPPED:
            self.health.reset()
        else:
            self.health.process_exited(now, status.describe())
        self._observe()
        return actions

    def _observe(self) -> None:
        if self._ctx.observer is not None:
            self._ctx.observer.process_changed(self)

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
        spec = self.spec
        try:
            os.makedirs(self.work_dir, exist_ok=True)
            output_fd = self.log.open_for_child()
        except OSError as exc:
            return self.machine.spawn_failed(trio.current_time(), f"{exc.filename}: {exc.strerror}")
        run_id = os.urandom(16).hex()
        observer = self._ctx.observer
        checks = observer.env(spec) if observer is not None else {}
        env = {
            **self._ctx.base_env,
            **spec.env,
            **checks,
            ENV_AGENT_ID: spec.id,
            ENV_RUN_ID: run_id,
        }
        try:
            child = await spawn(
                spec.argv,
                cwd=self.work_dir,
                env=env,
                output_fd=output_fd,
                run_id=run_id,
                reaper=self._ctx.reaper,
                limiter=self._ctx.spawn_limiter,
            )
        except Exception as exc:  # SpawnError, or OSError from a vanished work dir
            logger.warning("agent %s: %s", spec.id, exc)
            return self.machine.spawn_failed(trio.current_time(), str(exc))
        finally:
            os.close(output_fd)
        self.child = child
        self._watch(child)
        now = trio.current_time()
        actions = self.machine.spawned(now, child.pid)
        self._process_started(now, spawned=True)
        return actions

    def _watch(self, child: Child) -> None:
        """Start the child's watcher in the supervisor's nursery (shielded: see module)."""
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

    async def _kill(self, graceful: bool) -> list[Action]:
        child = self.child
        if child is None:
            return []
        status = await terminate_tree(
            child,
            stop_signal=self.spec.stop_signal,
            timeout_s=self.spec.stop_timeout_s,
            graceful=graceful,
            reaper=self._ctx.reaper,
        )
        self.child = None
        return self._exited(status)

    async def _shutdown(self) -> None:
        child = self.child
        if child is None or child.exited:
            return
        if self._ctx.stop_on_exit:
            try:
                actions = self.machine.request_stop(trio.current_time())
                await self._perform(actions)
            except InvalidTransitionError:  # already stopping: just wait for it
                await self._kill(graceful=True)
        else:
            scope = self._watchers.pop(id(child), None)
            if scope is not None:
                scope.cancel()
            child.close()
        self._flush()

    def _fail_pending(self) -> None:
        while self._queue:
            message = self._queue.popleft()
            if isinstance(message, _Request):
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

    def info(self) -> AgentInfo:
        """A snapshot of the agent: the seed's AgentInfo plus supervision details."""
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
            health=(health := self.health.snapshot(trio.current_time())),
            healthy=health.healthy,
        )

    @property
    def active(self) -> bool:
        """Whether the agent has, or is about to have, a process."""
        return is_active(self.machine.state) or self.child is not None
