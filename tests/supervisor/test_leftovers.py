"""No duplicate agent, no leftover descendant, one signal per process (issue 9, 4/11/12).

Real processes, real signals, real /proc: what a supervisor must never get wrong.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import trio

from supervisor import AgentState, RestartSpec, open_supervisor
from supervisor._process import ENV_AGENT_ID, ENV_OWNER, ENV_RUN_ID, owner_marker
from tests.supervisor.helpers import (
    MemoryStore,
    across_runs,
    alive,
    binary_agent,
    kill_all,
    shell_agent,
    wait_for_file,
    wait_until,
)

LONG = "echo start $$; exec sleep 1000"


def pids_in(path: Path, prefix: str) -> list[int]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [int(line.split()[1]) for line in text.splitlines() if line.startswith(prefix)]


@pytest.mark.parametrize("subreaper", [False, True])
async def test_a_stop_signals_each_process_once(tmp_path: Path, subreaper: bool) -> None:
    """A shell's TERM trap runs once per stop, not twice (defect 4)."""
    marks = tmp_path / "traps"
    script = (
        f"trap 'echo trapped >> {marks}' TERM; echo start $$; "
        "while :; do sleep 0.05 & wait $!; done"
    )
    spec = shell_agent("t", script, tmp_path, stop_timeout_s=1.0)
    async with open_supervisor([spec], work_dir=str(tmp_path), subreaper=subreaper) as sup:
        await sup.wait_state("t", AgentState.RUNNING)
        await wait_for_file(tmp_path / "logs" / "t.log", "start")
        outcome = await sup.stop("t")  # the trap does not exit: SIGKILL after 1 s
    assert outcome.ok
    assert marks.read_text().splitlines() == ["trapped"]


@pytest.mark.parametrize("subreaper", [False, True])
async def test_a_crashed_agents_children_are_gone_before_its_replacement_starts(
    tmp_path: Path, subreaper: bool
) -> None:
    """After the main process dies, its group and escaped descendants are stopped before
    the restart; nothing of the old tree runs beside the new one (defect 12)."""
    log = tmp_path / "logs" / "c.log"
    script = (
        "sleep 1000 & echo child $!; "
        "setsid sleep 1000 & echo escaped $!; "
        "echo start $$; exec sleep 1000"
    )
    restart = RestartSpec(backoff_base_s=0.1, backoff_max_s=0.1)
    spec = shell_agent("c", script, tmp_path, restart=restart, stop_timeout_s=2.0)
    old: list[int] = []
    try:
        async with (
            open_supervisor([spec], work_dir=str(tmp_path), subreaper=subreaper) as sup,
            sup.subscribe() as events,
        ):
            await wait_for_file(log, "start")
            await wait_for_file(log, "escaped")
            leader = pids_in(log, "start")[0]
            old = [*pids_in(log, "child"), *pids_in(log, "escaped")]
            assert all(alive(pid) for pid in old)
            os.kill(leader, signal.SIGKILL)
            async for event in events:
                if event.new is AgentState.STARTING and event.pid == 0:
                    # The replacement is about to be spawned: the old tree must be gone.
                    assert not any(alive(pid) for pid in old), old
                    break
            await wait_for_file(log, "start", lines=2)
            assert not any(alive(pid) for pid in old)
            new = [*pids_in(log, "child")[1:], *pids_in(log, "escaped")[1:]]
            old.extend(new)
        assert not any(alive(pid) for pid in old)  # the stop found the new tree too
    finally:
        kill_all(old)


def _marked_env(owner: str, agent_id: str, run_id: str) -> dict[str, str]:
    return {**os.environ, ENV_OWNER: owner, ENV_AGENT_ID: agent_id, ENV_RUN_ID: run_id}


async def test_exactly_one_copy_is_adopted_whatever_the_state_says(tmp_path: Path) -> None:
    """A stale record (a dead PID) and a second live copy: the new supervisor adopts the
    recorded live copy, stops the other, and starts nothing (defect 11)."""
    spec = shell_agent("d", LONG, tmp_path)
    store = MemoryStore()
    options = across_runs(tmp_path, store)
    pids: list[int] = []
    try:
        async with open_supervisor([spec], **options) as sup:
            first = (await sup.wait_state("d", AgentState.RUNNING)).pid
        pids.append(first)
        # A copy the dead supervisor started and never recorded (killed right after).
        owner = owner_marker(str(tmp_path))
        stray = subprocess.Popen(
            ["/bin/sh", "-c", "exec sleep 1000"],
            env=_marked_env(owner, "d", "feedface" * 4),
            start_new_session=True,
        )
        pids.append(stray.pid)
        async with open_supervisor([spec], **options) as sup:
            info = sup.status("d")
            assert info.pid == first and info.status is AgentState.RUNNING
            await wait_until(lambda: stray.poll() is not None)
        assert alive(first)
        log = tmp_path / "logs" / "d.log"
        assert len(pids_in(log, "start")) == 1  # never started a third
    finally:
        kill_all(pids)


