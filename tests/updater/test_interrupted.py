"""An interrupted update ends on exactly one version, process included.

Real files and real agent processes. A cancellation (the daemon's shutdown) arrives at each
await of an update where the journal is open, and either

* the control works: the update puts the old version back and running before the
  cancellation propagates (unwrapped, when it arrived bare); or
* the control hangs (the supervisor is going away): the update leaves the journal, and the
  next start's recovery completes it and says which agent must not be adopted.

Then a simulated next daemon start does what the daemon must do with the recovery report,
and exactly one process of the agent runs, from the file the report identifies. The same
holds when the daemon dies at any action of the rollback that the cancellation started.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import pytest
import trio
from agent_env import AGENT, V1, Env, make_manager
from fault_server import TLSFiles
from updater_testlib import ProcessControl, agent_script

from updater import Outcome, Reason, RecoveryReport, UpdateManager
from updater._agentupdate import is_cancellation
from updater._plan import Action, Phase

NEW_OK = agent_script("1.11.0", ready=False)  # hangs in its trial until interrupted
NEW_FAILS = agent_script("1.11.0", exit_code=1)  # fails its trial at once


@dataclass(frozen=True)
class Point:
    """Where the cancellation arrives: the ``nth`` call of ``method``, before or after the
    call did its work; the journal's phase then; whether it arrives bare."""

    method: str
    nth: int
    after: bool
    artifact: bytes
    phase: Phase | None
    bare: bool


POINTS = {
    "stopping the old version": Point("stop_agent", 1, False, NEW_OK, Phase.BACKED_UP, True),
    "starting the new version": Point("start_agent", 1, True, NEW_OK, Phase.SWITCHED, True),
    "during the trial": Point("wait_ready", 1, False, NEW_OK, Phase.SWITCHED, False),
    "stopping the failed version": Point("stop_agent", 2, False, NEW_FAILS, Phase.SWITCHED, True),
    "restarting the old version": Point("start_agent", 2, True, NEW_FAILS, None, True),
}


class Interrupting(ProcessControl):
    """Cancels ``scope`` at ``point``; with ``hang``, every later stop never returns."""

    def __init__(self, env: Env, point: Point, *, hang: bool) -> None:
        super().__init__(env.control.nursery, env.control.binaries)
        self.point = point
        self.hang = hang
        self.scope = trio.CancelScope()
        self.armed = False  # set when the update begins
        self.fired = False
        self.seen: dict[str, int] = {}

    def _count(self, method: str) -> None:
        if self.armed:
            self.seen[method] = self.seen.get(method, 0) + 1

    async def _maybe_interrupt(self, method: str, *, after: bool) -> None:
        if not self.armed or self.fired:
            return
        if method != self.point.method or after != self.point.after:
            return
        if self.seen.get(method, 0) + (0 if after else 1) != self.point.nth:
            return
        self.fired = True
        self.scope.cancel()
        await trio.lowlevel.checkpoint()

    async def stop_agent(self, agent_id: str) -> None:
        if self.fired and self.hang:
            await trio.sleep_forever()
        await self._maybe_interrupt("stop_agent", after=False)
        self._count("stop_agent")
        await super().stop_agent(agent_id)

    async def start_agent(self, agent_id: str) -> None:
        await self._maybe_interrupt("start_agent", after=False)
        self._count("start_agent")
        await super().start_agent(agent_id)
        await self._maybe_interrupt("start_agent", after=True)

    async def wait_ready(self, agent_id: str) -> None:
        await self._maybe_interrupt("wait_ready", after=False)
        await super().wait_ready(agent_id)


async def interrupted_update(
    env: Env, manager: UpdateManager, control: Interrupting
) -> BaseException:
    """Run an update that ``control`` cancels; return what escaped ``update()``."""
    escaped: list[BaseException] = []
    control.armed = True
    with control.scope:
        try:
            await manager.update(env.offer(control.point.artifact))
        except BaseException as exc:
            escaped.append(exc)
            raise
    assert control.fired and control.scope.cancelled_caught
    return escaped[0]


async def next_start(
    env: Env, tls_files: TLSFiles, control: ProcessControl
) -> RecoveryReport | None:
    """A new daemon over the same agents (they outlived the old one): recover, then do with
    the report what the daemon must (see updater._recovery)."""
    manager = make_manager(env.tmp, tls_files, control)
    report = await manager.recover()
    placed = report.agents if report is not None else await manager.in_place()
    (agent,) = placed
    assert agent.binary is not None
    assert agent.binary.same_file(os.stat(env.binary))
    if agent.restart_required:
        await control.stop_every(agent.agent_id)  # never adopt: it may run the undone version
    if not control.live(agent.agent_id):
        await control.start_agent(agent.agent_id)
    return report


async def exactly_one_old_process(env: Env, control: ProcessControl) -> None:
    assert env.binary.read_bytes() == V1
    assert len(control.live("a1")) == 1, "exactly one process of the agent"
    assert await control.running_version("a1") == "1.0.0"


