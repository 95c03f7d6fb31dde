"""The daemon's updates end to end: `hostvisor run` and `update` as real
processes, a real artifact server on 127.0.0.1, real agents, real install directories.

Every daemon started here is killed in a ``finally``, and so is every process left in the
test's directory (agents outlive the daemon by design).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio
import yaml

from tests.supervisor.helpers import alive, wait_until
from tests.transport.daemon.update_world import AGENT, World, archive
from tests.updater.updater_testlib import agent_script
from transport.daemon._cli import EXIT_CODES, EXIT_RESTART, main
from updater import UpdateManager, UpdateRequest
from updater._fs import read_link


async def test_agent_update_through_the_spool(world: World) -> None:
    """`hostvisor update` hands a signed request to the daemon, which installs it: the
    agent runs the new version, and the request and its result end up in done/."""
    await world.start_serving()
    code, result, err = await world.update(world.request(agent_script("1.11.0")))
    assert code == 0, err
    assert result is not None
    assert (result["success"], result["new_version"], result["rolled_back"]) == (
        True,
        "1.11.0",
        False,
    )
    assert world.binary.read_bytes() == agent_script("1.11.0")
    assert await world.running_version() == "1.11.0"
    spool = world.work / "updates"
    assert sorted(p.name for p in spool.iterdir()) == ["done"]
    done = sorted(p.name for p in (spool / "done").iterdir())
    assert len(done) == 2 and done[0].endswith(".json") and done[1].endswith(".result.json")
    assert oct(spool.stat().st_mode & 0o777) == "0o700"
    assert "installed 1.11.0" in world.log()


async def test_bad_signature_is_refused_and_the_agent_keeps_running(world: World) -> None:
    await world.start_serving()
    pid = await world.agent_pid()
    request = world.request(agent_script("1.11.0"))
    doc = json.loads(request.read_text())
    other = json.loads(json.loads(world.request(agent_script("1.12.0")).read_text())["envelope"])
    envelope = json.loads(doc["envelope"])
    envelope["signatures"] = other["signatures"]  # valid signatures, of another statement
    doc["envelope"] = json.dumps(envelope)
    request.write_text(json.dumps(doc))
    code, result, _ = await world.update(request)
    assert code == 1
    assert result is not None
    assert (result["success"], result["reason"], result["code"]) == (
        False,
        "bad_signature",
        "D4002",
    )
    assert world.server.hits == [], "refused before downloading"
    assert world.binary.read_bytes() == agent_script("1.0.0")
    assert await world.agent_pid() == pid and alive(pid)
    assert await world.running_version() == "1.0.0"


async def test_daemon_self_update_exits_75_and_leaves_agents_running(world: World) -> None:
    """A successful update of component daemon: result first, then a graceful exit with 75
    (the service manager restarts it from `current`); the agent is not stopped."""
    daemon = await world.start_serving()
    pid = await world.agent_pid()
    code, result, err = await world.update(
        world.request(archive({"hostvisor": b"#!/bin/sh\n"}), component="daemon")
    )
    assert code == 0, err
    assert result is not None
    assert result["success"] and result["restart_required"]
    assert result["old_version"] == "1.0.0", "the install was adopted at start"
    with trio.fail_after(30):
        assert await daemon.wait() == EXIT_RESTART
    assert alive(pid)
    current = read_link(world.root / "current")
    assert current is not None and Path(current).name.startswith("1.11.0-11-")
    assert read_link(world.root / "previous") == str(world.root / "versions" / "1.0.0")


async def test_reexec_after_self_update(world: World) -> None:
    """With `restart: reexec` the daemon replaces itself with its command line."""
    marker = world.tmp / "reexeced"
    world.write_config(restart="reexec", reexec_command=["/bin/sh", "-c", f"echo $$ > {marker}"])
    daemon = await world.start_serving()
    code, _, err = await world.update(
        world.request(archive({"hostvisor": b"#!/bin/sh\n"}), component="daemon")
    )
    assert code == 0, err
    with trio.fail_after(30):
        assert await daemon.wait() == 0  # the exit status of the re-executed command
    assert marker.read_text().strip() == str(daemon.pid), "same PID: exec, not a new process"


async def switch_daemon(world: World, trial_s: float) -> UpdateManager:
    """Switch the daemon's install to 1.11.0 in-process, as the previous daemon process
    would have before exiting with 75; its trial is now open."""
    manager, install = world.manager(trial_s=trial_s)
    await install.adopt(manager, "1.0.0", counter=10)
    data = archive({"hostvisor": b"#!/bin/sh\n"})
    world.server.files["d"] = data
    statement = world.signer.statement(data, component="daemon", counter=11, version="1.11.0")
    switched = await manager.update(
        UpdateRequest(
            "daemon", "1.11.0", world.server.url("/f/d"),
            envelope=world.signer.envelope(statement).decode(),
        )
    )  # fmt: skip
    assert switched.success and switched.restart_required
    assert read_link(world.root / "current") != str(world.root / "versions" / "1.0.0")
    return manager


async def test_start_with_an_expired_trial_restores_current_and_exits_75(world: World) -> None:
    """An unconfirmed daemon trial past its deadline: the next start swaps `current` back
    before starting any agent, and exits 75 to be started again from it."""
    await switch_daemon(world, trial_s=0.0)
    daemon = await world.start_daemon()
    with trio.fail_after(30):
        assert await daemon.wait() == EXIT_RESTART
    assert read_link(world.root / "current") == str(world.root / "versions" / "1.0.0")
    assert "trial_expired" in world.log()
    assert world.agent_log() == [], "no agent was started by the version being replaced"
    assert not (world.state / "journal.json").exists()


async def test_open_trial_is_confirmed_once_the_daemon_is_up(world: World) -> None:
    """The new version's first start: once every agent is up, the trial is committed."""
    manager = await switch_daemon(world, trial_s=600.0)
    new = read_link(world.root / "current")
    daemon = await world.start_serving()
    await wait_until(lambda: "self-update to 1.11.0 confirmed" in world.log())
    assert not (world.state / "journal.json").exists()
    assert manager.floor("daemon").counter == 11
    assert read_link(world.root / "current") == new
    daemon.send_signal(signal.SIGTERM)
    with trio.fail_after(30):
        assert await daemon.wait() == 0


