"""The health monitor: every agent's checks, on shared ticks (the IO shell of the trackers).

Theory of operation
-------------------
One :class:`HealthMonitor` serves all agents of a :class:`~supervisor.Supervisor`. It
owns two private sockets and one loop:

* the heartbeat socket (:class:`~supervisor._health._heartbeat.HeartbeatServer`, JSON
  lines) and the sd_notify socket (:class:`~supervisor._health._notify.NotifyServer`).
  Each agent finds them in its environment (``HOSTVISOR_HEARTBEAT_SOCKET``,
  ``NOTIFY_SOCKET``, and ``WATCHDOG_USEC`` when a heartbeat timeout is set). A message is
  attributed by the sender's pid from the kernel: :meth:`HealthMonitor.resolve` maps it
  to the agent whose process is that pid, leads its session or process group, or is an
  ancestor of it.
* the loop. Agents are grouped by ``health_check.interval``; each group has one tick on
  a grid (``start + k * interval``), so 300 agents with the same interval cost one
  wake-up per interval, not 300. At a tick the monitor measures every live process tree
  of the group in one worker-thread call (CPU and RSS from ``/proc``), feeds the samples
  to each agent's :class:`~supervisor._health.AgentHealth`, then probes the HTTP and TCP
  endpoints of the group's running agents in one round
  (:func:`~supervisor._health._probes.probe_many`: one task, one private ``epoll`` set, a
  few wake-ups for hundreds of probes; one deadline per probe, ``health_check.timeout``,
  that covers name resolution too; an agent whose previous probe still runs is skipped).
* messages from agents are read in rounds too, one round per :func:`resolution_for` (a
  sixth of the shortest heartbeat timeout, between 0.1 s and 5 s) for all of them (see the
  two servers): on a small VM a wake-up costs more than the work it does. A heartbeat
  may thus be credited up to that much late, so a timeout fires at most a sixth late.
  Between ticks the loop sleeps until the earliest heartbeat deadline
  (:meth:`AgentHealth.next_deadline`) or the next tick, whichever comes first, and is
  woken early only when a deadline may have moved closer (a process started, a first
  heartbeat armed the check, a timeout changed).

Every fact is followed by :meth:`AgentHealth.check`. When it returns a reason, the agent's
runner gets an ``unhealthy`` request: the restart policy (backoff, retry budget) decides,
as after a crash, and the reason becomes the agent's last error. The event stream gets
``unhealthy``, ``healthy`` and ``resource_alert`` events; alerts also go to ``on_alert``.

What sd_notify messages do: ``READY=1`` confirms the start (the agent is ``running``
without waiting ``start_seconds``); ``WATCHDOG=1`` is a heartbeat; ``WATCHDOG=trigger``
is unhealthy at once; ``WATCHDOG_USEC=`` changes the heartbeat timeout of the running
process; ``STATUS=`` is kept as the agent's status text; ``STOPPING=1`` suspends recovery
(the exit that follows is judged by the restart policy like any exit). ``MAINPID=``,
``RELOADING=1`` and ``EXTEND_TIMEOUT_USEC=`` are accepted and ignored: the supervised
process is always the one we started or adopted.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Mapping

import trio

from supervisor._errors import SupervisorClosedError
from supervisor._events import AgentEvent
from supervisor._lifecycle import AgentState
from supervisor._process import digest_hex, lineage
from supervisor._requests import Ready, Request, Unhealthy
from supervisor._spec import AgentSpec, HealthCheckSpec
from supervisor._status import HealthStatistics
from supervisor._view import ProcessView

from ._agent_health import AgentHealth, Check, HealthSnapshot, ResourceAlert
from ._heartbeat import ENV_HEARTBEAT_SOCKET, Heartbeat, HeartbeatServer
from ._history import ResourceSample
from ._judge import parse_endpoint, parse_url
from ._notify import NotifyMessage, NotifyServer, notify_env
from ._probes import Probe, probe_many
from ._resources import CpuMeter, TreeUsage, tree_usage
from ._sockets import SUN_PATH_MAX, private_dir

__all__ = ["HealthMonitor", "next_tick", "resolution_for", "socket_dir_for"]

logger = logging.getLogger("supervisor.health")

#: Ticks closer than this to a wake-up are served in it (float rounding of the grid).
TICK_TOLERANCE_S = 1e-3
#: Bounds of the period of the rounds in which agents' messages are read.
MIN_RESOLUTION_S, MAX_RESOLUTION_S = 0.1, 5.0
#: sd_notify messages (READY=1) are read at least this often.
NOTIFY_RESOLUTION_S = 1.0
#: Sockets a probe round opens at once (more are probed in further rounds).
PROBES_PER_ROUND = 256
#: Parent links followed from a message's sender towards an agent's process.
MAX_ANCESTORS = 64
_SOCKET_NAMES = ("heartbeat.sock", "notify.sock")


def next_tick(start: float, interval: float, now: float) -> float:
    """The first grid point ``start + k * interval`` (k >= 1) after ``now``.

    Every tick is computed from ``start``, never by adding intervals up, so groups never
    drift and a late wake-up skips the missed ticks instead of replaying them.
    """
    k = max(1, math.floor((now - start) / interval) + 1)
    while start + k * interval <= now:  # float rounding
        k += 1
    return start + k * interval


def resolution_for(timeouts: Iterable[float]) -> float:
    """The period of the heartbeat reading rounds: a sixth of the shortest timeout.

    Args:
        timeouts: The agents' heartbeat timeouts (0: disabled, ignored).

    Returns:
        Seconds between ``MIN_RESOLUTION_S`` and ``MAX_RESOLUTION_S``.
    """
    shortest = min((t for t in timeouts if t > 0), default=math.inf)
    return min(MAX_RESOLUTION_S, max(MIN_RESOLUTION_S, shortest / 6))


def socket_dir_for(work_dir: str) -> str:
    """Where a supervisor with this work directory puts its sockets.

    ``{work_dir}/run`` when the socket paths fit in ``sun_path`` (107 bytes); otherwise a
    directory named after a hash of the work directory under ``$XDG_RUNTIME_DIR``, the
    temporary directory or ``/tmp``, whichever is short enough.
    """
    preferred = os.path.join(work_dir, "run")
    if _fits(preferred):
        return preferred
    digest = digest_hex(os.fsencode(os.path.abspath(work_dir)))[:16]
    name = f"hostvisor-{os.geteuid()}-{digest}"
    for base in (os.environ.get("XDG_RUNTIME_DIR"), tempfile.gettempdir(), "/tmp"):
        if base and _fits(os.path.join(base, name)):
            return os.path.join(base, name)
    return preferred  # binding will say why it cannot be used


def _fits(directory: str) -> bool:
    longest = max(len(os.fsencode(os.path.join(directory, n))) for n in _SOCKET_NAMES)
    return longest <= SUN_PATH_MAX


class _Watched:
    """One agent as the monitor holds it: the runner's view, and the health it owns."""

    __slots__ = ("cpu", "health", "view")

    def __init__(self, view: ProcessView) -> None:
        self.view = view
        self.health = AgentHealth(view.agent_id, view.checks)
        self.cpu = CpuMeter()

    def current(self, generation: int) -> bool:
        """Whether the process of ``generation`` is still the agent's."""
        return self.view.pid != 0 and self.view.generation == generation


