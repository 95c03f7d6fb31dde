"""The trial window's timing rules, exactly, on Trio's MockClock (no processes, no sleeps).

The control here is an in-memory stand-in for the supervisor (the AgentControl protocol):
each start schedules when the agent becomes ready and when it exits, in Trio time.
"""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

from updater import Reason
from updater._agentupdate import agent_trial


class ScriptedControl:
    def __init__(self, nursery: trio.Nursery, ready_at: float, exit_at: float) -> None:
        self.nursery = nursery
        self.ready_at = ready_at
        self.exit_at = exit_at
        self.ready = trio.Event()
        self.exited = trio.Event()

    async def start_agent(self, agent_id: str) -> None:
        start = trio.current_time()

        async def ready() -> None:
            await trio.sleep_until(start + self.ready_at)
            if not self.exited.is_set():
                self.ready.set()

        async def exits() -> None:
            await trio.sleep_until(start + self.exit_at)
            self.exited.set()

        if math.isfinite(self.ready_at):
            self.nursery.start_soon(ready)
        if math.isfinite(self.exit_at):
            self.nursery.start_soon(exits)

    async def stop_agent(self, agent_id: str) -> None:
        self.exited.set()

    async def wait_ready(self, agent_id: str) -> None:
        await self.ready.wait()

    async def wait_exit(self, agent_id: str) -> int | None:
        await self.exited.wait()
        return 1

    def health_problem(self, agent_id: str) -> str | None:
        return None

    def tail(self, agent_id: str, lines: int) -> list[str]:
        return []


INF = math.inf


@pytest.mark.parametrize(
    ("ready_at", "exit_at", "reason", "ends_at"),
    [
        (1.0, INF, None, 30.0),  # ready, survives the whole window
        (1.0, 29.999, Reason.START_FAILED, 29.999),  # exits just before the window ends
        (1.0, 30.001, None, 30.0),  # exits just after: the trial had passed
        (INF, 0.0, Reason.START_FAILED, 0.0),  # exits at once: detected at once
        (INF, INF, Reason.NOT_READY, 30.0),  # hangs: not ready when the window ends
        (30.001, INF, Reason.NOT_READY, 30.0),  # ready too late
    ],
)
async def test_trial_window(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    ready_at: float,
    exit_at: float,
    reason: Reason | None,
    ends_at: float,
) -> None:
    control = ScriptedControl(nursery, ready_at, exit_at)
    start = trio.current_time()
    failure = await agent_trial(control, "a1", 30.0)
    assert (failure[0] if failure else None) is reason
    assert trio.current_time() - start == pytest.approx(ends_at)
    nursery.cancel_scope.cancel()


async def test_zero_trial_skips_the_watch(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    control = ScriptedControl(nursery, INF, 5.0)
    assert await agent_trial(control, "a1", 0.0) is None
    assert trio.current_time() == 0.0
    nursery.cancel_scope.cancel()


async def test_spawn_failure_is_start_failed() -> None:
    class Broken(ScriptedControl):
        async def start_agent(self, agent_id: str) -> None:
            raise OSError(8, "Exec format error")

    async with trio.open_nursery() as nursery:
        failure = await agent_trial(Broken(nursery, 0, 0), "a1", 30.0)
    assert failure is not None
    assert failure[0] is Reason.START_FAILED
    assert "Exec format error" in failure[1]
