"""Daemon self-update: real archives, real symlinks, and real daemon processes restarted by
a small stand-in for the service manager (Restart=on-failure, RestartForceExitStatus=75)."""

from __future__ import annotations

import io
import json
import os
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
from fault_server import FaultServer, TLSFiles
from updater_testlib import PLATFORM, Signer

import updater
from updater import (
    DaemonInstall,
    DownloadLimits,
    Outcome,
    Reason,
    UpdateConfig,
    UpdateManager,
    UpdateRequest,
)
from updater._envelope import encode_keyring
from updater._fs import read_link

REPO = Path(updater.__file__).resolve().parent.parent

DAEMON = """\
import json, os, sys
sys.path.insert(0, os.environ["UPDATER_REPO"])
from pathlib import Path
import trio
from updater import DaemonInstall, UpdateConfig, UpdateManager, RESTART_EXIT_CODE, needs_restart

VERSION, BEHAVIOUR = {version!r}, {behaviour!r}

async def main():
    state = Path(os.environ["HV_STATE"])
    config = UpdateConfig(state_dir=state, download_dir=state / "downloads",
                          backup_dir=state / "backups", platform="linux-x86_64", max_backups=2)
    install = DaemonInstall(Path(os.environ["HV_ROOT"]), max_attempts=2)
    manager = UpdateManager(config, daemon=install)
    report = await manager.recover()
    print(json.dumps({{"version": VERSION, "recovery": report and report.outcome.value,
                      "reason": report and report.reason and report.reason.value}}), flush=True)
    if needs_restart(report):
        return RESTART_EXIT_CODE
    if BEHAVIOUR == "crash":
        return 1
    confirmed = await install.confirm(manager)
    print(json.dumps({{"confirmed": confirmed and confirmed.outcome.value}}), flush=True)
    return 0

sys.exit(trio.run(main))
"""


def daemon_archive(version: str, behaviour: str = "ok", extra: list[tarfile.TarInfo] = ()) -> bytes:  # type: ignore[assignment]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        script = DAEMON.format(version=version, behaviour=behaviour).encode()
        info = tarfile.TarInfo("daemon.py")
        info.size = len(script)
        info.mode = 0o755
        tar.addfile(info, io.BytesIO(script))
        for member in extra:
            tar.addfile(member, io.BytesIO(b"x" * member.size) if member.isfile() else None)
    return buffer.getvalue()


@dataclass
class DaemonEnv:
    tmp: Path
    root: Path
    server: FaultServer
    signer: Signer
    manager: UpdateManager
    install: DaemonInstall
    v1_dir: Path

    def offer(self, data: bytes, counter: int = 11, component: str = "daemon") -> UpdateRequest:
        self.server.files["d"] = data
        stmt = self.signer.statement(
            data, component=component, counter=counter, version=f"1.{counter}.0"
        )
        return UpdateRequest(
            component="daemon",
            version=stmt.version,
            download_url=self.server.url("/f/d"),
            envelope=self.signer.envelope(stmt).decode(),
        )

    async def service_manager(self, max_starts: int = 6) -> list[dict[str, object]]:
        """Start ``current/daemon.py`` until it exits 0 (restarting on 1 and 75)."""
        lines: list[dict[str, object]] = []
        env = dict(
            os.environ,
            UPDATER_REPO=str(REPO),
            HV_ROOT=str(self.root),
            HV_STATE=str(self.tmp / "state"),
        )
        for _ in range(max_starts):
            proc = await trio.run_process(
                [sys.executable, str(self.root / "current" / "daemon.py")],
                capture_stdout=True,
                check=False,
                env=env,
            )
            for line in proc.stdout.decode().splitlines():
                lines.append(json.loads(line))
            lines.append({"exit": proc.returncode})
            if proc.returncode == 0:
                return lines
        raise AssertionError(f"never settled: {lines}")


def make_manager(tmp: Path, tls: TLSFiles, install: DaemonInstall, **kw: object) -> UpdateManager:
    state = tmp / "state"
    config = UpdateConfig(
        state_dir=state,
        download_dir=state / "downloads",
        backup_dir=state / "backups",
        platform=PLATFORM,
        max_backups=2,
        keyring_file=tmp / "keyring.json",
        limits=DownloadLimits(disk_reserve_bytes=0),
    )
    return UpdateManager(config, daemon=install, ssl_context=tls.client_context(), **kw)  # type: ignore[arg-type]


