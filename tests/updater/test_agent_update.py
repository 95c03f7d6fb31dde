"""Agent updates end to end: a real HTTPS server, real files, real child processes.

Every case of the bad-input matrix ends with the previous version intact and running, the
floor unchanged, no staging or temp files left, no journal, and a precise reason.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import trio
from fault_server import FaultServer, TLSFiles
from updater_testlib import NOW, PLATFORM, ProcessControl, Signer, agent_script

from updater import (
    AgentTarget,
    DownloadLimits,
    Reason,
    UpdateConfig,
    UpdateManager,
    UpdateRequest,
    UpdateResult,
)
from updater._envelope import encode_keyring

AGENT = "agent"
V1 = agent_script("1.0.0")


@dataclass
class Env:
    tmp: Path
    server: FaultServer
    signer: Signer
    control: ProcessControl
    manager: UpdateManager
    binary: Path
    counter: int = 10

    def offer(
        self,
        data: bytes,
        *,
        route: str = "f",
        key: str = "release",
        name: str | None = None,
        **statement: object,
    ) -> UpdateRequest:
        """Serve ``data`` and return a signed request for it (counter grows each call)."""
        self.counter += 1
        name = name or f"a{self.counter}"
        self.server.files[name] = data
        fields: dict[str, object] = {"counter": self.counter, "version": f"1.{self.counter}.0"}
        fields.update(statement)
        stmt = self.signer.statement(data, **fields)
        envelope = self.signer.envelope(stmt, key).decode()
        return UpdateRequest(
            component=AGENT,
            version=stmt.version,
            download_url=self.server.url(f"/{route}/{name}"),
            hash=stmt.sha256,
            envelope=envelope,
        )

    async def check_untouched(
        self, result: UpdateResult, reason: Reason, version: str = "1.0.0"
    ) -> None:
        """The previous version is intact and running; nothing is left behind."""
        assert not result.success
        assert result.reason is reason, result
        assert self.binary.read_bytes() == agent_script(version)
        assert await self.control.running_version("a1") == version
        assert self.manager.floor(AGENT).counter == 10
        self.check_clean()

    def check_clean(self) -> None:
        assert not (self.tmp / "state" / "journal.json").exists()
        downloads = self.tmp / "downloads"
        assert not downloads.exists() or list(downloads.iterdir()) == []
        assert not [p for p in self.binary.parent.iterdir() if p.name.startswith(".hostvisor")]


def make_manager(
    env_tmp: Path, server_tls: TLSFiles, control: ProcessControl, **kw: object
) -> UpdateManager:
    config_kw: dict[str, object] = {
        "state_dir": env_tmp / "state",
        "download_dir": env_tmp / "downloads",
        "backup_dir": env_tmp / "backups",
        "platform": PLATFORM,
        "trial_s": 0.4,
        "keyring_file": env_tmp / "keyring.json",
        "max_backups": 2,
        "limits": DownloadLimits(
            connect_timeout_s=5,
            deadline_s=20,
            min_rate_bps=1,
            rate_window_s=5,
            max_bytes=1 << 20,
            disk_reserve_bytes=0,
        ),
    }
    manager_kw = {k: v for k, v in kw.items() if k in {"write", "hook", "free_space"}}
    config_kw.update({k: v for k, v in kw.items() if k not in manager_kw})
    return UpdateManager(
        UpdateConfig(**config_kw),  # type: ignore[arg-type]
        agents=[AgentTarget(AGENT, "a1", env_tmp / "bin" / "agent")],
        control=control,
        ssl_context=server_tls.client_context(),
        wall_clock=lambda: NOW,
        **manager_kw,  # type: ignore[arg-type]
    )


@pytest.fixture
async def env(
    nursery: trio.Nursery,
    https_server: FaultServer,
    tls_files: TLSFiles,
    signer: Signer,
    tmp_path: Path,
) -> AsyncIterator[Env]:
    binary = tmp_path / "bin" / "agent"
    binary.parent.mkdir()
    binary.write_bytes(V1)
    binary.chmod(0o755)
    (tmp_path / "keyring.json").write_bytes(encode_keyring(signer.keyring))
    control = ProcessControl(nursery, {"a1": binary})
    manager = make_manager(tmp_path, tls_files, control)
    await manager.adopt(AGENT, "1.0.0", counter=10)
    await control.start_agent("a1")
    assert await control.running_version("a1") == "1.0.0"
    try:
        yield Env(tmp_path, https_server, signer, control, manager, binary)
    finally:
        with trio.CancelScope(shield=True):
            await control.stop_all()


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


async def test_legacy_request(env: Env, tls_files: TLSFiles, signer: Signer) -> None:
    """The seed's form: RSA PKCS#1 v1.5 over the file's SHA-256, from a legacy key; the
    version floor still applies (by version, as there is no counter)."""
    import base64

    from updater import _crypto

    data = agent_script("1.11.0")
    env.server.files["legacy"] = data
    digest = hashlib.sha256(data).digest()
    request = UpdateRequest(
        component=AGENT,
        version="1.11.0",
        download_url=env.server.url("/f/legacy"),
        hash=digest.hex(),
        signature=base64.b64encode(_crypto.sign_legacy(signer.pems["legacy"], digest)).decode(),
    )
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


def _agent_archive(version: str, **kw: object) -> bytes:
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data, mode in [
            ("bin/agent", agent_script(version, **kw), 0o755),  # type: ignore[arg-type]
            ("etc/agent.conf", f"version={version}\n".encode(), 0o644),
        ]:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture
async def tree_env(
    nursery: trio.Nursery, https_server: FaultServer, tls_files: TLSFiles, signer: Signer,
    tmp_path: Path,
) -> AsyncIterator[Env]:  # fmt: skip
    """An agent installed as a directory tree: <root>/versions/1.0.0, current -> it."""
    root = tmp_path / "agentroot"
    (root / "versions" / "1.0.0" / "bin").mkdir(parents=True)
    (root / "versions" / "1.0.0" / "bin" / "agent").write_bytes(V1)
    (root / "versions" / "1.0.0" / "bin" / "agent").chmod(0o755)
    (root / "current").symlink_to("versions/1.0.0")
    binary = root / "current" / "bin" / "agent"
    (tmp_path / "keyring.json").write_bytes(encode_keyring(signer.keyring))
    control = ProcessControl(nursery, {"a1": binary})
    manager = make_manager(tmp_path, tls_files, control)
    manager.agents[AGENT] = AgentTarget(AGENT, "a1", binary, install_root=root)
    await manager.adopt(AGENT, "1.0.0", counter=10)
    await control.start_agent("a1")
    try:
        yield Env(tmp_path, https_server, signer, control, manager, binary)
    finally:
        with trio.CancelScope(shield=True):
            await control.stop_all()


async def test_archive_agent_update_and_rollback(tree_env: Env) -> None:
    env = tree_env
    root = env.tmp / "agentroot"
    ok = await env.manager.update(env.offer(_agent_archive("1.11.0")))
    assert ok.success, ok
    assert await env.control.running_version("a1") == "1.11.0"
    assert (root / "current" / "etc" / "agent.conf").read_text() == "version=1.11.0\n"
    bad = await env.manager.update(env.offer(_agent_archive("1.12.0", exit_code=4)))
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
