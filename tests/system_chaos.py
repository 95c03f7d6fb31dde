"""A chaos run of the whole system: a Manager and N daemons with agents, killed at random.

Used by ``tests/e2e/test_system_chaos.py`` (a short run in CI) and by
``benchmarks/bench_system_chaos.py`` (a run of minutes that prints its figures). It is
``tests/chaos.py`` (the daemon alone) grown to the fleet, and reuses its pieces: its agents
(shell scripts that append their PID to a file at every spawn and keep two children, one
of which escaped the process group with ``setsid``), its report, and its per-daemon checks
(each node is a :class:`tests.chaos.ChaosRun` whose daemon the fleet runs). The fleet is
``tests/e2e/harness.py``'s: real ``hostvisor-manager run`` and ``hostvisor run``
processes on loopback (plaintext, or mutual TLS), SQLite, every interval 1 s.

What happens, at random, every 100 to 500 ms for ``duration_s``:

* SIGKILL to an agent's main process, or to its whole process group;
* SIGKILL to a daemon (started again 0 to 1 s later on the same work directory);
* SIGSTOP to a daemon, SIGCONT 0.1 to 1 s later;
* SIGTERM or SIGKILL to the Manager (started again 0 to 3 s later on the same ports and
  database).

A daemon or the Manager being restarted (or stopped) is left alone until it is back.
Afterwards everything is brought back and the run waits until it has settled (every
agent runs once, the Manager shows what the hosts run, every spool is empty; a safety
timeout, never a timing), then checks:

* every agent on every host runs exactly once: one run of three processes, its main
  process the one the daemon's state file names, nothing of an earlier run left, no
  zombie among the daemon's children (:meth:`tests.chaos.ChaosRun._check`, each daemon
  asked to exit with SIGTERM first; a zombie is given :data:`ZOMBIE_WAIT_S` to be reaped
  first, and one that stays is reported with whether a SIGCHLD sent by hand reaps it);
* restart counts add up: every agent's spawns (as it recorded them) are one more than its
  restart count in the state file;
* the Manager's view (REST API) matches the hosts exactly: every node online, each
  node's agents the hosts' agents, all running, with the pids the hosts see;
* nothing was lost within the spool bound. The daemon keeps a report in memory while the
  Manager answers and writes it to its spool (``{work}/spool``, one file per report,
  durable before it counts) once it cannot be delivered; only a spool bound
  (``max_bytes``, ``max_age``) may drop a spooled report. The bound here (64 MiB, 1 h) is
  far beyond what a run of minutes can spool (a report is a few KiB; the Manager is down
  for seconds at a time, half a minute at most on a loaded machine), and the report says
  how much one spool held at most and the longest outage. So:

  - every report any spool took in (read as it landed, through inotify, before the daemon
    could deliver and delete it) has each of its metric points in the Manager's
    database (read through the Manager's Store, read-only);
  - for each node and metric type, the stored points have no gap of more than
    :data:`GAP_LIMIT_S` that no kill or stop of that node's daemon explains (a daemon
    killed loses what it had in memory and collects nothing while it is down; the
    Manager's restarts explain nothing), no duplicate, and reach the end of the run;
  - no daemon logged a report as dropped or lost (the ``D2003`` lines).

Nothing here asserts a duration: every wait is on a condition with a safety timeout.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import random
import select
import signal
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from supervisor._process import owner_marker
from tests.chaos import ChaosReport, ChaosRun, _agent_script
from tests.e2e.harness import Api, ApiError, DaemonProc, Fleet, shell_agent
from transport import manager_pb2
from transport.daemon._spool import SPOOL_DIR, parse_entry_name
from transport.daemon._spool_policy import EntryKind
from transport.manager._store import STANDARD_TYPES, Store

__all__ = [
    "GAP_LIMIT_S",
    "SPOOL_BOUND",
    "SpoolWatch",
    "SystemChaosReport",
    "SystemChaosRun",
    "unexplained_gaps",
]

GAP_LIMIT_S = 3
"""The longest step between two stored points of one node and type (integer seconds, a
point a second) that needs no explanation: a collection late by up to a second or two on a
busy machine; a lost report makes a step of at least two and usually three or more."""
SPOOL_BOUND = {"max_bytes": "64MiB", "max_age": "1h"}
"""The daemons' ``manager.spool``: beyond anything a run can spool (see the module doc)."""
ACTIONS: Mapping[str, float] = {
    "kill agent": 0.45,
    "kill agent group": 0.25,
    "kill daemon": 0.12,
    "stop daemon": 0.13,
    "stop manager": 0.025,
    "kill manager": 0.025,
}
"""Each action's weight. The Manager's are small: it is left alone while it restarts (up to
3 s, and as long again to start), so it is still down for about a third of the run."""
DISRUPTION_MARGIN_S = 2.0
"""How long after a daemon is back (started, or continued) its points may still lag."""
ZOMBIE_WAIT_S = 10.0
"""How long a zombie child of a daemon may wait for the daemon to reap it (a safety
margin: a daemon reaps at once what it is told of)."""
_POLL_S = 0.2

