"""Agent updates through the real supervision core (transport.daemon.UpdateControl).

The agent is a real process supervised by a real Supervisor; the artifact comes from a
local HTTPS server. A good update is switched in and running; a bad one is rolled back,
and the supervisor's restart policy never fights the updater during the trial.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
from fault_server import FaultServer, TLSFiles
from updater_testlib import NOW, PLATFORM, TEST_LIMITS, Signer, agent_script

from supervisor import (
    AgentSpec,
    AgentState,
    HealthCheckSpec,
    LogSpec,
    RestartSpec,
    Supervisor,
    open_supervisor,
)
from transport.daemon import UpdateControl
from updater import AgentTarget, Reason, UpdateConfig, UpdateManager, UpdateRequest
from updater._envelope import encode_keyring

AGENT = "agent"


@dataclass
class World:
    tmp: Path
    server: FaultServer
    signer: Signer
    supervisor: Supervisor
    manager: UpdateManager
    binary: Path
    counter: int = 10

    def offer(self, data: bytes) -> UpdateRequest:
        self.counter += 1
        name = f"a{self.counter}"
        self.server.files[name] = data
        stmt = self.signer.statement(data, counter=self.counter, version=f"1.{self.counter}.0")
        return UpdateRequest(
            component=AGENT,
            version=stmt.version,
            download_url=self.server.url(f"/f/{name}"),
            hash=stmt.sha256,
            envelope=self.signer.envelope(stmt, "release").decode(),
        )

    def log(self) -> str:
        return (self.tmp / "logs" / "a1.log").read_text()


@pytest.fixture
async def world(
    https_server: FaultServer, tls_files: TLSFiles, signer: Signer, tmp_path: Path
) -> AsyncIterator[World]:
    binary = tmp_path / "bin" / "agent"
    binary.parent.mkdir()
    binary.write_bytes(agent_script("1.0.0"))
    binary.chmod(0o755)
    (tmp_path / "keyring.json").write_bytes(encode_keyring(signer.keyring))
    spec = AgentSpec(
        id="a1",
        binary_path=str(binary),
        start_seconds_s=0.2,
        stop_timeout_s=5.0,
        # A crash-looping new version would be restarted at once by this policy: the
        # hold is what keeps the supervisor out of the updater's trial.
        restart=RestartSpec(backoff_base_s=0.1, backoff_max_s=0.2, max_retries=-1),
        work_dir=str(tmp_path / "work"),
        log=LogSpec(file=str(tmp_path / "logs" / "a1.log")),
        # Sampled often enough for the 1 s trial to see a CPU hog (never for long enough
        # to turn unhealthy: the trial judges what is failing when it ends).
        health_check=HealthCheckSpec(interval_s=0.1, cpu_threshold=50),
    )
    async with open_supervisor([spec], work_dir=str(tmp_path)) as sup:
        config = UpdateConfig(
            state_dir=tmp_path / "state",
            download_dir=tmp_path / "downloads",
            backup_dir=tmp_path / "backups",
            platform=PLATFORM,
            trial_s=1.0,
            keyring_file=tmp_path / "keyring.json",
            max_backups=2,
            limits=TEST_LIMITS,
        )
        manager = UpdateManager(
            config,
            agents=[AgentTarget(AGENT, "a1", binary)],
            control=UpdateControl(sup),
            ssl_context=tls_files.client_context(),
            wall_clock=lambda: NOW,
        )
        await manager.adopt(AGENT, "1.0.0", counter=10)
        await sup.wait_state("a1", AgentState.RUNNING)
        yield World(tmp_path, https_server, signer, sup, manager, binary)


async def running_version(world: World) -> str:
    """The version the supervised process printed last."""
    with trio.fail_after(20):
        info = await world.supervisor.wait_state("a1", AgentState.RUNNING)
        while "agent" not in world.log():
            await trio.sleep(0.01)
    starts = [line for line in world.log().splitlines() if line.endswith("starting")]
    assert info.pid > 0
    return starts[-1].split()[1]


async def released(world: World) -> None:
    """The hold ends through the agent's inbox, right after the update: wait for it."""
    machine = world.supervisor._runners["a1"].machine
    with trio.fail_after(10):
        while machine.hold_restarts:
            await trio.sleep(0.01)


async def test_update_through_the_supervisor(world: World) -> None:
    """A good version is switched in, started by the supervisor, and committed."""
    result = await world.manager.update(world.offer(agent_script("1.11.0")))
    assert result.success, result
    assert world.binary.read_bytes() == agent_script("1.11.0")
    assert await running_version(world) == "1.11.0"
    assert world.supervisor.status("a1").status is AgentState.RUNNING
    await released(world)


async def test_crashing_version_is_rolled_back_not_restarted(world: World) -> None:
    """A new version that exits at once fails its trial once (the restart policy is held),
    is rolled back, and the old version runs under normal supervision again."""
    result = await world.manager.update(world.offer(agent_script("1.11.0", exit_code=3)))
    assert not result.success and result.rolled_back
    assert result.reason is Reason.START_FAILED
    assert any("fatal: bad config key" in line for line in result.log_tail)
    assert world.binary.read_bytes() == agent_script("1.0.0")
    assert await running_version(world) == "1.0.0"
    # Held during the trial: the crashing binary was started exactly once.
    assert world.log().count("agent 1.11.0 starting") == 1
    await released(world)


async def test_version_failing_its_health_checks_is_rolled_back(world: World) -> None:
    """Running but over its CPU threshold when the trial ends: rolled back as unhealthy."""
    result = await world.manager.update(world.offer(agent_script("1.11.0", busy=True)))
    assert not result.success and result.rolled_back
    assert result.reason is Reason.UNHEALTHY
    assert "cpu: " in result.error and "over 50.0%" in result.error
    assert world.binary.read_bytes() == agent_script("1.0.0")
    assert await running_version(world) == "1.0.0"