@pytest.mark.parametrize("where", list(POINTS))
async def test_cancelled_update_puts_the_old_version_back_and_running(
    env: Env, tls_files: TLSFiles, where: str
) -> None:
    point = POINTS[where]
    await env.control.stop_all()
    control = Interrupting(env, point, hang=False)
    await control.start_agent("a1")
    manager = make_manager(env.tmp, tls_files, control, trial_s=30.0)
    escaped = await interrupted_update(env, manager, control)
    # The Cancelled a plain await raised propagates as it came: never wrapped in a group.
    if point.bare:
        assert type(escaped) is trio.Cancelled
    else:  # raised in the trial's own nursery: Trio groups it, and the caller's scope takes it
        assert is_cancellation(escaped)
    assert not (env.tmp / "state" / "journal.json").exists()
    await exactly_one_old_process(env, control)
    assert await next_start(env, tls_files, control) is None
    await exactly_one_old_process(env, control)
    await control.stop_all()


@pytest.mark.parametrize("where", list(POINTS))
async def test_cancelled_update_with_a_hung_supervisor_is_completed_at_the_next_start(
    env: Env, tls_files: TLSFiles, where: str
) -> None:
    """The stop never returns: the bounded cleanup gives up and leaves everything to the next
    start, whose report makes the daemon replace a process of the undone version."""
    point = POINTS[where]
    await env.control.stop_all()
    control = Interrupting(env, point, hang=True)
    await control.start_agent("a1")
    manager = make_manager(env.tmp, tls_files, control, trial_s=30.0)
    manager.cancel_cleanup_s = 0.5
    await interrupted_update(env, manager, control)
    journal = manager.store.read_journal()
    assert (journal.phase if journal else None) is point.phase
    survivor = ProcessControl(control.nursery, control.binaries)
    survivor.every_run, survivor.runs, survivor.logs = control.every_run, control.runs, control.logs
    report = await next_start(env, tls_files, survivor)
    if point.phase is None:
        assert report is None
    elif point.phase is Phase.BACKED_UP:
        assert report is not None
        assert report.outcome is Outcome.ABORTED
        assert report.restart_required == ()
    else:
        assert report is not None
        assert (report.outcome, report.reason) == (Outcome.ROLLED_BACK, Reason.INTERRUPTED)
        assert report.restart_required == ("a1",)
        (agent,) = report.agents
        assert (agent.version, agent.undone_version) == ("1.0.0", "1.11.0")
        assert agent.binary is not None
        assert agent.binary.sha256 == hashlib.sha256(V1).hexdigest()
    await exactly_one_old_process(env, survivor)
    await survivor.stop_all()


class Crash(BaseException):
    """The daemon died just before an action of its cancellation cleanup."""


CLEANUP = 7
"""Actions of the cleanup's recovery: journal rolling_back, restore, discard the new version,
discard the backup copy, prune, remove the journal; then the start-up prune of backups."""


@pytest.mark.parametrize("index", range(CLEANUP + 1))
async def test_death_during_the_cleanup_leaves_a_journal_the_next_start_completes(
    env: Env, tls_files: TLSFiles, index: int
) -> None:
    """Cancelled during the trial, then killed before action ``index`` of its cleanup
    (``CLEANUP``: not killed): the journal, at whatever phase, is completed next time."""
    await env.control.stop_all()
    control = Interrupting(env, POINTS["during the trial"], hang=False)
    await control.start_agent("a1")
    after: list[Action] = []

    def die(action: Action) -> None:
        if control.fired:
            if len(after) == index:
                raise Crash(action)
            after.append(action)

    manager = make_manager(env.tmp, tls_files, control, trial_s=30.0, hook=die)
    control.armed = True
    crashed = False
    try:
        with control.scope:
            await manager.update(env.offer(NEW_OK))
    except Crash:
        crashed = True
    assert crashed == (index < CLEANUP)
    journal = manager.store.read_journal()
    report = await next_start(env, tls_files, control)
    if journal is not None:  # killed before the journal was removed
        assert index <= 5
        assert report is not None
        assert (report.outcome, report.journal_phase) == (Outcome.ROLLED_BACK, journal.phase)
        assert report.restart_required == ("a1",)
    else:
        assert report is None
    await exactly_one_old_process(env, control)
    await control.stop_all()


async def test_in_place_tells_what_is_installed(env: Env, tls_files: TLSFiles) -> None:
    """Without an open journal, in_place() gives each agent's recorded version and the
    identity of its binary; a binary replaced by hand has no recorded version."""
    (agent,) = await env.manager.in_place()
    assert (agent.component, agent.agent_id, agent.version) == (AGENT, "a1", "1.0.0")
    assert agent.binary is not None
    assert agent.binary.real_path == str(env.binary.resolve())
    assert not agent.restart_required
    assert (await env.manager.update(env.offer(agent_script("1.11.0")))).success
    (after,) = await env.manager.in_place()
    assert after.version == "1.11.0"
    assert after.binary is not None and after.binary.inode != agent.binary.inode
    env.binary.write_bytes(b"#!/bin/sh\nexec sleep 600\n")
    (by_hand,) = await env.manager.in_place()
    assert by_hand.version is None