# inotify(7), through the C library: the spool's new files, as they are renamed into place.
_IN_MOVED_TO = 0x00000080
_IN_Q_OVERFLOW = 0x00004000
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of name


class SpoolWatch:
    """The metric points of every report one daemon's spool takes in, read as it lands.

    The spool writes a temporary file and renames it into place; each rename is an
    inotify event, on which the file is read at once. A file delivered and deleted before
    it could be read is counted in :attr:`unread` (its points are then not checked).

    Args:
        node_id: The node whose spool it is.
        directory: ``{work}/spool``, made here (0700, as the daemon makes it) so that the
            watch exists before the daemon writes anything.

    Raises:
        OSError: inotify is not available.
    """

    def __init__(self, node_id: str, directory: Path) -> None:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.node_id = node_id
        self.directory = directory
        self.reports = 0
        """Metric reports the spool took in."""
        self.unread = 0
        """Of those, the ones gone before they could be read."""
        self.overflowed = False
        """Whether the kernel dropped events (then some reports were not seen at all)."""
        self.peak_bytes = 0
        """The most bytes the spool held when a report landed."""
        self._points: set[tuple[str, int]] = set()
        self._lock = threading.Lock()
        libc = ctypes.CDLL(None, use_errno=True)
        self._fd = int(libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))
        if self._fd < 0:
            error = ctypes.get_errno()
            raise OSError(error, f"inotify_init1: {os.strerror(error)}")
        if libc.inotify_add_watch(self._fd, os.fsencode(directory), _IN_MOVED_TO) < 0:
            error = ctypes.get_errno()
            os.close(self._fd)
            raise OSError(error, f"inotify_add_watch {directory}: {os.strerror(error)}")
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"spool watch {node_id}", daemon=True
        )
        self._thread.start()

    def points(self) -> set[tuple[str, int]]:
        """(metric type, timestamp) of every point read from the spool so far."""
        with self._lock:
            return set(self._points)

    def waiting(self) -> list[str]:
        """The reports the spool holds now (file names)."""
        try:
            return sorted(n for n in os.listdir(self.directory) if not n.startswith("."))
        except FileNotFoundError:
            return []

    def size(self) -> int:
        """The bytes the spool's reports take now."""
        total = 0
        for name in self.waiting():
            with contextlib.suppress(FileNotFoundError):
                total += (self.directory / name).stat().st_size
        return total

    def close(self) -> None:
        """Stop watching (what has landed is read first)."""
        self._stop.set()
        self._thread.join(timeout=30)
        os.close(self._fd)

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        while not self._stop.is_set():
            if poller.poll(100):
                self._drain()
        self._drain()

    def _drain(self) -> None:
        while True:
            try:
                data = os.read(self._fd, 1 << 16)
            except BlockingIOError:
                return
            offset = 0
            while offset + _EVENT.size <= len(data):
                _wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
                start = offset + _EVENT.size
                name = data[start : start + length].rstrip(b"\0").decode(errors="replace")
                offset = start + length
                if mask & _IN_Q_OVERFLOW:
                    self.overflowed = True
                elif self._is_metrics(name):
                    self._take(name)

    @staticmethod
    def _is_metrics(name: str) -> bool:
        parsed = parse_entry_name(name)
        return parsed is not None and parsed[2] is EntryKind.METRICS

    def _take(self, name: str) -> None:
        self.reports += 1
        self.peak_bytes = max(self.peak_bytes, self.size())
        try:
            payload = (self.directory / name).read_bytes()
        except FileNotFoundError:
            self.unread += 1
            return
        request = manager_pb2.ReportMetricsRequest.FromString(payload)
        with self._lock:
            self._points.update((m.type, m.timestamp) for m in request.metrics)


