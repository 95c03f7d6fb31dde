"""One task that notices the exit of every supervised process (pidfds in one epoll set).

A process is pinned by a pidfd (see :mod:`supervisor._process`), which becomes readable
when it exits. Waiting for each with a task of its own costs a Trio task, its coroutine
frames, a cancel scope and an epoll registration per agent: about 3.7 KB, for hundreds of
agents that mostly never exit. :class:`ExitWatcher` instead keeps every pidfd in one
private ``epoll`` set and waits in one task for that set to become readable; each
process that exited is then reaped (:meth:`~supervisor._process.Child.reap`) and its
owner's callback is called, synchronously, in the Trio thread.

Lifetime: the owners (the agents' runners) :meth:`~ExitWatcher.attach` when they start
and :meth:`~ExitWatcher.detach` when they end. When the watcher's task is cancelled (the
supervisor shuts down), it goes on serving, shielded, until the last owner has detached:
a runner that stops its process at shutdown waits for that exit through it.
"""

from __future__ import annotations

import contextlib
import select
from collections.abc import Callable

import trio

from ._process import Child

__all__ = ["ExitWatcher"]

#: Events read from the epoll set per call (more are read in further calls).
_BATCH = 64


class ExitWatcher:
    """Waits for the exits of many processes in one task (see the module docstring)."""

    __slots__ = ("_epoll", "_idle", "_owners", "_watched")

    def __init__(self) -> None:
        self._epoll: select.epoll | None = None
        self._watched: dict[int, tuple[Child, Callable[[Child], None]]] = {}
        self._owners = 0
        self._idle: trio.CancelScope | None = None

    def watch(self, child: Child, on_exit: Callable[[Child], None]) -> bool:
        """Call ``on_exit(child)`` once the child has exited and been reaped.

        Returns:
            False when the child cannot be watched here (it has no pidfd, or the watcher
            is not running): the caller waits for it another way.
        """
        fd = child.fileno()
        if fd is None or self._epoll is None:
            return False
        self._epoll.register(fd, select.EPOLLIN)
        self._watched[fd] = (child, on_exit)
        return True

    def forget(self, child: Child) -> None:
        """Stop watching a child (before its pidfd is closed without reaping it)."""
        fd = child.fileno()
        if fd is not None and self._watched.get(fd, (None,))[0] is child:
            del self._watched[fd]
            if self._epoll is not None:
                with contextlib.suppress(OSError):
                    self._epoll.unregister(fd)

    def attach(self) -> None:
        """An owner starts: the watcher serves until it has detached."""
        self._owners += 1

    def detach(self) -> None:
        """An owner ended: it watches nothing any more."""
        self._owners -= 1
        if self._owners <= 0 and self._idle is not None:
            self._idle.cancel()  # a shutdown waits for no one else

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled, then (shielded) until every owner has detached."""
        epoll = self._epoll = select.epoll()
        try:
            task_status.started()
            try:
                while True:
                    await trio.lowlevel.wait_readable(epoll.fileno())
                    self._collect(epoll)
            finally:
                with trio.CancelScope(shield=True):
                    while self._owners > 0:
                        with trio.CancelScope() as self._idle:
                            await trio.lowlevel.wait_readable(epoll.fileno())
                        self._idle = None
                        self._collect(epoll)
        finally:
            self._epoll = None
            self._watched.clear()
            with contextlib.suppress(RuntimeError):
                trio.lowlevel.notify_closing(epoll.fileno())
            epoll.close()

    def _collect(self, epoll: select.epoll) -> None:
        """Reap every process whose pidfd is readable and tell its owner."""
        while True:
            events = epoll.poll(0, _BATCH)
            for fd, _ in events:
                entry = self._watched.pop(fd, None)
                with contextlib.suppress(OSError):
                    epoll.unregister(fd)
                if entry is None:
                    continue
                child, on_exit = entry
                child.reap()
                on_exit(child)
            if len(events) < _BATCH:
                return