@pytest.fixture
async def denv(
    https_server: FaultServer, tls_files: TLSFiles, signer: Signer, tmp_path: Path
) -> DaemonEnv:
    root = tmp_path / "opt"
    v1 = root / "versions" / "1.0.0"
    v1.mkdir(parents=True)
    (v1 / "daemon.py").write_text(DAEMON.format(version="1.0.0", behaviour="ok"))
    (root / "current").symlink_to("versions/1.0.0")
    (tmp_path / "keyring.json").write_bytes(encode_keyring(signer.keyring))
    install = DaemonInstall(root, trial_s=60, max_attempts=2)
    manager = make_manager(tmp_path, tls_files, install)
    await install.adopt(manager, "1.0.0", counter=10)
    return DaemonEnv(tmp_path, root, https_server, signer, manager, install, v1)


async def test_self_update_healthy_version_confirms(denv: DaemonEnv) -> None:
    result = await denv.manager.update(denv.offer(daemon_archive("1.11.0")))
    assert result.success, result
    assert result.restart_required
    new_dir = read_link(denv.root / "current")
    assert new_dir is not None
    assert new_dir != str(denv.v1_dir)
    assert read_link(denv.root / "previous") == str(denv.v1_dir)
    runs = await denv.service_manager()
    assert runs == [
        {"version": "1.11.0", "recovery": "continue_trial", "reason": None},
        {"confirmed": "committed"},
        {"exit": 0},
    ]
    assert denv.manager.floor("daemon").counter == 11
    assert denv.manager.current_version("daemon") == "1.11.0"
    assert not (denv.tmp / "state" / "journal.json").exists()
    assert denv.v1_dir.is_dir(), "the previous version is never pruned"


async def test_self_update_crash_loop_rolls_back(denv: DaemonEnv) -> None:
    """The new version keeps crashing before confirming: after max_attempts starts the next
    start restores 1.0.0, which then runs."""
    result = await denv.manager.update(denv.offer(daemon_archive("1.11.0", "crash")))
    assert result.success
    new_dir = Path(read_link(denv.root / "current") or "")
    runs = await denv.service_manager()
    assert runs == [
        {"version": "1.11.0", "recovery": "continue_trial", "reason": None},
        {"exit": 1},
        {"version": "1.11.0", "recovery": "continue_trial", "reason": None},
        {"exit": 1},
        {"version": "1.11.0", "recovery": "rolled_back", "reason": "start_failed"},
        {"exit": 75},
        {"version": "1.0.0", "recovery": None, "reason": None},
        {"confirmed": None},
        {"exit": 0},
    ]
    assert read_link(denv.root / "current") == str(denv.v1_dir)
    assert not await trio.Path(new_dir).exists(), "the failed version's directory is removed"
    assert denv.manager.floor("daemon").counter == 10


async def test_self_update_trial_past_deadline_rolls_back(
    denv: DaemonEnv, tls_files: TLSFiles
) -> None:
    install = DaemonInstall(denv.root, trial_s=0.0, max_attempts=2)
    manager = make_manager(denv.tmp, tls_files, install)
    assert (await manager.update(denv.offer(daemon_archive("1.11.0")))).success
    runs = await denv.service_manager()
    assert runs[0] == {"version": "1.11.0", "recovery": "rolled_back", "reason": "trial_expired"}
    assert runs[-3:] == [
        {"version": "1.0.0", "recovery": None, "reason": None},
        {"confirmed": None},
        {"exit": 0},
    ]
    assert read_link(denv.root / "current") == str(denv.v1_dir)


async def test_watch_trial_rolls_back_a_version_that_never_confirms(
    denv: DaemonEnv, tls_files: TLSFiles, autojump_clock: trio.testing.MockClock
) -> None:
    """In-process: a running new version that never confirms is rolled back at the deadline
    (wall time follows the mock clock, so the 60 s trial is exact)."""
    manager = make_manager(
        denv.tmp,
        tls_files,
        denv.install,
        wall_clock=lambda: 2_000_000_000.0 + autojump_clock.current_time(),
    )
    assert (await manager.update(denv.offer(daemon_archive("1.11.0")))).success
    switched_at = trio.current_time()
    report = await manager.recover()
    assert report is not None
    assert report.outcome is Outcome.CONTINUE_TRIAL
    rolled = await denv.install.watch_trial(manager)
    assert rolled is not None
    assert rolled.reason is Reason.TRIAL_EXPIRED
    assert updater.needs_restart(rolled)
    assert trio.current_time() - switched_at == pytest.approx(60.0)
    assert read_link(denv.root / "current") == str(denv.v1_dir)