# --------------------------------------------------------------------------- pure checks


def unexplained_gaps(
    timestamps: Sequence[int],
    disruptions: Iterable[tuple[float, float]],
    *,
    limit: int = GAP_LIMIT_S,
    margin: float = DISRUPTION_MARGIN_S,
) -> tuple[list[tuple[int, int]], int]:
    """The steps between consecutive points longer than ``limit`` that no disruption explains.

    Args:
        timestamps: One node's stored points of one type (unix seconds), ascending.
        disruptions: Wall-clock spans in which that node's daemon was killed and not yet
            back, or stopped.
        limit: The longest step that needs no explanation.
        margin: How long after a disruption ends its effect may last.

    Returns:
        The unexplained gaps as (last point before, first point after), and how many long
        gaps a disruption explained.
    """
    spans = sorted(disruptions)
    unexplained: list[tuple[int, int]] = []
    explained = 0
    for before, after in itertools.pairwise(timestamps):
        if after - before <= limit:
            continue
        # A point of second ``after`` was collected before after + 1.
        if any(start <= after + 1 and end + margin >= before for start, end in spans):
            explained += 1
        else:
            unexplained.append((before, after))
    return unexplained, explained


def dropped_lines(log: str) -> list[str]:
    """The daemon log's lines that say a report was dropped or lost (error D2003)."""
    return [line for line in log.splitlines() if "D2003" in line]


