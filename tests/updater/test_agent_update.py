"""Agent updates end to end: a real HTTPS server, real files, real child processes.

Every case of the bad-input matrix ends with the previous version intact and running, the
floor unchanged, no staging or temp files left, no journal, and a precise reason.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
import trio
from agent_env import AGENT, V1, Env, agent_archive, make_manager
from fault_server import TLSFiles
from updater_testlib import NOW, agent_script

from updater import Reason, UpdateRequest, UpdateResult


async def test_successful_update(env: Env) -> None:
    request = env.offer(agent_script("1.11.0"))
    result = await env.manager.update(request)
    assert result.success, result
    assert (result.old_version, result.new_version) == ("1.0.0", "1.11.0")
    assert env.binary.read_bytes() == agent_script("1.11.0")
    assert os.access(env.binary, os.X_OK)
    assert await env.control.running_version("a1") == "1.11.0"
    assert env.manager.floor(AGENT).counter == 11
    assert env.manager.current_version(AGENT) == "1.11.0"
    backups = list((env.tmp / "backups" / AGENT).iterdir())
    assert [b.read_bytes() for b in backups] == [V1]
    # Held from the stop to the end of the trial, so no supervisor restarts it meanwhile.
    assert env.control.calls == ["start a1", "hold a1", "stop a1", "start a1", "release a1"]
    env.check_clean()


async def test_truncated_download(env: Env) -> None:
    result = await env.manager.update(env.offer(agent_script("1.11.0"), route="truncate"))
    await env.check_untouched(result, Reason.LENGTH_MISMATCH)
    assert result.code == "D4001"


async def test_wrong_hash(env: Env) -> None:
    result = await env.manager.update(env.offer(agent_script("1.11.0"), route="corrupt"))
    await env.check_untouched(result, Reason.HASH_MISMATCH)
    assert result.code == "D4002"


async def test_wrong_hash_falls_back_to_next_mirror(env: Env) -> None:
    request = env.offer(agent_script("1.11.0"), route="corrupt", name="m")
    request = replace(request, mirrors=(env.server.url("/f/m"),))
    result = await env.manager.update(request)
    assert result.success, result
    assert env.server.hits == ["/corrupt/m", "/f/m"]


async def test_wrong_signature_refused_before_download(env: Env) -> None:
    good = env.offer(agent_script("1.11.0"))
    other = env.offer(agent_script("1.12.0"))
    doc = json.loads(good.envelope or "")
    doc["signatures"] = json.loads(other.envelope or "")["signatures"]
    result = await env.manager.update(replace(good, envelope=json.dumps(doc)))
    await env.check_untouched(result, Reason.BAD_SIGNATURE)
    assert env.server.hits == []


async def test_untrusted_key(env: Env) -> None:
    result = await env.manager.update(env.offer(agent_script("1.11.0"), key="stranger"))
    await env.check_untouched(result, Reason.UNTRUSTED_KEY)
    assert env.server.hits == []


async def test_agent_artifact_offered_as_daemon(env: Env) -> None:
    request = env.offer(agent_script("1.11.0"))
    result = await env.manager.update(replace(request, component="daemon"))
    await env.check_untouched(result, Reason.COMPONENT_MISMATCH)


async def test_downgrade_refused(env: Env) -> None:
    result = await env.manager.update(env.offer(agent_script("0.9.0"), counter=9, version="0.9.0"))
    await env.check_untouched(result, Reason.ROLLBACK)


async def test_replay_refused_after_update(env: Env) -> None:
    request = env.offer(agent_script("1.11.0"))
    assert (await env.manager.update(request)).success
    replay = await env.manager.update(request)
    assert replay.reason is Reason.ROLLBACK
    assert env.binary.read_bytes() == agent_script("1.11.0")
    assert await env.control.running_version("a1") == "1.11.0"


async def test_relabelled_old_binary_refused(env: Env) -> None:
    """An old signed binary offered under a higher version: the signed version differs."""
    old = env.offer(agent_script("0.9.0"), counter=9, version="0.9.0")
    result = await env.manager.update(replace(old, version="99.0"))
    await env.check_untouched(result, Reason.VERSION_MISMATCH)


async def test_expired_statement(env: Env) -> None:
    result = await env.manager.update(env.offer(agent_script("1.11.0"), expires=NOW - 1))
    await env.check_untouched(result, Reason.EXPIRED)


async def test_oversized_signed_length(env: Env) -> None:
    data = agent_script("1.11.0")
    request = env.offer(data, length=2 << 20)
    result = await env.manager.update(request)
    await env.check_untouched(result, Reason.TOO_LARGE)
    assert env.server.hits == []


async def test_endless_download(env: Env) -> None:
    request = env.offer(agent_script("1.11.0"))
    request = replace(request, download_url=env.server.url("/endless"))
    result = await env.manager.update(request)
    await env.check_untouched(result, Reason.TOO_LARGE)


async def test_slow_server(env: Env, tls_files: TLSFiles) -> None:
    """Real time (the server and the trial share the clock): 0.2 s windows, 1 kB/s."""
    env.manager.config = replace(
        env.manager.config,
        limits=replace(env.manager.config.limits, min_rate_bps=1000, rate_window_s=0.2),
    )
    result = await env.manager.update(env.offer(agent_script("1.11.0"), route="drip"))
    await env.check_untouched(result, Reason.TOO_SLOW)


async def test_plain_http_url(env: Env) -> None:
    request = env.offer(agent_script("1.11.0"))
    url = request.download_url.replace("https://", "http://")
    result = await env.manager.update(replace(request, download_url=url))
    await env.check_untouched(result, Reason.BAD_URL)


async def test_redirect_to_plain_http(env: Env) -> None:
    request = env.offer(agent_script("1.11.0"), name="r")
    target = env.server.url("/f/r").replace("https://", "http://")
    result = await env.manager.update(
        replace(request, download_url=env.server.url(f"/redirect?to={target}"))
    )
    await env.check_untouched(result, Reason.BAD_URL)


async def test_disk_full_while_staging(env: Env, tls_files: TLSFiles) -> None:
    def full(fd: int, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    env.manager = make_manager(env.tmp, tls_files, env.control, write=full)
    result = await env.manager.update(env.offer(agent_script("1.11.0")))
    await env.check_untouched(result, Reason.DISK_FULL)


async def test_disk_full_while_swapping(env: Env, tls_files: TLSFiles) -> None:
    """ENOSPC only for the copy next to the target: nothing switched, agent restarted."""
    staging_done = False

    def write(fd: int, data: bytes) -> int:
        if staging_done and os.readlink(f"/proc/self/fd/{fd}").startswith(str(env.binary.parent)):
            raise OSError(28, "No space left on device")
        return os.write(fd, data)

    env.manager = make_manager(env.tmp, tls_files, env.control, write=write)
    request = env.offer(agent_script("1.11.0"))
    staging_done = True
    result = await env.manager.update(request)
    await env.check_untouched(result, Reason.DISK_FULL)
    assert result.code == "D4003"


async def test_new_binary_exits_at_once(env: Env) -> None:
    result = await env.manager.update(env.offer(agent_script("1.11.0", exit_code=3)))
    assert result.rolled_back
    assert "status 3" in (result.error or "")
    assert any("fatal: bad config key" in line for line in result.log_tail)
    assert result.restored_version == "1.0.0"
    await env.check_untouched(result, Reason.START_FAILED)
    # The hold ends before the restored version starts: it is supervised normally again.
    assert env.control.calls[-3:] == ["stop a1", "release a1", "start a1"]


async def test_new_binary_hangs(env: Env) -> None:
    result = await env.manager.update(env.offer(agent_script("1.11.0", ready=False)))
    assert result.rolled_back
    assert result.log_tail[-1] == "agent 1.11.0 starting"
    await env.check_untouched(result, Reason.NOT_READY)


async def test_two_concurrent_requests(env: Env) -> None:
    first = env.offer(agent_script("1.11.0"))
    second = env.offer(agent_script("1.12.0"))
    results: list[UpdateResult] = []

    async def run(request: UpdateRequest) -> None:
        results.append(await env.manager.update(request))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, first)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(run, second)
    assert results[0].reason is Reason.BUSY
    assert results[0].new_version == "1.12.0"
    assert results[1].success
    assert await env.control.running_version("a1") == "1.11.0"


async def test_corrupt_backup_at_rollback_falls_back_to_older(
    env: Env, tls_files: TLSFiles
) -> None:
    """1.0.0 -> 1.11.0 (ok) -> 1.12.0 (crashes); the 1.11.0 backup rots before the rollback,
    so the older 1.0.0 backup is restored and running, and the result says so."""
    assert (await env.manager.update(env.offer(agent_script("1.11.0")))).success

    def rot(action: object) -> None:
        from updater._plan import Restore

        if isinstance(action, Restore):
            Path(action.candidates[0].path).write_bytes(b"rotten")

    env.manager = make_manager(env.tmp, tls_files, env.control, hook=rot)
    result = await env.manager.update(env.offer(agent_script("1.12.0", exit_code=1)))
    assert result.rolled_back
    assert result.restored_version == "1.0.0"
    assert "corrupt" in (result.error or "")
    assert result.reason is Reason.START_FAILED
    assert env.binary.read_bytes() == V1
    assert await env.control.running_version("a1") == "1.0.0"
    env.check_clean()


async def test_corrupt_backup_and_nothing_older_needs_a_human(
    env: Env, tls_files: TLSFiles
) -> None:
    def rot(action: object) -> None:
        from updater._plan import Restore

        if isinstance(action, Restore):
            for release in action.candidates:
                Path(release.path).write_bytes(b"rotten")

    env.manager = make_manager(env.tmp, tls_files, env.control, hook=rot)
    result = await env.manager.update(env.offer(agent_script("1.11.0", exit_code=1)))
    assert not result.rolled_back
    assert (result.reason, result.code) == (Reason.BACKUP_CORRUPT, "D4004")
    # The target is never missing: the (failing) new version is still there, and the
    # journal stays for a human; new requests are refused until it is resolved.
    assert env.binary.read_bytes() == agent_script("1.11.0", exit_code=1)
    assert (env.tmp / "state" / "journal.json").exists()
    again = await env.manager.update(env.offer(agent_script("1.12.0")))
    assert again.reason is Reason.BUSY


async def test_retention_keeps_max_backups(env: Env) -> None:
    for minor in (11, 12, 13, 14):
        assert (await env.manager.update(env.offer(agent_script(f"1.{minor}.0")))).success
    backups = sorted((env.tmp / "backups" / AGENT).iterdir())
    assert len(backups) == 2
    contents = {b.read_bytes() for b in backups}
    assert contents == {agent_script("1.12.0"), agent_script("1.13.0")}
    assert [r.version for r in env.manager.store.backups(AGENT)] == ["1.12.0", "1.13.0"]


async def test_legacy_request(env: Env) -> None:
    """The seed's form: RSA PKCS#1 v1.5 over the file's SHA-256, from a legacy key; the
    version floor still applies (by version, as there is no counter), and the new binary
    passed its pre-swap ``--version`` check."""
    request = env.offer_legacy(agent_script("1.11.0"), "1.11.0")
    result = await env.manager.update(request)
    assert result.success, result
    assert env.manager.floor(AGENT).version == "1.11.0"
    older = replace(request, version="1.10.0")
    refused = await env.manager.update(older)
    assert refused.reason is Reason.ROLLBACK
    assert await env.control.running_version("a1") == "1.11.0"


class Crash(BaseException):
    """The daemon died (power loss, SIGKILL) just before an install action."""


def _crash_before(index: int) -> object:
    seen: list[object] = []

    def hook(action: object) -> None:
        if len(seen) == index:
            raise Crash(action)
        seen.append(action)

    return hook


@pytest.mark.parametrize(
    ("trial_ok", "index"), [(True, i) for i in range(10)] + [(False, i) for i in range(9)]
)
async def test_crash_at_every_step_then_next_start_recovers(
    env: Env, tls_files: TLSFiles, trial_ok: bool, index: int
) -> None:
    """Kill the update before action ``index`` (of 10 on the commit path, 9 on the rollback
    path); a fresh manager's recover() then leaves exactly the old or the new version, says
    which, and the agent starts from it."""
    from updater import Outcome

    env.manager = make_manager(
        env.tmp, tls_files, env.control, hook=_crash_before(index), trial_s=0.2
    )
    new = agent_script("1.11.0") if trial_ok else agent_script("1.11.0", exit_code=2)
    with pytest.raises(Crash):
        await env.manager.update(env.offer(new))
    await env.control.stop_all()  # the agents died with the daemon

    fresh = make_manager(env.tmp, tls_files, env.control, trial_s=0.2)
    report = await fresh.recover()
    committed = report is not None and report.outcome is Outcome.COMMITTED
    if committed:
        assert trial_ok
        assert report is not None
        assert report.version == "1.11.0"
        assert env.binary.read_bytes() == new
        assert fresh.floor(AGENT).counter == 11
    else:
        assert env.binary.read_bytes() == V1
        assert fresh.floor(AGENT).counter == 10
        assert fresh.current_version(AGENT) == "1.0.0"
        if report is not None:
            assert report.outcome in (Outcome.ABORTED, Outcome.ROLLED_BACK)
            assert report.version == "1.0.0"
            # A rollback that was already under way keeps its original reason.
            from updater._plan import Phase

            rolling = report.journal_phase is Phase.ROLLING_BACK
            assert report.reason is (Reason.START_FAILED if rolling else Reason.INTERRUPTED)
    assert await fresh.recover() is None, "recovery is complete: no journal is left"
    env.check_clean()
    await env.control.start_agent("a1")
    assert await env.control.running_version("a1") == ("1.11.0" if committed else "1.0.0")
    # Crashes after the switch but before the commit always roll back.
    if index in range(5, 6):
        assert report is not None
        assert report.outcome is Outcome.ROLLED_BACK


async def test_second_process_is_refused(env: Env, tls_files: TLSFiles) -> None:
    """Two managers (as two daemons would) on one state directory: the flock refuses one."""
    from updater._manager import _lock_state_dir

    fd = _lock_state_dir(env.tmp / "state")  # held as another process would hold it
    assert fd is not None
    try:
        result = await env.manager.update(env.offer(agent_script("1.11.0")))
        await env.check_untouched(result, Reason.BUSY)
        assert "another process" in (result.error or "")
    finally:
        os.close(fd)
    assert (await env.manager.update(env.offer(agent_script("1.12.0")))).success


async def test_archive_agent_update_and_rollback(tree_env: Env) -> None:
    env = tree_env
    root = env.tmp / "agentroot"
    ok = await env.manager.update(env.offer(agent_archive("1.11.0")))
    assert ok.success, ok
    assert await env.control.running_version("a1") == "1.11.0"
    assert (root / "current" / "etc" / "agent.conf").read_text() == "version=1.11.0\n"
    bad = await env.manager.update(env.offer(agent_archive("1.12.0", exit_code=4)))
    assert bad.rolled_back
    assert bad.reason is Reason.START_FAILED
    assert await env.control.running_version("a1") == "1.11.0"
    versions = sorted(p.name.split("-")[0] for p in (root / "versions").iterdir())
    assert versions == ["1.0.0", "1.11.0"], "the failed version's tree is removed"


async def test_archive_agent_unsafe_archive(tree_env: Env) -> None:
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("../../evil")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    result = await tree_env.manager.update(tree_env.offer(buffer.getvalue()))
    assert result.reason is Reason.BAD_ARCHIVE
    assert await tree_env.control.running_version("a1") == "1.0.0"
    assert [p.name for p in (tree_env.tmp / "agentroot" / "versions").iterdir()] == ["1.0.0"]


async def test_cancelled_during_trial_puts_the_old_version_back(env: Env) -> None:
    """A caller that gives up mid-trial (here after 0.3 s of a 30 s trial) leaves the old
    version in place and running, and no journal: the next update can run at once."""
    env.manager.config = replace(env.manager.config, trial_s=30.0)
    with trio.move_on_after(0.3) as scope:
        await env.manager.update(env.offer(agent_script("1.11.0", ready=False)))
    assert scope.cancelled_caught
    assert env.binary.read_bytes() == V1
    assert await env.control.running_version("a1") == "1.0.0"
    env.check_clean()
    env.manager.config = replace(env.manager.config, trial_s=0.3)
    assert (await env.manager.update(env.offer(agent_script("1.12.0")))).success


async def test_agent_that_cannot_be_held_is_left_alone(env: Env) -> None:
    """The supervisor refuses the hold (e.g. the agent was removed by a reload): the update
    is abandoned before anything is stopped or switched, and no journal is left."""

    def refuse(agent_id: str) -> object:
        raise LookupError(f"unknown agent {agent_id!r}")

    env.control.hold = refuse  # type: ignore[method-assign,assignment]
    result = await env.manager.update(env.offer(agent_script("1.11.0")))
    await env.check_untouched(result, Reason.STOP_FAILED)
    assert "unknown agent 'a1'" in (result.error or "")
