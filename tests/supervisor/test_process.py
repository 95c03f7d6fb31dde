"""Process control with real processes: spawn, whole-tree stop, identities, orphans."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest
import trio

from supervisor import SpawnError
from supervisor._process import (
    ENV_RUN_ID,
    ProcessIdentity,
    adopt,
    identify,
    spawn,
    terminate_tree,
)
from tests.supervisor.helpers import SH, alive, kill_all, wait_for_file


async def start(tmp_path: Path, script: str) -> tuple[object, Path]:
    log = tmp_path / "out.log"
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        child = await spawn(
            (SH, "-c", script),
            cwd=str(tmp_path),
            env={**os.environ, ENV_RUN_ID: "run1"},
            output_fd=fd,
            run_id="run1",
        )
    finally:
        os.close(fd)
    return child, log


async def test_spawn_session_output_and_status(tmp_path: Path) -> None:
    """A child runs in its own session, writes to the log file, and its status is known."""
    child, log = await start(tmp_path, 'echo "sid=$(ps -o sid= -p $$ | tr -d " ")"; exit 7')
    async with trio.open_nursery() as nursery:
        nursery.start_soon(child.watch)
        status = await child.wait()
    assert status.code == 7
    assert log.read_text().split() == [f"sid={child.pid}"]
    assert status.describe() == "exited with status 7"


async def test_spawn_error_names_the_binary(tmp_path: Path) -> None:
    """A missing or non-executable binary raises SpawnError naming it."""
    fd = os.open(tmp_path / "log", os.O_WRONLY | os.O_CREAT, 0o600)
    script = tmp_path / "not-exec"
    script.write_text("#!/bin/sh\n")
    try:
        for binary in ("/nonexistent/agent", str(script)):
            with pytest.raises(SpawnError, match=binary) as info:
                await spawn((binary,), cwd=str(tmp_path), env={}, output_fd=fd, run_id="x")
            assert isinstance(info.value.__cause__, OSError)
    finally:
        os.close(fd)


async def test_sigterm_ignorer_is_killed_after_the_stop_timeout(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A child that ignores SIGTERM gets SIGKILL exactly when the stop timeout ends."""
    child, log = await start(tmp_path, "trap '' TERM; echo ready; exec sleep 1000")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(child.watch)
        await wait_for_file(log, "ready")
        t0 = trio.current_time()
        status = await terminate_tree(child, stop_signal=signal.SIGTERM, timeout_s=30.0)
        assert trio.current_time() - t0 == pytest.approx(30.0)
    assert status.signal == signal.SIGKILL


