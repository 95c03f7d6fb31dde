"""``max_backups`` holds however updates end: committed, rolled back, or interrupted and
finished by the next start; and every start sweeps backups that older code left behind.

The ``env`` fixture's manager keeps ``max_backups: 2``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from agent_env import AGENT, V1, Env, make_manager
from fault_server import TLSFiles
from updater_testlib import agent_script

from updater import Outcome, Reason


class Crash(BaseException):
    """The daemon died just before an install action."""


def backup_files(env: Env) -> list[Path]:
    directory = env.tmp / "backups" / AGENT
    return sorted(directory.iterdir()) if directory.is_dir() else []


def check_backups(env: Env) -> None:
    """At most two backups, exactly the recorded ones, each intact."""
    files = backup_files(env)
    recorded = env.manager.store.backups(AGENT)
    assert len(files) <= 2
    assert [str(f) for f in files] == sorted(r.path for r in recorded)


async def test_eleven_rollbacks_leave_no_backups_behind(env: Env) -> None:
    """The issue's case: 11 failing updates with max_backups 2 used to leave 11 files."""
    for _ in range(11):
        result = await env.manager.update(env.offer(agent_script("1.x.0", exit_code=3)))
        assert result.rolled_back, result
        check_backups(env)
    assert backup_files(env) == []
    assert await env.control.running_version("a1") == "1.0.0"


async def test_commits_then_rollbacks_keep_the_newest_two(env: Env) -> None:
    for minor in (11, 12, 13):
        assert (await env.manager.update(env.offer(agent_script(f"1.{minor}.0")))).success
    for _ in range(4):
        result = await env.manager.update(env.offer(agent_script("2.0.0", exit_code=1)))
        assert result.rolled_back, result
    check_backups(env)
    contents = {f.read_bytes() for f in backup_files(env)}
    assert contents == {agent_script("1.11.0"), agent_script("1.12.0")}
    assert await env.control.running_version("a1") == "1.13.0"


@pytest.mark.parametrize("commit_first", [False, True])
async def test_interrupted_rollbacks_keep_the_limit(
    env: Env, tls_files: TLSFiles, commit_first: bool
) -> None:
    """The daemon dies as each failed trial starts to roll back, five times; every next
    start finishes the rollback, and the backups stay within the limit."""
    from updater._plan import Phase, WriteJournal

    if commit_first:
        for minor in (11, 12, 13):
            assert (await env.manager.update(env.offer(agent_script(f"1.{minor}.0")))).success
    in_place = env.binary.read_bytes()

    def die_at_rollback(action: object) -> None:
        if isinstance(action, WriteJournal) and action.journal.phase is Phase.ROLLING_BACK:
            raise Crash

    for _ in range(5):
        env.manager = make_manager(env.tmp, tls_files, env.control, hook=die_at_rollback)
        with pytest.raises(Crash):
            await env.manager.update(env.offer(agent_script("2.0.0", exit_code=1)))
        await env.control.stop_all()
        env.manager = make_manager(env.tmp, tls_files, env.control)
        report = await env.manager.recover()
        assert report is not None
        assert (report.outcome, report.reason) == (Outcome.ROLLED_BACK, Reason.INTERRUPTED)
        check_backups(env)
        assert env.binary.read_bytes() == in_place
        await env.control.start_agent("a1")
    assert len(backup_files(env)) == (2 if commit_first else 0)


async def test_every_start_sweeps_leftover_backups(env: Env, tls_files: TLSFiles) -> None:
    """Backups left by older code (never recorded) go at the next start; recorded ones
    within the limit stay."""
    assert (await env.manager.update(env.offer(agent_script("1.11.0")))).success
    directory = env.tmp / "backups" / AGENT
    for i in range(9):
        (directory / f"1.0.0-{i:012x}.bin").write_bytes(V1)
    (directory / ".hostvisor-tmp-1.0.0-x.bin-0").write_bytes(b"half a copy")
    fresh = make_manager(env.tmp, tls_files, env.control)
    assert await fresh.recover() is None
    check_backups(env)
    assert [f.read_bytes() for f in backup_files(env)] == [V1]
