"""The exit watcher: one task notices the exits of many processes (pidfds in one epoll set),
reaps each once, tells its owner, and outlives its own cancellation until every owner has
detached."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import trio

from supervisor._exits import ExitWatcher
from supervisor._process import Child, SpawnedChild, spawn
from tests.supervisor.helpers import SH


async def sleeper(tmp_path: Path) -> SpawnedChild:
    return await spawn(
        (SH, "-c", "exec sleep 1000"),
        cwd=str(tmp_path),
        env={},
        output_fd=lambda: os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC),
        run_id="r",
    )


async def test_every_exit_is_reaped_and_told_once(tmp_path: Path) -> None:
    """Each child killed is reaped with its status and its owner told exactly once."""
    exits = ExitWatcher()
    told: list[Child] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(exits.run)
        children = [await sleeper(tmp_path) for _ in range(5)]
        for child in children:
            assert exits.watch(child, told.append)
        for child in children:
            child.send_signal(signal.SIGKILL)
        with trio.fail_after(10):
            statuses = [await child.wait() for child in children]
        nursery.cancel_scope.cancel()
    assert sorted(map(id, told)) == sorted(map(id, children))  # each once
    assert all(status.signal == signal.SIGKILL for status in statuses)
    assert all(child.fileno() is None for child in children)  # pidfds released


async def test_a_forgotten_child_is_not_told(tmp_path: Path) -> None:
    """forget() before the exit: no callback (the owner leaves the process to run on)."""
    exits = ExitWatcher()
    told: list[Child] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(exits.run)
        child = await sleeper(tmp_path)
        other = await sleeper(tmp_path)
        assert exits.watch(child, told.append)
        assert exits.watch(other, told.append)
        exits.forget(child)
        child.send_signal(signal.SIGKILL)
        other.send_signal(signal.SIGKILL)
        with trio.fail_after(10):
            await other.wait()
        nursery.cancel_scope.cancel()
    assert told == [other]
    assert not child.exited
    child.close()


async def test_serves_after_cancellation_until_the_owners_detach(tmp_path: Path) -> None:
    """Cancelled while an owner still waits for an exit: that exit is still seen."""
    exits = ExitWatcher()
    seen = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(exits.run)
        exits.attach()
        child = await sleeper(tmp_path)
        assert exits.watch(child, lambda _: seen.set())
        nursery.cancel_scope.cancel()  # the watcher goes on: an owner is attached
        with trio.CancelScope(shield=True), trio.fail_after(10):
            await trio.sleep(0.05)
            child.send_signal(signal.SIGKILL)
            await child.wait()
            await seen.wait()
            exits.detach()  # now the watcher ends, and the nursery with it


async def test_without_a_running_watcher_the_caller_waits_itself(tmp_path: Path) -> None:
    """watch() refuses when the watcher does not run: the caller watches the child itself."""
    child = await sleeper(tmp_path)
    assert not ExitWatcher().watch(child, lambda _: None)
    child.send_signal(signal.SIGKILL)
    with trio.fail_after(10):
        status = await child.watch()
    assert status.signal == signal.SIGKILL