async def test_a_copy_found_only_by_its_markers_is_adopted(tmp_path: Path) -> None:
    """The state says the agent's process is a PID that is gone (the supervisor died
    between a restart and its state write): the live copy is adopted, not duplicated."""
    spec = shell_agent("d", LONG, tmp_path)
    store = MemoryStore()
    options = across_runs(tmp_path, store)
    pids: list[int] = []
    try:
        async with open_supervisor([spec], **options) as sup:
            first = (await sup.wait_state("d", AgentState.RUNNING)).pid
        pids.append(first)
        dead = subprocess.Popen(["/bin/true"])
        dead.wait()
        record = store.saved["d"]
        assert record.process is not None
        store.saved["d"] = replace(record, process=replace(record.process, pid=dead.pid))
        async with open_supervisor([spec], **options) as sup:
            assert sup.status("d").pid == first
        assert len(pids_in(tmp_path / "logs" / "d.log", "start")) == 1
    finally:
        kill_all(pids)


async def test_a_process_whose_executable_changed_on_disk_is_not_adopted(
    tmp_path: Path,
) -> None:
    """An update or rollback replaced the binary while we were away: the old process is
    stopped and the file on disk is started (issue 10, item 1)."""
    binary = tmp_path / "bin" / "agent"
    binary.parent.mkdir()
    shutil.copy("/bin/sleep", binary)
    spec = binary_agent("x", binary, tmp_path, "1000")
    store = MemoryStore()
    options = across_runs(tmp_path, store)
    pids: list[int] = []
    try:
        async with open_supervisor([spec], **options) as sup:
            old = (await sup.wait_state("x", AgentState.RUNNING)).pid
        pids.append(old)
        replacement = binary.with_name("agent.new")
        shutil.copy("/bin/sleep", replacement)
        os.replace(replacement, binary)  # /proc/OLD/exe now ends with " (deleted)"
        async with open_supervisor([spec], **options) as sup:
            new = (await sup.wait_state("x", AgentState.RUNNING)).pid
            pids.append(new)
            assert new != old
            assert not alive(old)
            assert os.readlink(f"/proc/{new}/exe") == str(binary)
    finally:
        kill_all(pids)


async def test_an_agent_no_longer_configured_is_stopped_even_without_a_record(
    tmp_path: Path,
) -> None:
    """Processes marked with an agent that is gone from the configuration are stopped."""
    owner = owner_marker(str(tmp_path))
    gone = subprocess.Popen(
        ["/bin/sh", "-c", "exec sleep 1000"],
        env=_marked_env(owner, "gone", "0123456789abcdef" * 2),
        start_new_session=True,
    )
    try:
        async with open_supervisor([], work_dir=str(tmp_path)):
            with trio.fail_after(20):
                while gone.poll() is None:
                    await trio.sleep(0.01)
    finally:
        kill_all([gone.pid])


async def test_a_script_replaced_on_disk_is_restarted_not_adopted(tmp_path: Path) -> None:
    """A script agent's file was replaced (its interpreter, /bin/sh, did not change):
    the process started from the old file is stopped and the new file started."""
    script = tmp_path / "bin" / "agent.sh"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\necho start $$ v1\nexec sleep 1000\n")
    script.chmod(0o755)
    spec = binary_agent("s", script, tmp_path)
    store = MemoryStore()
    options = across_runs(tmp_path, store)
    pids: list[int] = []
    try:
        async with open_supervisor([spec], **options) as sup:
            old = (await sup.wait_state("s", AgentState.RUNNING)).pid
        pids.append(old)
        new_file = script.with_name("agent.sh.new")
        new_file.write_text("#!/bin/sh\necho start $$ v2\nexec sleep 1000\n")
        new_file.chmod(0o755)
        os.replace(new_file, script)
        async with open_supervisor([spec], **options) as sup:
            new = (await sup.wait_state("s", AgentState.RUNNING)).pid
            pids.append(new)
            assert new != old and not alive(old)
            await wait_for_file(tmp_path / "logs" / "s.log", "v2")
    finally:
        kill_all(pids)
