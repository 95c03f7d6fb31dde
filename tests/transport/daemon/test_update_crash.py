"""An interrupted update ends on exactly one version, process included (issue 10, item 1).

The real daemon is killed at every step of an agent's install (SIGKILL just before the
N-th action, journal writes included, through the test-only crash hook), and during the
trial window (SIGKILL, and a plain SIGTERM); then it is started again. Afterwards exactly
one process of the agent runs, it was started from the file that is in place (its
executable-identity marker matches the file), and it runs the version that file holds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from supervisor._proc import scan_marked
from supervisor._process import MARKERS, file_identity, owner_marker
from tests.supervisor.helpers import wait_until
from tests.transport.daemon.update_world import World
from tests.updater.updater_testlib import agent_script
from transport.daemon._updates import CRASH_HOOK_ENV

NEW = agent_script("1.11.0")


def agent_processes(world: World) -> dict[int, tuple[str, ...]]:
    """Live processes marked as agent a1 of this daemon: pid -> markers."""
    found = scan_marked(MARKERS, owner_marker(str(world.work)))
    return {pid: markers for pid, markers in found.items() if markers[1] == "a1"}


def version_of(script: bytes) -> str:
    line = next(x for x in script.decode().splitlines() if x.endswith(' starting"'))
    return line.split()[2]


async def start_daemon(world: World, env: dict[str, str] | None = None) -> trio.Process:
    with (world.tmp / "daemon.log").open("ab") as stderr:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "transport.daemon", "run", "--config", str(world.config)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    world.daemons.append(process)
    return process


async def submit(world: World, request: Path) -> None:
    """`hostvisor update`, in the background: its answer does not matter here."""
    await trio.run_process(
        [sys.executable, "-m", "transport.daemon", "update", "--config", str(world.config),
         str(request), "--timeout", "60"],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )  # fmt: skip


async def assert_one_version(world: World) -> None:
    """Start the daemon again; then one process of a1, started from the file in place,
    running the version that file holds."""
    daemon = await start_daemon(world)
    # A request the crash left pending runs again now: wait for its answer first.
    spool = world.work / "updates"

    def answered() -> bool:
        names = [p.name for p in spool.glob("*.json")] if spool.is_dir() else ["?"]
        return all(name.endswith(".result.json") for name in names)

    await wait_until(answered)
    in_place = version_of(world.binary.read_bytes())

    def settled() -> bool:
        found = agent_processes(world)
        if len(found) != 1:
            return False
        [markers] = found.values()
        return markers[3] == file_identity(str(world.binary))

    await wait_until(settled)
    await wait_until(lambda: _latest_version(world) == in_place)
    with trio.move_on_after(1.5):  # a duplicate would show up now
        while len(agent_processes(world)) == 1:
            await trio.sleep(0.05)
    assert len(agent_processes(world)) == 1, agent_processes(world)
    daemon.send_signal(signal.SIGTERM)
    with trio.fail_after(30):
        await daemon.wait()


def _latest_version(world: World) -> str | None:
    lines = [line for line in world.agent_log() if line.endswith(" starting")]
    return lines[-1].split()[1] if lines else None


@pytest.mark.slow
@pytest.mark.parametrize("action", range(1, 11))
async def test_a_daemon_killed_at_any_step_of_an_install_ends_on_one_version(
    world: World, action: int
) -> None:
    """SIGKILL just before the N-th install action; the next start settles on one version."""
    world.write_config(verify_timeout="1s")
    await start_daemon(world, {CRASH_HOOK_ENV: str(action)})
    await wait_until(lambda: "supervising 1 agent(s)" in world.log())
    await world.running_version()
    request = world.request(NEW)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(submit, world, request)
        daemon = world.daemons[-1]
        with trio.move_on_after(30):
            await daemon.wait()  # crashed, or still serving (fewer actions than N)
        nursery.cancel_scope.cancel()
    if daemon.returncode is None:  # the install had fewer actions: it completed
        daemon.send_signal(signal.SIGTERM)
        await daemon.wait()
    await assert_one_version(world)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
async def test_a_daemon_stopped_during_the_trial_ends_on_one_version(
    world: World, sig: signal.Signals
) -> None:
    """The new version runs on trial when the daemon dies (or is told to stop): what runs
    afterwards is what the journal put in place, never the undone version from a file that
    is gone."""
    world.write_config(verify_timeout="60s")
    world.binary.write_bytes(agent_script("1.0.0", ready=True))
    daemon = await start_daemon(world)
    await wait_until(lambda: "supervising 1 agent(s)" in world.log())
    await world.running_version()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(submit, world, world.request(agent_script("1.11.0", ready=False)))
        await wait_until(lambda: _latest_version(world) == "1.11.0")  # on trial now
        daemon.send_signal(sig)
        with trio.fail_after(60):
            await daemon.wait()
        nursery.cancel_scope.cancel()
    await assert_one_version(world)
    if sig == signal.SIGTERM:
        # The shutdown finished the rollback itself, while the supervisor still ran.
        assert world.binary.read_bytes() == agent_script("1.0.0", ready=True)
        assert "the daemon stopped during the update" in world.log()  # answered, and logged