async def test_stop_signal_and_sigcont_reach_a_frozen_process(tmp_path: Path) -> None:
    """A SIGSTOPped child still acts on the stop signal (SIGCONT follows it)."""
    child, log = await start(
        tmp_path, "trap 'echo got-term; exit 0' TERM; echo ready; while :; do sleep 0.01; done"
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(child.watch)
        await wait_for_file(log, "ready")
        os.kill(child.pid, signal.SIGSTOP)
        with trio.fail_after(20):
            status = await terminate_tree(child, stop_signal=signal.SIGTERM, timeout_s=15.0)
    assert status.code == 0
    assert "got-term" in log.read_text()


async def test_grandchildren_and_setsid_escapees_are_gone_after_stop(tmp_path: Path) -> None:
    """Stopping kills the whole group and descendants that left it with setsid."""
    child, log = await start(
        tmp_path,
        "sleep 1000 & echo bg=$!; setsid sleep 1001 & echo esc=$!; echo ready; wait",
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(child.watch)
        await wait_for_file(log, "ready")
        text = log.read_text()
        pids = [int(line.split("=")[1]) for line in text.splitlines() if "=" in line]
        assert len(pids) == 2 and all(alive(pid) for pid in pids)
        with trio.fail_after(10):
            while os.getpgid(pids[1]) == child.pid:  # until setsid(2) has run
                await trio.sleep(0.005)
        try:
            with trio.fail_after(20):
                await terminate_tree(child, stop_signal=signal.SIGTERM, timeout_s=10.0)
            # Orphans are reaped by init (or by us as subreaper): give that a moment.
            with trio.fail_after(10):
                while any(alive(pid) for pid in pids):
                    await trio.sleep(0.01)
        finally:
            kill_all(pids)


def test_identity_detects_a_different_process() -> None:
    """Adoption refuses a PID whose start time or executable differ."""
    proc = subprocess.Popen(["sleep", "1000"])
    try:
        identity = identify(proc.pid)
        assert identity is not None
        assert identity.matches(identify(proc.pid))  # type: ignore[arg-type]
        wrong_time = ProcessIdentity(proc.pid, identity.create_time - 5, identity.exe)
        wrong_exe = ProcessIdentity(proc.pid, identity.create_time, "/bin/other")
        assert adopt(wrong_time, "r") is None
        assert adopt(wrong_exe, "r") is None
        adopted = adopt(identity, "r")
        assert adopted is not None
        adopted.close()
    finally:
        proc.kill()
        proc.wait()
    assert identify(proc.pid) is None
    assert adopt(identity, "r") is None


async def test_adopted_process_exit_is_noticed(tmp_path: Path) -> None:
    """A process that is not our child is watched through its pidfd."""
    proc = subprocess.Popen(["sleep", "1000"])
    try:
        identity = identify(proc.pid)
        assert identity is not None
        child = adopt(identity, "r")
        assert child is not None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(child.watch)
            proc.kill()
            with trio.fail_after(10):
                status = await child.wait()
        assert status.code is None and status.signal is None
        assert "unknown" in status.describe()
    finally:
        proc.kill()
        proc.wait()


ORPHAN_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time, trio
    from supervisor import AgentSpec, AgentState, LogSpec, Supervisor

    tmp = sys.argv[1]
    # The subshell starts a setsid'd sleep and exits at once: the sleep is orphaned,
    # outside the agent's process group, and re-parented to us as child subreaper.
    script = "(setsid sleep 1002 & echo orphan=$!) ; echo ready; exec sleep 1000"
    spec = AgentSpec(id="a", binary_path="/bin/sh", args=("-c", script),
                     work_dir=tmp, log=LogSpec(file=tmp + "/a.log"), start_seconds_s=0)

    async def main():
        sup = Supervisor([spec], work_dir=tmp, subreaper=True)
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            while "ready" not in open(tmp + "/a.log").read():
                await trio.sleep(0.01)
            orphan = int(open(tmp + "/a.log").read().split("orphan=")[1].split()[0])
            parent = int(open(f"/proc/{orphan}/stat").read().rsplit(")", 1)[1].split()[1])
            outcome = await sup.stop("a")
            await trio.sleep(0.2)
            gone = not os.path.exists(f"/proc/{orphan}")
            print(json.dumps({"orphan": orphan, "parent": parent, "me": os.getpid(),
                              "ok": outcome.ok, "gone": gone}))
            nursery.cancel_scope.cancel()

    trio.run(main)
    """
)


def test_subreaper_finds_kills_and_reaps_orphaned_escapees(tmp_path: Path) -> None:
    """As child subreaper, a stop kills an orphaned setsid'd descendant and reaps it."""
    result = subprocess.run(
        [sys.executable, "-c", ORPHAN_SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    import json

    report = json.loads(result.stdout.strip().splitlines()[-1])
    try:
        assert report["parent"] == report["me"]  # re-parented to the supervisor
        assert report["ok"] is True
        assert report["gone"] is True  # killed and reaped: not even a zombie
    finally:
        if psutil.pid_exists(report["orphan"]):
            kill_all([report["orphan"]])


HELD_OFF_SCRIPT = textwrap.dedent(
    """
    import os, signal, subprocess, time
    from supervisor._process import OrphanReaper, set_child_subreaper

    def zombie(pid):
        try:
            stat = open(f"/proc/{pid}/stat").read()
        except OSError:
            return False
        return stat.rsplit(")", 1)[1].split()[0] == "Z"

    assert set_child_subreaper()
    reaper = OrphanReaper()
    # An orphan: sh starts a background sleep, prints its pid and exits.
    script = "sleep 1000 >/dev/null 2>&1 & echo $!"
    orphan = int(subprocess.run(["sh", "-c", script], capture_output=True, check=True).stdout)
    with reaper.spawning():
        os.kill(orphan, signal.SIGKILL)
        while not zombie(orphan):
            time.sleep(0.01)
        held_off = reaper.sweep()  # what a SIGCHLD arriving now does: nothing
    print(held_off, zombie(orphan), os.path.exists(f"/proc/{orphan}"))
    """
)


def test_a_sweep_held_off_by_a_spawn_is_made_when_it_ends() -> None:
    """An orphan that dies while a spawn is in flight is reaped as the spawn ends, not at
    some later SIGCHLD that may never come (no checkpoint in between here)."""
    result = subprocess.run(
        [sys.executable, "-c", HELD_OFF_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "False", "False"]