async def test_trial_that_never_becomes_healthy_is_rolled_back(world: World) -> None:
    """A new daemon version under which an agent never comes up is not confirmed: at the
    trial's deadline it is rolled back and the daemon exits 75 (agents are left alone)."""
    world.binary.write_bytes(b"#!/bin/sh\necho crashing\nexit 1\n")
    await switch_daemon(world, trial_s=5.0)
    daemon = await world.start_daemon()
    with trio.fail_after(60):
        assert await daemon.wait() == EXIT_RESTART
    assert "daemon 1.11.0 is on trial" in world.log()
    assert "did not become healthy within its trial; rolled back to 1.0.0" in world.log()
    assert read_link(world.root / "current") == str(world.root / "versions" / "1.0.0")


async def test_legacy_request_is_version_checked_by_the_daemon(world: World) -> None:
    """A legacy-signed old binary relabelled as newer is refused before the switch."""
    import base64
    import hashlib

    from updater import _crypto

    await world.start_serving()
    data = agent_script("1.11.0", reports="0.9.0")
    world.server.files["legacy"] = data
    digest = hashlib.sha256(data).digest()
    request = world.tmp / "legacy.json"
    request.write_text(
        json.dumps(
            {
                "component": AGENT,
                "version": "1.11.0",
                "download_url": world.server.url("/f/legacy"),
                "hash": digest.hex(),
                "signature": base64.b64encode(
                    _crypto.sign_legacy(world.signer.pems["legacy"], digest)
                ).decode(),
            }
        )
    )
    code, result, _ = await world.update(request)
    assert code == 1
    assert result is not None
    assert result["reason"] == "binary_version_mismatch"
    assert await world.running_version() == "1.0.0"
    assert world.binary.read_bytes() == agent_script("1.0.0")