def _wait(predicate: Callable[[], bool], timeout_s: float) -> bool:
    """Poll ``predicate`` until it holds (True) or ``timeout_s`` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(_POLL_S)
    return True


# --------------------------------------------------------------------------- the run


@dataclass
class SystemChaosReport(ChaosReport):
    """What a system chaos run did and found (:class:`tests.chaos.ChaosReport`'s counts:
    actions, problems, spawns, daemon starts, settle time; and these).

    Attributes:
        manager_starts: Times the Manager was started (the first included).
        restarts: The agents' restart counts (state files), summed over every node.
        longest_outage_s: The longest the Manager was down (from its signal to listening).
        longest_stop_s: The longest the Manager took to exit after its signal.
        longest_start_s: The longest the Manager took from its start to listening.
        spool_peak_bytes: The most one spool held at a time (when a report landed).
        spooled_reports: Metric reports the spools took in.
        unread_reports: Of those, the ones delivered before they could be read.
        spooled_points: Metric points read from the spools (each looked for in the
            Manager's database).
        points: Metric points of the nodes in the Manager's database.
        explained_gaps: Gaps in them that a daemon's kill or stop explains.
        load: The load average at the end (1, 5, 15 minutes): the machine is shared.
        phases_s: Seconds each phase took: start (the fleet), chaos (with the last
            restarts), settle, check (with the daemons' exit), stop (the fleet's).
    """

    manager_starts: int = 0
    restarts: int = 0
    longest_outage_s: float = 0.0
    longest_stop_s: float = 0.0
    longest_start_s: float = 0.0
    spool_peak_bytes: int = 0
    spooled_reports: int = 0
    unread_reports: int = 0
    spooled_points: int = 0
    points: int = 0
    explained_gaps: int = 0
    load: tuple[float, float, float] = (0.0, 0.0, 0.0)
    phases_s: dict[str, float] = field(default_factory=dict)


class _Node(ChaosRun):
    """One node as :class:`tests.chaos.ChaosRun` sees a daemon and its agents, the daemon
    run by the fleet: its process checks (leaders, settled, census, the final check) are
    used as they are. ``ChaosRun.__init__`` is not called: it writes a configuration of
    its own, and here the fleet writes it."""

    def __init__(
        self,
        proc: DaemonProc,
        root: Path,
        agents: list[str],
        report: SystemChaosReport,
        rng: random.Random,
    ) -> None:
        self.proc = proc
        self.node_id = proc.node_id
        self.root = root
        self.agents = agents
        self.work = proc.work
        self.owner = owner_marker(str(proc.work))
        self.random = rng
        self.report = report
        self.daemon = proc.proc
        self.disruptions: list[tuple[float, float]] = []


class _ChaosFleet(Fleet):
    """The harness's fleet, every daemon's spool watched from before the daemon starts."""

    def __init__(self, root: Path, **options: Any) -> None:
        super().__init__(root, **options)
        self.watches: dict[str, SpoolWatch] = {}

    def daemon_document(self, index: int, port: int, work: Path) -> dict[str, Any]:
        node_id = self.node_ids[index - 1]
        if node_id not in self.watches:
            self.watches[node_id] = SpoolWatch(node_id, work / SPOOL_DIR)
        return super().daemon_document(index, port, work)


class SystemChaosRun:
    """One chaos run of a Manager and ``nodes`` daemons (see the module documentation).

    Args:
        root: A short, empty directory (the fleet's).
        nodes: Daemons (``node-1`` ...).
        agents_per_node: Agents on each (``c0`` ...).
        seed: The random actions' seed (the timings, and so the outcome, still vary).
        actions: The actions and their weights (:data:`ACTIONS`).
        spool: The daemons' ``manager.spool`` (:data:`SPOOL_BOUND`).
        tls: Mutual TLS between the daemons and the Manager (the fleet's ``tls``).
    """

    def __init__(
        self,
        root: Path,
        nodes: int = 3,
        agents_per_node: int = 3,
        seed: int = 0,
        *,
        actions: Mapping[str, float] = ACTIONS,
        spool: Mapping[str, str] = SPOOL_BOUND,
        tls: bool = False,
    ) -> None:
        unknown = set(actions) - set(ACTIONS)
        if unknown:
            raise ValueError(
                f"SystemChaosRun: unknown actions {sorted(unknown)}; known: {list(ACTIONS)}"
            )
        self.actions = dict(actions)
        self.spool = dict(spool)
        self.agent_ids = [f"c{index}" for index in range(agents_per_node)]
        self.random = random.Random(seed)
        self.report = SystemChaosReport()
        self.nodes: list[_Node] = []
        self._lock = threading.Lock()
        self._busy: set[str] = set()  # "manager" or node ids being restarted or stopped
        self._threads: list[threading.Thread] = []
        self._store: Store | None = None
        self.fleet = _ChaosFleet(
            root, nodes=nodes, tls=tls, agents=self._agents, daemon_extra=self._daemon_extra
        )

    # -- configuration ---------------------------------------------------------------------

    def _agents(self, index: int) -> list[dict[str, Any]]:
        starts = self.fleet.node_dir(index) / "starts"
        starts.mkdir(parents=True, exist_ok=True)
        restart = {
            "policy": "always",
            "max_retries": -1,
            "backoff_base": "100ms",
            "backoff_max": "200ms",
        }
        return [
            shell_agent(agent_id, _agent_script(starts, agent_id), stop_timeout="2s",
                        restart=restart)
            for agent_id in self.agent_ids
        ]  # fmt: skip

    def _daemon_extra(self, index: int) -> Mapping[str, Any]:
        return {"manager": {"spool": self.spool}}

    # -- the run -----------------------------------------------------------------------------

    def run(self, duration_s: float, settle_timeout_s: float = 120.0) -> SystemChaosReport:
        """Run the chaos for ``duration_s``, settle, check; always clean up."""
        fleet = self.fleet
        phase = self._phase("start")
        try:
            with fleet:
                try:
                    phase = self._phase("chaos", phase)
                    self.report.manager_starts = 1
                    self.report.daemon_starts = len(fleet.daemons)
                    self.nodes = [
                        _Node(d, fleet.node_dir(i), self.agent_ids, self.report, self.random)
                        for i, d in enumerate(fleet.daemons, start=1)
                    ]
                    for node in self.nodes:
                        node._wait_all_started(settle_timeout_s)
                    self._chaos(duration_s)
                    phase = self._phase("settle", phase)
                    self._settle(settle_timeout_s)
                    phase = self._phase("check", phase)
                    self._check()
                    phase = self._phase("stop", phase)
                finally:
                    for thread in self._threads:  # nothing is restarted behind the clean-up
                        thread.join()
                    if self._store is not None:
                        self._store.close()
        finally:
            for watch in fleet.watches.values():
                watch.close()
            for node in self.nodes:
                node._cleanup()  # a daemon left behind, agents outside the fleet's view
            self._phase("", phase)
            self.report.load = os.getloadavg()
        return self.report

    def _phase(self, name: str, previous: tuple[str, float] | None = None) -> tuple[str, float]:
        """Start timing phase ``name``, ending ``previous`` (its seconds go to the report)."""
        now = time.monotonic()
        if previous is not None:
            self.report.phases_s[previous[0]] = round(now - previous[1], 2)
        return name, now

    def _chaos(self, duration_s: float) -> None:
        end = time.monotonic() + duration_s
        while time.monotonic() < end:
            self._act()
            time.sleep(self.random.uniform(0.1, 0.5))
        for thread in self._threads:  # everything comes back
            thread.join()

    def _act(self) -> None:
        what = self.random.choices(list(self.actions), list(self.actions.values()))[0]
        node = self.random.choice(self.nodes)
        if what == "kill agent":
            self._kill_agent(node, group=False)
        elif what == "kill agent group":
            self._kill_agent(node, group=True)
        elif what == "kill daemon":
            self._kill_daemon(node)
        elif what == "stop daemon":
            self._pause_daemon(node)
        elif what == "stop manager":
            self._restart_manager(signal.SIGTERM, what)
        else:
            self._restart_manager(signal.SIGKILL, what)

    def _claim(self, target: str) -> bool:
        with self._lock:
            if target in self._busy:
                return False
            self._busy.add(target)
            return True

    def _later(self, target: str, work: Callable[[], None]) -> None:
        """Run ``work`` in a thread; ``target`` is left alone until it is done."""

        def run() -> None:
            try:
                work()
            except Exception as exc:
                self._problem(f"{target}: {exc}")
            finally:
                with self._lock:
                    self._busy.discard(target)

        thread = threading.Thread(target=run, name=f"chaos {target}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _problem(self, text: str) -> None:
        with self._lock:
            self.report.problems.append(text)

    def _kill_agent(self, node: _Node, *, group: bool) -> None:
        leaders = node._leaders()
        if not leaders:
            return
        target = self.random.choice(sorted(leaders.values()))
        if not group:
            node._send(target, signal.SIGKILL, "kill agent")
            return
        try:
            os.killpg(target, signal.SIGKILL)
            self.report.actions["kill agent group"] += 1
        except ProcessLookupError:
            pass

    def _kill_daemon(self, node: _Node) -> None:
        if not self._claim(node.node_id):
            return
        delay = self.random.uniform(0, 1)
        began = time.time()
        code = node.proc.kill()
        self.report.actions["kill daemon"] += 1
        if code != -signal.SIGKILL:
            self._problem(f"{node.node_id}'s daemon had exited by itself with {code}")

        def restart() -> None:
            time.sleep(delay)
            node.proc.start()
            node.daemon = node.proc.proc
            with self._lock:
                node.disruptions.append((began, time.time()))
                self.report.daemon_starts += 1

        self._later(node.node_id, restart)

    def _pause_daemon(self, node: _Node) -> None:
        if not self._claim(node.node_id):
            return
        delay = self.random.uniform(0.1, 1)
        began = time.time()
        os.kill(node.proc.pid, signal.SIGSTOP)
        self.report.actions["stop daemon"] += 1

        def resume() -> None:
            time.sleep(delay)
            os.kill(node.proc.pid, signal.SIGCONT)
            with self._lock:
                node.disruptions.append((began, time.time()))

        self._later(node.node_id, resume)

    def _restart_manager(self, sig: int, what: str) -> None:
        if not self._claim("manager"):
            return
        delay = self.random.uniform(0, 3)
        manager = self.fleet.manager
        self.report.actions[what] += 1

        def restart() -> None:
            began = time.monotonic()
            code = manager.stop(sig)
            stopped = time.monotonic()
            if sig == signal.SIGTERM and code != 0:
                self._problem(f"the Manager exited with {code} on SIGTERM")
            time.sleep(delay)
            starting = time.monotonic()
            manager.start()
            now = time.monotonic()
            with self._lock:
                report = self.report
                report.manager_starts += 1
                report.longest_outage_s = max(report.longest_outage_s, now - began)
                report.longest_stop_s = max(report.longest_stop_s, stopped - began)
                report.longest_start_s = max(report.longest_start_s, now - starting)

        self._later("manager", restart)

    # -- settling ----------------------------------------------------------------------------

    def store(self) -> Store:
        """The Manager's database, opened read-only through its Store (no migration)."""
        if self._store is None:
            data = Path(self.fleet.manager.document["data_dir"])
            self._store = Store.open(f"sqlite:///{data / 'manager.db'}", migrate=False)
        return self._store

    def _unsettled(self) -> str | None:
        """What has not settled yet, or None."""
        for node in self.nodes:
            if not node._settled():
                return f"{node.node_id} runs {node._census()}"
        mismatch = self._view_mismatch()
        if mismatch:
            return mismatch
        for node_id, watch in self.fleet.watches.items():
            if watch.waiting():  # delivered means stored: the Manager answers once committed
                return f"{node_id}'s spool holds {watch.waiting()[:5]}"
        return None

    def _view_mismatch(self) -> str | None:
        """How the Manager's view differs from the hosts, or None."""
        try:
            api: Api = self.fleet.api()
            shown = {n["node_id"]: n["status"] for n in api.nodes()}
            wanted = dict.fromkeys(self.fleet.node_ids, "online")
            if shown != wanted:
                return f"the Manager shows the nodes {shown}, not {wanted}"
            for node in self.nodes:
                agents = {a["agent_id"]: (a["status"], a["pid"]) for a in api.agents(node.node_id)}
                host = {a: ("running", pid) for a, pid in node._leaders().items()}
                if agents != host:
                    return f"{node.node_id}: the Manager shows {agents}, the host runs {host}"
        except (ApiError, httpx.HTTPError) as exc:
            return f"the REST API failed: {type(exc).__name__}: {exc}"
        return None

    def _stored(self, node_id: str, kind: str) -> list[int]:
        rows = self.store().metric_rows(node_id, kind, start=0, end=2**62)
        return [row.timestamp for row in rows]

    def _missing_spooled(self, node_id: str, watch: SpoolWatch) -> list[tuple[str, int]]:
        stored = {(kind, t) for kind in STANDARD_TYPES for t in self._stored(node_id, kind)}
        return sorted(watch.points() - stored)

    def _settle(self, timeout_s: float) -> None:
        started = time.monotonic()
        deadline = started + timeout_s
        while (waiting := self._unsettled()) is not None:
            if time.monotonic() > deadline:
                self.report.problems.append(f"not settled after {timeout_s:g} s: {waiting}")
                return
            time.sleep(_POLL_S)
        self.report.settle_s = time.monotonic() - started
        time.sleep(0.5)  # a last restart or sync may still be on its way: it must not come

    # -- checks ------------------------------------------------------------------------------

    def _check(self) -> None:
        mismatch = self._view_mismatch()
        if mismatch:
            self.report.problems.append(mismatch)
        checked_until = int(time.time())
        for node in self.nodes:
            self._check_metrics(node, checked_until)
        for node in self.nodes:
            for line in dropped_lines(node.proc.log_text()):
                self.report.problems.append(f"{node.node_id} logged: {line}")
        for node in self.nodes:
            if not node.proc.running:
                code = node.proc.proc.returncode if node.proc.proc is not None else None
                self.report.problems.append(f"{node.node_id}: its daemon ended ({code})")
                continue
            self._check_zombies(node)
            node.daemon = node.proc.proc
            node._check()  # zombies; SIGTERM; runs, pids and restart counts vs state.json
            state = node.proc.state().get("agents", {})
            self.report.restarts += sum(int(r.get("restart_count", 0)) for r in state.values())

    def _check_zombies(self, node: _Node) -> None:
        """A zombie among the daemon's children must go by itself: the daemon reaps what it
        is told of (SIGCHLD). One still there after :data:`ZOMBIE_WAIT_S` is a problem, and
        whether a SIGCHLD sent by hand then reaps it says why it stayed."""
        daemon = psutil.Process(node.proc.pid)

        def zombies() -> dict[int, str]:
            found = {}
            for child in daemon.children():
                with contextlib.suppress(psutil.Error):
                    if child.status() == psutil.STATUS_ZOMBIE:
                        found[child.pid] = child.name()
            return found

        if not _wait(lambda: not zombies(), ZOMBIE_WAIT_S):
            left = zombies()
            os.kill(daemon.pid, signal.SIGCHLD)
            reaped = _wait(lambda: not set(left) & set(zombies()), ZOMBIE_WAIT_S)
            after = "reaped" if reaped else "still not reaped"
            self.report.problems.append(
                f"{node.node_id}: zombie children {left} of the daemon (pid {daemon.pid}) were"
                f" not reaped for {ZOMBIE_WAIT_S:g} s; {after} once it was sent a SIGCHLD"
            )

    def _check_metrics(self, node: _Node, checked_until: int) -> None:
        watch = self.fleet.watches[node.node_id]
        points = watch.points()
        self.report.spooled_reports += watch.reports
        self.report.spool_peak_bytes = max(self.report.spool_peak_bytes, watch.peak_bytes)
        self.report.unread_reports += watch.unread
        self.report.spooled_points += len(points)
        if watch.overflowed:
            self.report.problems.append(f"{node.node_id}: the spool watch missed events")
        for kind in STANDARD_TYPES:
            stamps = self._stored(node.node_id, kind)
            self.report.points += len(stamps)
            if len(set(stamps)) != len(stamps):
                self.report.problems.append(f"{node.node_id} {kind}: duplicate points stored")
            if not stamps or stamps[-1] < checked_until - 3 * GAP_LIMIT_S:
                last = stamps[-1] if stamps else None
                self.report.problems.append(
                    f"{node.node_id} {kind}: the newest stored point is {last},"
                    f" {checked_until} at the end"
                )
            gaps, explained = unexplained_gaps(stamps, node.disruptions)
            self.report.explained_gaps += explained
            for before, after in gaps:
                self.report.problems.append(
                    f"{node.node_id} {kind}: no point stored between {before} and {after}"
                    " and the daemon was neither killed nor stopped then"
                )
        missing = self._missing_spooled(node.node_id, watch)
        if missing:
            self.report.problems.append(
                f"{node.node_id}: {len(missing)} spooled points never stored: {missing[:10]}"
            )