class HealthMonitor:
    """Runs the health checks of a supervisor's agents (see the module docstring).

    It owns every agent's health: runners publish a :class:`~supervisor._view.ProcessView`
    and the facts of their process's life (the :class:`~supervisor._view.ProcessObserver`
    methods), and receive verdicts through their inbox.

    Args:
        socket_dir: Directory of the heartbeat and notify sockets (created 0700).
        publish: Where health events go (the supervisor's event hub).
        wall: Converts a Trio time into wall-clock seconds.
        on_alert: Called with each :class:`ResourceAlert`; must not block.
    """

    def __init__(
        self,
        *,
        socket_dir: str,
        publish: Callable[[AgentEvent], None],
        wall: Callable[[float], float],
        on_alert: Callable[[ResourceAlert], None] | None = None,
    ) -> None:
        self._agents: dict[str, _Watched] = {}
        self.socket_dir = socket_dir
        self._publish = publish
        self._wall = wall
        self._on_alert = on_alert
        heartbeat_path, notify_path = (os.path.join(socket_dir, n) for n in _SOCKET_NAMES)
        self.heartbeats = HeartbeatServer(
            heartbeat_path,
            resolve=self.resolve,
            on_heartbeat=self._heartbeat,
            resolution_s=MAX_RESOLUTION_S,
        )
        self.notifications = NotifyServer(
            notify_path,
            resolve=self.resolve,
            on_message=self._notify,
            resolution_s=NOTIFY_RESOLUTION_S,
        )
        self._leaders: dict[int, _Watched] = {}
        self._leader_of: dict[str, int] = {}
        self._probing: set[str] = set()
        # How many agents have each heartbeat timeout: the resolution is recomputed when
        # these change, not over every agent at every process change.
        self._timeouts: Counter[float] = Counter()
        self._wakeup = trio.lowlevel.ParkingLot()
        # What the loop planned when it last went to sleep: its wake-up time, and the next
        # tick of each interval. A change wakes it only when it needs an earlier wake-up.
        self._wake_at = math.inf
        self._ticks: dict[float, float] = {}
        self._counts = dict.fromkeys(
            ("ticks", "samples", "probes", "probes_skipped", "unhealthy", "alerts"), 0
        )
        self._nursery: trio.Nursery | None = None

    # -- wiring with the runners ---------------------------------------------------

    def env(self, spec: AgentSpec) -> Mapping[str, str]:
        """The agent's environment additions: both sockets, and ``WATCHDOG_USEC``."""
        timeout = spec.health_check.heartbeat_timeout_s
        env = notify_env(self.notifications.path, round(timeout * 1e6) if timeout > 0 else None)
        env[ENV_HEARTBEAT_SOCKET] = self.heartbeats.path
        return env

    def update(self, view: ProcessView) -> None:
        """The agent's process, state or checks changed (see ``ProcessObserver``)."""
        watched = self._agents.get(view.agent_id)
        if watched is None or watched.view.post != view.post:
            if watched is not None:
                self._count(watched.view.checks, -1)
            watched = self._agents[view.agent_id] = _Watched(view)
            self._count(view.checks, 1)
        old, watched.view = watched.view, view
        if view.checks != old.checks:
            self._count(old.checks, -1)
            self._count(view.checks, 1)
            watched.health.reconfigure(trio.current_time(), view.checks)
        if view.pid != old.pid or view.generation != old.generation or view.checks != old.checks:
            self._track(watched)

    def process_started(self, view: ProcessView, now: float, *, spawned: bool) -> None:
        """A process was spawned or adopted: its checks start from now."""
        self.update(view)
        watched = self._agents[view.agent_id]
        watched.health.process_started(now)
        watched.cpu.reset()
        if spawned:  # a new tree has used (almost) no CPU yet: the first sample counts
            watched.cpu.update(now, 0)
        self._track(watched)

    def process_exited(self, view: ProcessView, now: float, detail: str, *, stopped: bool) -> None:
        """The process exited: a deliberate stop ends the checks, any other exit is one."""
        self.update(view)
        health = self._agents[view.agent_id].health
        if stopped:
            health.reset()
        else:
            health.process_exited(now, detail)
        self._track(self._agents[view.agent_id])

    def forget(self, view: ProcessView) -> None:
        """The runner that published ``view`` is gone."""
        watched = self._agents.get(view.agent_id)
        if watched is not None and watched.view.post == view.post:
            del self._agents[view.agent_id]
            self._count(view.checks, -1)
            pid = self._leader_of.pop(view.agent_id, None)
            if pid is not None:
                self._leaders.pop(pid, None)

    def snapshot(self, agent_id: str, now: float) -> HealthSnapshot | None:
        """The agent's health now (None for an agent the monitor does not know)."""
        watched = self._agents.get(agent_id)
        return watched.health.snapshot(now) if watched is not None else None

    def history(self, agent_id: str, now: float, seconds: float) -> list[ResourceSample]:
        """The agent's resource samples of the last ``seconds``, oldest first."""
        watched = self._agents.get(agent_id)
        return watched.health.history.window(now, seconds) if watched is not None else []

    def _track(self, watched: _Watched) -> None:
        """Keep the pid-to-agent map current and let the loop reconsider its deadline."""
        agent_id = watched.view.agent_id
        old = self._leader_of.pop(agent_id, None)
        if old is not None and self._leaders.get(old) is watched:
            del self._leaders[old]
        if watched.view.pid:
            self._leaders[watched.view.pid] = watched
            self._leader_of[agent_id] = watched.view.pid
        deadline = watched.health.next_deadline()
        if (deadline is not None and deadline < self._wake_at) or (
            watched.view.checks.interval_s not in self._ticks
        ):
            self._wakeup.unpark_all()

    def _count(self, checks: HealthCheckSpec, change: int) -> None:
        """Count an agent's heartbeat timeout in or out; set the resolution if it moved."""
        timeout = checks.heartbeat_timeout_s
        self._timeouts[timeout] += change
        if self._timeouts[timeout] <= 0:
            del self._timeouts[timeout]
        resolution = resolution_for(self._timeouts)
        self.heartbeats.resolution_s = resolution
        self.notifications.resolution_s = min(resolution, NOTIFY_RESOLUTION_S)

    def resolve(self, pid: int) -> str | None:
        """The agent a sender belongs to: its process, or a descendant of it; else None."""
        leaders = self._leaders
        for _ in range(MAX_ANCESTORS):
            watched = leaders.get(pid)
            if watched is not None:
                return watched.view.agent_id
            family = lineage(pid)
            if family is None:
                return None
            parent, group, session = family
            watched = leaders.get(session) or leaders.get(group)  # agents lead a session
            if watched is not None:
                return watched.view.agent_id
            if parent <= 1:
                return None
            pid = parent
        return None

    def statistics(self) -> HealthStatistics:
        """A snapshot of the counters."""
        return HealthStatistics(
            **self._counts,
            heartbeat=self.heartbeats.statistics(),
            notify=self.notifications.statistics(),
        )

    # -- the service ---------------------------------------------------------------

    def bind(self) -> None:
        """Create the socket directory and both sockets now (before :meth:`run`).

        Raises:
            SocketSetupError: A socket (or its directory) could not be created.
        """
        private_dir(self.socket_dir)
        try:
            self.heartbeats.socket.bind()
            self.notifications.socket.bind()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release sockets bound by :meth:`bind` when :meth:`run` will not use them."""
        self.heartbeats.socket.close()
        self.notifications.socket.close()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; ``started`` once both sockets accept.

        Raises:
            SocketSetupError: A socket (or its directory) could not be created (unless
                :meth:`bind` was called first, which raises it instead).
        """
        self.bind()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(self.heartbeats.run)
                await nursery.start(self.notifications.run)
                nursery.start_soon(self._loop, nursery)
                task_status.started()
        finally:
            self._nursery = None
            with contextlib.suppress(OSError):  # only if empty: the socket files are gone
                os.rmdir(self.socket_dir)

    async def _loop(self, nursery: trio.Nursery) -> None:
        start = trio.current_time()
        ticks = self._ticks  # interval -> next tick
        while True:
            now = trio.current_time()
            groups: dict[float, list[_Watched]] = {}
            wake = math.inf
            for watched in list(self._agents.values()):
                groups.setdefault(watched.view.checks.interval_s, []).append(watched)
                deadline = watched.health.next_deadline()
                if deadline is not None:
                    if deadline <= now:
                        self._judge(watched, now)
                        deadline = watched.health.next_deadline()
                    if deadline is not None:
                        wake = min(wake, deadline)
            for interval in list(ticks):
                if interval not in groups:
                    del ticks[interval]
            for interval, members in groups.items():
                at = ticks.get(interval)
                if at is not None and at <= now + TICK_TOLERANCE_S:
                    nursery.start_soon(self._tick, members)
                    at = None
                if at is None:
                    at = ticks[interval] = next_tick(start, interval, now)
                wake = min(wake, at)
            self._wake_at = wake
            if math.isinf(wake):
                await self._wakeup.park()
            else:
                with trio.move_on_at(wake):
                    await self._wakeup.park()

    async def _tick(self, members: list[_Watched]) -> None:
        """Measure the group's process trees in one thread call, then start its probes."""
        self._counts["ticks"] += 1
        live = [(w, w.view.generation, w.view.pid) for w in members if w.view.pid]
        if not live:
            return
        usages = await trio.to_thread.run_sync(_measure, [pid for *_, pid in live])
        now = trio.current_time()
        for (watched, generation, _), usage in zip(live, usages, strict=True):
            if usage is not None and watched.current(generation):
                self._resources(watched, now, usage)
        probing = [
            (watched, generation)
            for watched, generation, _ in live
            if watched.current(generation)
            and watched.view.state is AgentState.RUNNING
            and (watched.view.checks.http_endpoint or watched.view.checks.tcp_endpoint)
        ]
        if probing:
            await self._probe_round(probing)

    def _resources(self, watched: _Watched, now: float, usage: TreeUsage) -> None:
        self._counts["samples"] += 1
        cpu = watched.cpu.update(now, usage.cpu_ticks)
        if cpu is None:
            return  # the first sample of an adopted process only primes the meter
        extra = (usage.vms_bytes, usage.read_bytes, usage.write_bytes, usage.open_files)
        for alert in watched.health.resources(now, cpu, usage.rss_bytes, *extra):
            self._alert(watched, alert)
        self._judge(watched, now)

    def _alert(self, watched: _Watched, alert: ResourceAlert) -> None:
        self._counts["alerts"] += 1
        message = alert.describe()
        logger.warning("%s", message)
        self._event(watched, "resource_alert", message, alert.at, alert)
        if self._on_alert is not None:
            try:
                self._on_alert(alert)
            except Exception:
                logger.exception("on_alert callback failed for %s", message)

    async def _probe_round(self, members: list[tuple[_Watched, int]]) -> None:
        """Probe the group's endpoints in one round (see :func:`probe_many`)."""
        free = [(w, g) for w, g in members if w.view.agent_id not in self._probing]
        self._counts["probes_skipped"] += len(members) - len(free)
        members = free
        entries = [
            (watched, generation, check, probe)
            for watched, generation in members
            for check, probe in _probes_of(watched.view.checks)
        ]
        probes = [probe for *_, probe in entries if isinstance(probe, Probe)]
        ids = {watched.view.agent_id for watched, _ in members}
        self._probing |= ids
        verdicts: list[str | None] = []
        try:
            for first in range(0, len(probes), PROBES_PER_ROUND):
                verdicts += await probe_many(probes[first : first + PROBES_PER_ROUND])
        finally:
            self._probing -= ids
        now = trio.current_time()
        answers = iter(verdicts)
        for watched, generation, check, probe in entries:
            error = next(answers) if isinstance(probe, Probe) else probe
            if watched.current(generation):  # else restarted meanwhile: the answer is stale
                self._counts["probes"] += 1
                watched.health.probe(now, check, error)
        for watched, generation in members:
            if watched.current(generation):
                self._judge(watched, now)

    # -- messages from agents ---------------------------------------------------------

    def _heartbeat(self, agent_id: str, heartbeat: Heartbeat) -> None:
        watched = self._agents.get(agent_id)
        if watched is None:
            return
        health = watched.health
        armed = health.heartbeat_tracker.armed
        health.heartbeat(heartbeat.received_at)
        if heartbeat.status:
            health.set_status_text(heartbeat.status)
        if heartbeat.version:
            health.version = heartbeat.version
        if not armed:
            self._wakeup.unpark_all()  # the first beat armed the check: a new deadline
        if health.in_episode:  # a beat can only heal: nothing to judge otherwise
            self._judge(watched, heartbeat.received_at)

    def _notify(self, agent_id: str, message: NotifyMessage) -> None:
        watched = self._agents.get(agent_id)
        if watched is None:
            return
        health, now = watched.health, message.received_at
        if message.status is not None:
            health.set_status_text(message.status)
        if message.watchdog_usec is not None:
            health.heartbeat_tracker.set_timeout(message.watchdog_usec / 1e6)
            self._wakeup.unpark_all()
        if message.watchdog:
            if not health.heartbeat_tracker.armed:
                self._wakeup.unpark_all()
            health.heartbeat(now)
        if message.watchdog_trigger:
            health.trigger(now)
        if message.stopping:
            health.stopping(now)
        if message.ready:
            self._post(watched, Ready())
        self._judge(watched, now)

    # -- verdicts ---------------------------------------------------------------------

    def _judge(self, watched: _Watched, now: float) -> None:
        health = watched.health
        was_unhealthy = health.in_episode
        reason = health.check(now)
        if reason is not None:
            self._counts["unhealthy"] += 1
            logger.warning("agent %s: unhealthy: %s", watched.view.agent_id, reason)
            self._event(watched, "unhealthy", reason, now)
            self._post(watched, Unhealthy(reason))
        elif was_unhealthy and not health.in_episode:
            self._event(watched, "healthy", "every health check passes again", now)

    def _post(self, watched: _Watched, request: Request) -> None:
        try:
            watched.view.post(request)
        except SupervisorClosedError as exc:  # the runner is closing: nothing to act on
            logger.debug("agent %s: %s request dropped: %s", watched.view.agent_id, request, exc)

    def _event(
        self,
        watched: _Watched,
        event: str,
        reason: str,
        at: float,
        alert: ResourceAlert | None = None,
    ) -> None:
        view = watched.view
        self._publish(
            AgentEvent(
                agent_id=view.agent_id,
                old=view.state,
                new=view.state,
                reason=reason,
                event=event,
                time=self._wall(at),
                pid=view.pid,
                at=at,
                alert=alert,
            )
        )


def _probes_of(checks: HealthCheckSpec) -> list[tuple[Check, Probe | str]]:
    """The probes an agent's checks ask for; the reason instead where one cannot be made.

    A library caller may put any text in a :class:`HealthCheckSpec`: an endpoint that
    cannot be probed fails its check at every round with the reason, and never stops the
    monitor (which a ValueError from :func:`probe_many` would).
    """
    found: list[tuple[Check, Probe | str]] = []
    if checks.http_endpoint is not None:
        try:
            parse_url(checks.http_endpoint)
        except ValueError as exc:
            found.append((Check.HTTP, str(exc)))
        else:
            found.append((Check.HTTP, Probe(url=checks.http_endpoint, timeout_s=checks.timeout_s)))
    if checks.tcp_endpoint is not None:
        try:
            endpoint = parse_endpoint(checks.tcp_endpoint)
        except ValueError as exc:
            found.append((Check.TCP, str(exc)))
        else:
            found.append((Check.TCP, Probe(endpoint=endpoint, timeout_s=checks.timeout_s)))
    return found


def _measure(pids: list[int]) -> list[TreeUsage | None]:
    """Measure process trees (in a worker thread: ``/proc`` reads can block briefly)."""
    return [tree_usage(pid) for pid in pids]
