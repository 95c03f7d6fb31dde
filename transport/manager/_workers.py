"""gRPC ingest worker processes that share the Manager's gRPC port (``grpc.workers``). IO.

Theory of operation
-------------------
One Python process runs one thread of Python at a time: at a fleet's rate of calls the
gRPC thread and the writer thread of :mod:`._ingest` want more than the one core that
gives. With ``grpc.workers: N`` (N > 1) the Manager's own process serves HTTP, the jobs
and the :class:`~._events.EventHub`, and N **worker processes** serve gRPC: each runs the
whole ingest path of a Manager with one worker (its own store connections,
:class:`~._ingest.Ingest` writer thread, and gRPC server on its own thread), and each binds
the same ``host:port`` with ``SO_REUSEPORT``, so the kernel spreads the daemons'
connections over them. The database is shared, as by several Managers on one database:
SQLite's ``BEGIN IMMEDIATE`` makes the writers take turns, PostgreSQL lets them write
together. The main process runs the migrations before any worker starts; workers do not.

**Ownership.** :class:`WorkerPool` (a task of the main process) starts each worker with
:func:`trio.lowlevel.open_process` and a socket pair: the configuration goes down it, and
everything the worker has to say comes back up it, framed (a 4-byte length, then a
pickle; both ends are this program). A worker says ``bound`` once it listens, or
``failed`` with the error that stopped it from starting; :meth:`WorkerPool.run` reports
the gRPC address once every worker is bound (with port 0 the first worker picks the port
and the others join it), or raises the first worker's error. A worker that dies later is
started again after a backoff (:mod:`._workers_policy`), and the death is logged. When
the pool is cancelled it sends SIGTERM to every worker (which stops serving as a
one-process Manager does: calls in flight get the gRPC grace period, the batch being
written finishes), reads what they still send, and kills with SIGKILL whichever has not
exited after :data:`STOP_GRACE_S`; each is reaped before :meth:`WorkerPool.run` returns.
A worker also stops by itself when its socket to the main process closes, which is how
it learns that the Manager was killed (SIGKILL included: the kernel closes the socket):
no worker outlives its Manager.

**What comes back.** Every :data:`FLUSH_S` a worker sends one frame with what happened
since the last: the calls its gRPC service made on the event hub (``node_status``,
``node_seen``, ``agents_reported``), applied in the same order to the main process's hub
(the console's live view sees every worker's nodes), its log records (logged again by
the main process under the same logger names, prefixed ``[worker N]``, so that there is
one log and one log file), and, every :data:`STATS_S`, its ingest counters
(:func:`~._run.ingest_reader`'s figures). :meth:`WorkerPool.statistics` sums the
counters of the live workers with the last counters of those that died, which
``/metrics`` reads as it reads a single ingest's (a worker killed loses at most its last
:data:`STATS_S` of counts).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any, NoReturn

import trio

from ._errors import StoreError
from ._workers_policy import RestartPolicy

if TYPE_CHECKING:
    from transport import AgentStateRecord

    from ._config import ManagerConfig
    from ._service import EventSink

__all__ = ["FLUSH_S", "STATS_S", "STOP_GRACE_S", "WorkerPool", "worker_main"]

logger = logging.getLogger("hostvisor.manager.workers")

FLUSH_S = 0.1
"""How often a worker sends its events and log records."""
STATS_S = 1.0
"""How often a worker sends its ingest counters."""
STOP_GRACE_S = 15.0
"""How long a worker may take to stop after SIGTERM before it is killed."""
MAX_PENDING = 100_000
"""Events or log records a worker keeps for the main process at most (the rest dropped)."""

_HEADER = struct.Struct(">I")
_EVENT_METHODS = frozenset({"node_status", "node_seen", "agents_reported"})
_WORKER_CODE = "import sys; from transport.manager._workers import worker_main; worker_main()"


# --------------------------------------------------------------------------- framing


def _frame(message: object) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


class _Frames:
    """Frames read from a Trio stream."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def next(self) -> Any:
        """The next message; raises EOFError at the end of the stream."""
        header = await self._exactly(_HEADER.size)
        (size,) = _HEADER.unpack(header)
        return pickle.loads(await self._exactly(size))

    async def _exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            data = await self._stream.receive_some(max(65536, size - len(self._buffer)))
            if not data:
                raise EOFError
            self._buffer += data
        chunk = bytes(self._buffer[:size])
        del self._buffer[:size]
        return chunk


def _receive_blocking(sock: socket.socket) -> Any:
    """The next message from a blocking socket; raises EOFError at its end."""

    def exactly(size: int) -> bytes:
        chunks = bytearray()
        while len(chunks) < size:
            data = sock.recv(size - len(chunks))
            if not data:
                raise EOFError
            chunks += data
        return bytes(chunks)

    (size,) = _HEADER.unpack(exactly(_HEADER.size))
    return pickle.loads(exactly(size))