async def test_update_times_out_and_stays_queued(world: World) -> None:
    """A result that does not come within --timeout: exit 6, the request stays queued."""
    await world.start_serving()
    request = json.loads(world.request(agent_script("1.11.0")).read_text())
    request["download_url"] = world.server.url("/drip/x11?every=5")
    slow = world.tmp / "slow.json"
    slow.write_text(json.dumps(request))
    code, _, err = await world.update(slow, "--timeout", "1")
    assert code == 6 and "stays queued" in err
    assert await world.running_version() == "1.0.0"


async def test_update_command_errors(world: World) -> None:
    """No daemon: 5. A malformed request file: 7. No update block: 3."""
    request = world.request(agent_script("1.11.0"))
    code, _, err = await world.update(request)
    assert code == 5 and "no daemon is running" in err
    bad = world.tmp / "bad.json"
    bad.write_text(json.dumps({"component": "agent", "version": "1", "hash": "xyz"}))
    code, _, err = await world.update(bad)
    assert code == 7 and "download_url" in err
    world.config.write_text(yaml.safe_dump({"daemon": {"work_dir": str(world.work)}}))
    code, _, err = await world.update(request)
    assert code == 3 and "updates are disabled" in err
    assert EXIT_CODES[5].startswith("update: no daemon")


def test_check_config_reports_update_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Errors in the update block are reported like every other configuration error, each
    under its `update.` path, and check-config exits 3."""
    config = tmp_path / "daemon.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "daemon": {"work_dir": str(tmp_path / "work")},
                "agents": [{"id": "a1", "binary_path": "/bin/sh"}],
                "update": {
                    "download_dir": "/var/lib/hv/downloads",
                    "max_backups": 0,
                    "verify_timout": "5m",
                    "limits": {"deadline": "soon", "max_bytes": -1, "colour": "red"},
                    "restart": "reboot",
                    "daemon_trial": "0s",
                    "agents": {"x": {"agent": "nope"}, "daemon": {}},
                },
            }
        )
    )
    assert main(["check-config", str(config)]) == 3
    err = capsys.readouterr().err
    for expected in [
        "update.backup_dir: required",
        "update.max_backups: expected an integer >= 1; got 0",
        "update.verify_timout: unknown key (did you mean 'verify_timeout'?)",
        "update.limits.deadline: not a duration: 'soon'",
        "update.limits.max_bytes: not a size: -1",
        "update.limits.colour: unknown key",
        "update.restart: expected one of exit, reexec; got 'reboot'",
        "update.daemon_trial: expected a duration > 0",
        "update.agents.x.agent: no agent 'nope' in agents",
        "update.agents.daemon: not a usable component name",
    ]:
        assert expected in err, (expected, err)
    assert "configuration error(s) [D1002]" in err


def test_check_config_with_updates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A valid update block: check-config says what may be updated."""
    config = tmp_path / "daemon.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "daemon": {"work_dir": str(tmp_path / "work")},
                "agents": [{"id": "a1", "binary_path": "/bin/sh"}],
                "update": {"download_dir": "d", "backup_dir": "b", "install_root": "/opt/hv"},
            }
        )
    )
    assert main(["check-config", str(config)]) == 0
    assert "updates: 1 agent(s), self-update" in capsys.readouterr().out


def test_restart_exit_code_is_the_updaters() -> None:
    import updater

    assert EXIT_RESTART == updater.RESTART_EXIT_CODE
    assert os.EX_TEMPFAIL == EXIT_RESTART


def test_the_daemon_imports_the_updater_only_when_needed() -> None:
    """Only the update wiring imports `updater`, and the CLI imports it only when needed."""
    code = "import sys, transport.daemon; print('updater' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"