async def test_confirm_within_trial_commits(
    denv: DaemonEnv, tls_files: TLSFiles, autojump_clock: trio.testing.MockClock
) -> None:
    manager = make_manager(
        denv.tmp,
        tls_files,
        denv.install,
        wall_clock=lambda: 2_000_000_000.0 + autojump_clock.current_time(),
    )
    assert (await manager.update(denv.offer(daemon_archive("1.11.0")))).success
    assert (await manager.recover()).outcome is Outcome.CONTINUE_TRIAL  # type: ignore[union-attr]
    await trio.sleep(59.0)
    committed = await denv.install.confirm(manager)
    assert committed is not None
    assert committed.outcome is Outcome.COMMITTED
    assert await denv.install.watch_trial(manager) is None, "no trial left to watch"
    assert manager.floor("daemon").counter == 11


async def test_boot_rollback_tool(denv: DaemonEnv) -> None:
    """What the systemd OnFailure= unit runs: roll back whatever trial is open."""
    assert (await denv.manager.update(denv.offer(daemon_archive("1.11.0")))).success
    proc = await trio.run_process(
        [
            sys.executable,
            "-m",
            "updater.boot",
            "rollback",
            "--root",
            str(denv.root),
            "--state-dir",
            str(denv.tmp / "state"),
        ],
        capture_stdout=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    report = json.loads(proc.stdout)
    assert (report["outcome"], report["reason"], report["version"]) == (
        "rolled_back",
        "start_failed",
        "1.0.0",
    )
    assert read_link(denv.root / "current") == str(denv.v1_dir)


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.size = 1 if kind == tarfile.REGTYPE else 0
    return info


@pytest.mark.parametrize(
    "member",
    [
        _member("/etc/cron.d/evil"),
        _member("../escape"),
        _member("bin/../../escape"),
        _member("lib/x", tarfile.SYMTYPE, "../../../etc/passwd"),
        _member("lib/y", tarfile.SYMTYPE, "/etc/passwd"),
        _member("hard", tarfile.LNKTYPE, "../outside"),
        _member("dev", tarfile.CHRTYPE),
    ],
    ids=[
        "absolute",
        "dotdot",
        "nested-dotdot",
        "symlink-out",
        "symlink-abs",
        "hardlink-out",
        "device",
    ],
)
async def test_unsafe_archive_refused(denv: DaemonEnv, member: tarfile.TarInfo) -> None:
    before = sorted(p.name for p in (denv.root / "versions").iterdir())
    result = await denv.manager.update(denv.offer(daemon_archive("1.11.0", extra=[member])))
    assert (result.success, result.reason, result.code) == (False, Reason.BAD_ARCHIVE, "D4002")
    assert read_link(denv.root / "current") == str(denv.v1_dir)
    assert sorted(p.name for p in (denv.root / "versions").iterdir()) == before
    assert not (denv.tmp / "escape").exists()


async def test_agent_artifact_offered_as_daemon(denv: DaemonEnv) -> None:
    result = await denv.manager.update(denv.offer(daemon_archive("1.11.0"), component="agent"))
    assert result.reason is Reason.COMPONENT_MISMATCH
    assert read_link(denv.root / "current") == str(denv.v1_dir)


class Crash(BaseException):
    pass


@pytest.mark.parametrize("index", range(6))
async def test_crash_during_switch_then_recover(
    denv: DaemonEnv, tls_files: TLSFiles, index: int
) -> None:
    """Crash before each action of the daemon switch; the next start aborts (old version),
    rolls back (switched, journal not yet updated) or continues the trial (new version)."""
    seen: list[object] = []

    def hook(action: object) -> None:
        if len(seen) == index:
            raise Crash
        seen.append(action)

    manager = make_manager(denv.tmp, tls_files, denv.install, hook=hook)
    request = denv.offer(daemon_archive("1.11.0"))
    if index < 5:
        with pytest.raises(Crash):
            await manager.update(request)
    else:
        assert (await manager.update(request)).success
    report = await make_manager(denv.tmp, tls_files, denv.install).recover()
    current = read_link(denv.root / "current")
    if index == 0:  # before the journal: nothing to recover, the unpacked tree is swept
        assert report is None
        assert current == str(denv.v1_dir)
    elif index < 4:  # before the symlink swap
        assert report is not None
        assert report.outcome is Outcome.ABORTED
        assert current == str(denv.v1_dir)
    elif index == 4:  # swapped, journal still says backed_up
        assert report is not None
        assert report.outcome is Outcome.ROLLED_BACK
        assert report.reason is Reason.INTERRUPTED
        assert current == str(denv.v1_dir)
    else:
        assert report is not None
        assert report.outcome is Outcome.CONTINUE_TRIAL
        assert current != str(denv.v1_dir)
    versions = sorted(p.name for p in (denv.root / "versions").iterdir())
    if current == str(denv.v1_dir):
        assert versions == ["1.0.0"], "an aborted or rolled back version leaves no directory"