# --------------------------------------------------------------------------- the pool


class WorkerPool:
    """The gRPC ingest workers of a Manager (see the module documentation).

    Args:
        config: The configuration (``grpc.workers`` workers; the gRPC listener, its TLS
            and the database are the workers').
        events: Where the workers' console events go (the main process's hub), or None.
        policy: The restart backoff.
        stop_grace_s: How long a worker may take to stop before it is killed.

    Raises:
        ValueError: ``grpc.workers`` below 1.
    """

    def __init__(
        self,
        config: ManagerConfig,
        *,
        events: EventSink | None = None,
        policy: RestartPolicy | None = None,
        stop_grace_s: float = STOP_GRACE_S,
    ) -> None:
        if config.grpc.workers < 1:
            workers = config.grpc.workers
            raise ValueError(f"WorkerPool: grpc.workers must be at least 1; got {workers}")
        self._config = config
        self._events = events
        self._policy = policy or RestartPolicy()
        self._stop_grace_s = stop_grace_s
        self._live: dict[int, dict[str, float]] = {}
        self._retired: dict[str, float] = {}
        self._pids: dict[int, int] = {}
        self._bound_once: set[int] = set()
        self.restarts = 0
        """Workers started again after they died."""

    @property
    def count(self) -> int:
        """How many workers the pool keeps running."""
        return self._config.grpc.workers

    def pids(self) -> dict[int, int]:
        """The process id of each worker running now, by worker number."""
        return dict(self._pids)

    def statistics(self) -> dict[str, float]:
        """The workers' ingest counters, summed (the figures of
        :func:`~._run.ingest_reader`; see the module documentation)."""
        total = dict(self._retired)
        for figures in list(self._live.values()):
            for name, value in figures.items():
                total[name] = total.get(name, 0.0) + value
        return total

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the workers, keep them running until cancelled, then stop and reap them.

        Start with ``await nursery.start(pool.run)``: started with the gRPC address once
        every worker listens.

        Raises:
            ListenError: The gRPC address cannot be bound.
            StoreError: A worker could not open the database.
            RuntimeError: A worker failed to start for another reason.
        """
        async with trio.open_nursery() as nursery:
            address: str = await nursery.start(self._keep, 0, self._config)
            config = self._config
            if config.grpc.port == 0:  # the others join the port the first one picked
                port = int(address.rpartition(":")[2])
                config = replace(config, grpc=replace(config.grpc, port=port))
            async with trio.open_nursery() as starting:
                for index in range(1, self.count):
                    starting.start_soon(nursery.start, self._keep, index, config)
            logger.info(
                "gRPC served by %d worker processes (pids %s)",
                self.count,
                ", ".join(str(pid) for _, pid in sorted(self._pids.items())),
            )
            task_status.started(address)

    async def _keep(
        self, index: int, config: ManagerConfig, *, task_status: trio.TaskStatus[str]
    ) -> NoReturn:
        """Run worker ``index``, and start it again whenever it dies."""
        status: trio.TaskStatus[str] | None = task_status
        failures = 0
        while True:
            started = trio.current_time()
            code: int | str
            try:
                code = await self._run_one(index, config, status)
            except Exception as exc:
                if index not in self._bound_once:  # never listened: the pool cannot start
                    raise
                logger.error("gRPC worker %d could not be started: %s", index, exc)
                code = "unknown"
            status = None
            failures = self._policy.failures(failures, started=started, now=trio.current_time())
            delay = self._policy.delay_s(failures)
            logger.warning(
                "gRPC worker %d exited with status %s; starting it again in %.1f s",
                index,
                code,
                delay,
            )
            await trio.sleep(delay)
            self.restarts += 1

    async def _run_one(
        self, index: int, config: ManagerConfig, task_status: trio.TaskStatus[str] | None
    ) -> int:
        """Run one worker process until it exits (its status), or until cancelled (it is
        stopped and reaped). With ``task_status`` (its first start) a worker that fails
        to start raises its error."""
        ours, theirs = socket.socketpair()
        nothing = os.open(os.devnull, os.O_RDONLY)
        try:
            process = await trio.lowlevel.open_process(
                [sys.executable, "-c", _WORKER_CODE, str(theirs.fileno())],
                stdin=nothing,
                pass_fds=(theirs.fileno(),),
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
            os.close(nothing)
        self._pids[index] = process.pid
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
        frames = _Frames(stream)
        try:
            await stream.send_all(_frame((index, config)))
            failure: tuple[str, str] | None = None
            with contextlib.suppress(EOFError, trio.BrokenResourceError):
                while True:
                    message = await frames.next()
                    if message[0] == "bound":
                        if task_status is not None:
                            task_status.started(message[1])
                            task_status = None
                        self._bound_once.add(index)
                    elif message[0] == "failed":
                        failure = (message[1], message[2])
                    else:
                        self._apply(index, message)
            code = await process.wait()
            if task_status is not None:  # it never listened
                raise _start_error(index, code, failure)
            if failure is not None:
                logger.error("gRPC worker %d failed: %s: %s", index, *failure)
            return code
        finally:
            with trio.CancelScope(shield=True):
                await self._stop(index, process, frames)
                await stream.aclose()
                self._retire(index)

    async def _stop(self, index: int, process: trio.Process, frames: _Frames) -> None:
        """SIGTERM, read what the worker still sends, SIGKILL after the grace; reap."""
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            with trio.move_on_after(self._stop_grace_s):
                with contextlib.suppress(EOFError, trio.BrokenResourceError):
                    while True:
                        message = await frames.next()
                        if message[0] == "batch":
                            self._apply(index, message)
                await process.wait()
            if process.returncode is None:
                grace = self._stop_grace_s
                logger.warning("gRPC worker %d did not stop in %.0f s: killed", index, grace)
                process.kill()
        await process.wait()
        self._pids.pop(index, None)

    def _apply(self, index: int, message: tuple[Any, ...]) -> None:
        """Apply a worker's ``batch``: its events, log records and counters."""
        _, events, records, figures = message
        hub = self._events
        if hub is not None:
            for name, arguments in events:
                if name in _EVENT_METHODS:
                    getattr(hub, name)(*arguments)
        for name, level, text in records:
            target = logging.getLogger(name)
            if target.isEnabledFor(level):
                target.log(level, "[worker %d] %s", index, text)
        if figures is not None:
            self._live[index] = figures

    def _retire(self, index: int) -> None:
        """Keep the counters of a worker that ended (not its gauges)."""
        figures = self._live.pop(index, {})
        for name, value in figures.items():
            if name.endswith("_total"):
                self._retired[name] = self._retired.get(name, 0.0) + value


def _start_error(index: int, code: int, failure: tuple[str, str] | None) -> Exception:
    from transport import ListenError

    if failure is None:
        return RuntimeError(f"gRPC worker {index} exited with status {code} before it listened")
    kind, message = failure
    if kind == "ListenError":
        return ListenError(message)
    if kind == "StoreError":
        return StoreError(message)
    return RuntimeError(f"gRPC worker {index} failed to start: {kind}: {message}")


# --------------------------------------------------------------------------- the worker


class _Link:
    """A worker's end of its socket: what it sends to the main process, from any thread
    (see the module documentation), and the event hub calls of its gRPC service."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._lock = threading.Lock()
        self._events: list[tuple[str, tuple[Any, ...]]] = []
        self._records: list[tuple[str, int, str]] = []
        self._dropped = 0
        self._closed = threading.Event()
        self._stats: Callable[[], dict[str, float]] | None = None
        self._stats_due = 0.0
        self._thread = threading.Thread(target=self._send_loop, name="worker-link", daemon=True)
        self._thread.start()

    # --- the event hub of the worker's gRPC service ----------------------------------------

    def node_status(self, node_id: str, status: str) -> None:
        """Forward :meth:`EventHub.node_status <._events.EventHub.node_status>`."""
        self._event("node_status", (node_id, status))

    def node_seen(self, node_id: str) -> None:
        """Forward :meth:`EventHub.node_seen <._events.EventHub.node_seen>`."""
        self._event("node_seen", (node_id,))

    def agents_reported(self, node_id: str, states: Sequence[AgentStateRecord]) -> bool:
        """Forward :meth:`EventHub.agents_reported <._events.EventHub.agents_reported>`
        (whether the agents changed is for the main process's hub to say: True)."""
        self._event("agents_reported", (node_id, tuple(states)))
        return True

    def _event(self, name: str, arguments: tuple[Any, ...]) -> None:
        with self._lock:
            if len(self._events) < MAX_PENDING:
                self._events.append((name, arguments))
            else:
                self._dropped += 1

    # --- the rest ---------------------------------------------------------------------------

    def record(self, name: str, level: int, text: str) -> None:
        """Forward a log record."""
        with self._lock:
            if len(self._records) < MAX_PENDING:
                self._records.append((name, level, text))

    def counters(self, read: Callable[[], dict[str, float]] | None) -> None:
        """Send ``read()`` every :data:`STATS_S` (None: stop)."""
        self._stats = read

    def send(self, message: tuple[Any, ...]) -> None:
        """Send a message now (``bound``, ``failed``), after what is pending."""
        self._flush(force_stats=False)
        with self._lock:
            self._write(message)

    def close(self) -> None:
        """Send what is pending and the last counters; stop the sending thread."""
        self._closed.set()
        self._thread.join()
        self._flush(force_stats=True)

    def _send_loop(self) -> None:
        while not self._closed.wait(FLUSH_S):
            self._flush(force_stats=False)

    def _flush(self, *, force_stats: bool) -> None:
        read = self._stats
        figures = None
        now = time.monotonic()
        if read is not None and (force_stats or now >= self._stats_due):
            self._stats_due = now + STATS_S
            figures = read()
        with self._lock:
            events, self._events = self._events, []
            records, self._records = self._records, []
            if self._dropped:
                records.append((logger.name, logging.WARNING, f"{self._dropped} events dropped"))
                self._dropped = 0
            if events or records or figures is not None:
                self._write(("batch", events, records, figures))

    def _write(self, message: tuple[Any, ...]) -> None:
        """Send a frame (under ``_lock``); when the main process is gone, stop."""
        try:
            self._sock.sendall(_frame(message))
        except OSError:
            _gone()


def _gone() -> None:
    """The main process is gone: stop this worker as SIGTERM does."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(os.getpid(), signal.SIGTERM)


class _Forward(logging.Handler):
    """Log records of a worker, sent to the main process."""

    def __init__(self, link: _Link) -> None:
        super().__init__()
        self._link = link
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._link.record(record.name, record.levelno, self.format(record))
        except Exception:  # pragma: no cover - as logging.Handler does
            self.handleError(record)


def worker_main() -> None:
    """A worker process's program: ``python -c ... FD``, FD its socket to the main process."""
    sock = socket.socket(fileno=int(sys.argv[1]))
    index, config = _receive_blocking(sock)
    link = _Link(sock)
    level = "debug" if config.server.mode == "debug" else config.log.level
    logging.basicConfig(
        level=getattr(logging, level.upper()), handlers=[_Forward(link)], force=True
    )
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    try:
        trio.run(_serve_worker, config, link, sock)
    except Exception as exc:
        cause = _cause(exc)
        if not _is_start_error(cause):
            logger.error("gRPC worker %d failed", index, exc_info=exc)
        link.send(("failed", type(cause).__name__, str(cause)))
    finally:
        link.close()
        sock.close()


def _is_start_error(exc: BaseException) -> bool:
    from transport import ListenError

    return isinstance(exc, ListenError | StoreError)


def _cause(exc: BaseException) -> BaseException:
    """What failed, out of the exception groups of Trio's nurseries: the first
    ListenError or StoreError in it, or else its first exception."""
    if not isinstance(exc, BaseExceptionGroup):
        return exc
    leaves = [_cause(inner) for inner in exc.exceptions]
    return next((leaf for leaf in leaves if _is_start_error(leaf)), leaves[0])


async def _serve_worker(config: ManagerConfig, link: _Link, sock: socket.socket) -> None:
    """Serve gRPC as a Manager with one worker does, until SIGTERM or SIGINT, or until
    the main process closes the socket."""
    from transport import Listener
    from transport._grpc_thread import serve_grpc_in_thread

    from ._config import server_tls
    from ._ingest import Ingest, store_writer
    from ._run import (
        GRPC_GRACE_S,
        GRPC_SERVER_OPTIONS,
        ingest_reader,
        open_store,
        tune_for_serving,
    )
    from ._service import manager_routes

    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        tls = server_tls(config)
        store = await trio.to_thread.run_sync(partial(open_store, config, migrate=False))
        try:
            async with trio.open_nursery() as nursery:
                ingest = Ingest(store_writer(store))
                await nursery.start(ingest.run)
                link.counters(ingest_reader(ingest))
                routes = manager_routes(
                    ingest, bind_node_identity=config.grpc.tls.bind_node_identity, events=link
                )
                serve = partial(
                    serve_grpc_in_thread,
                    routes,
                    [Listener(config.grpc.address, tls)],
                    options=(*GRPC_SERVER_OPTIONS, ("grpc.so_reuseport", 1)),
                    grace_s=GRPC_GRACE_S,
                )
                (address,) = await nursery.start(serve)
                link.send(("bound", address))
                tune_for_serving()
                threading.Thread(
                    target=_watch_parent, args=(sock,), name="worker-parent", daemon=True
                ).start()
                async for _ in signals:
                    break
                nursery.cancel_scope.cancel()
        finally:
            store.close()


def _watch_parent(sock: socket.socket) -> None:
    """Block until the main process closes its end of the socket, then stop."""
    with contextlib.suppress(OSError):
        while sock.recv(4096):
            pass
    _gone()
