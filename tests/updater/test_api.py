"""The public surface, import hygiene, and the request/result wire forms."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import updater
from updater import Reason, UpdateRequest, UpdateResult, VerificationError

EXPECTED = {
    "UpdateManager",
    "UpdateRequest",
    "UpdateResult",
    "RecoveryReport",
    "AgentInPlace",
    "FileIdentity",
    "Outcome",
    "AgentControl",
    "AgentLogMarks",
    "DaemonInstall",
    "RESTART_EXIT_CODE",
    "needs_restart",
    "force_rollback",
    "reexec",
    "UpdateConfig",
    "UpdateSettings",
    "AgentTarget",
    "DownloadLimits",
    "Keyring",
    "TrustedKey",
    "Statement",
    "Floor",
    "Reason",
    "UpdaterError",
    "DownloadError",
    "VerificationError",
    "HashMismatchError",
    "SignatureError",
    "ApplyError",
    "BackupError",
    "UpdateInProgressError",
    "RollbackError",
    "Spool",
    "SpoolError",
    "UpdateConfigError",
}


def test_all_is_pinned() -> None:
    assert set(updater.__all__) == EXPECTED
    for name in updater.__all__:
        assert getattr(updater, name) is not None


def test_error_codes_follow_the_seed() -> None:
    assert updater.DownloadError.code == "D4001"
    assert updater.VerificationError.code == "D4002"
    assert issubclass(updater.HashMismatchError, VerificationError)
    assert issubclass(updater.SignatureError, VerificationError)
    assert updater.ApplyError.code == updater.BackupError.code == "D4003"
    assert updater.RollbackError.code == "D4004"
    for cls in (updater.DownloadError, updater.ApplyError, updater.RollbackError):
        assert issubclass(cls, updater.UpdaterError)


def test_import_is_light_and_independent() -> None:
    """Importing updater pulls in neither cryptography (8 MB) nor the sibling packages."""
    code = (
        "import sys, updater; "
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('cryptography', 'supervisor', 'collectors', 'transport')]; "
        "print(bad)"
    )
    root = Path(updater.__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_no_sibling_imports_in_source() -> None:
    root = Path(updater.__file__).resolve().parent
    for path in root.glob("*.py"):
        text = path.read_text()
        for sibling in ("supervisor", "collectors", "transport"):
            assert f"import {sibling}" not in text, path
            assert f"from {sibling}" not in text, path


def test_request_and_result_wire_forms() -> None:
    request = UpdateRequest.from_dict(
        {
            "component": "agent",
            "version": "1.2",
            "download_url": "https://x/a",
            "hash": "ab",
            "signature": "c2ln",
        }
    )
    assert request.envelope is None
    assert request.mirrors == ()
    ok = UpdateResult(True, "1.1", "1.2")
    assert ok.to_dict() == {
        "success": True,
        "old_version": "1.1",
        "new_version": "1.2",
        "rolled_back": False,
    }
    failed = UpdateResult.failed(request, "1.1", VerificationError(Reason.EXPIRED, "old"))
    doc = failed.to_dict()
    assert (doc["reason"], doc["code"], doc["success"]) == ("expired", "D4002", False)
    assert doc["error"] == "expired: old"


def test_config_from_the_seed_update_block() -> None:
    """The seed's `update` block (004 section 5.1) maps onto UpdateConfig."""
    import yaml

    block = yaml.safe_load(
        """
        download_dir: /var/lib/daemon/downloads
        backup_dir: /var/lib/daemon/backups
        max_backups: 5
        verify_timeout: 300s
        public_key_file: /etc/daemon/keys/update.pub
        legacy_components: [agent]
        limits: {deadline: 10m, rate_window: 30s, allow_http_hosts: [mirror.lan]}
        """
    )
    config = updater.UpdateConfig.from_mapping(block, platform="linux-x86_64")
    assert config.trial_s == 300.0
    assert config.state_dir == Path("/var/lib/daemon/updater")
    assert config.public_key_file == Path("/etc/daemon/keys/update.pub")
    assert config.keyring_file is None
    assert config.limits.deadline_s == 600.0
    assert config.limits.rate_window_s == 30.0
    assert config.limits.allow_http_hosts == frozenset({"mirror.lan"})
    assert config.legacy_components == frozenset({"agent"})


def test_parse_duration() -> None:
    import pytest

    from updater._config import parse_duration

    assert [parse_duration(v) for v in ("250ms", ".5s", 7, "1.5h", "2m", "1h30m", "1d")] == [
        0.25, 0.5, 7.0, 5400.0, 120.0, 5400.0, 86400.0,
    ]  # fmt: skip
    for bad in ("soon", "5", "inf", -1, True):  # bare digits too, as under ``agents:``
        with pytest.raises(ValueError, match="not a duration"):
            parse_duration(bad)


def test_config_errors_name_their_keys() -> None:
    """Every problem of the block is reported at once, each under its key."""
    import pytest

    with pytest.raises(updater.UpdateConfigError) as info:
        updater.UpdateConfig.from_mapping(
            {
                "max_backups": "5",
                "verify_timeout": -1,
                "keyring_fil": "k",
                "limits": {"deadline": 0, "allow_http_hosts": "x", "bogus": 1},
            },
            platform="linux-x86_64",
        )
    issues = dict(info.value.issues)
    assert set(issues) == {
        "download_dir",
        "backup_dir",
        "max_backups",
        "verify_timeout",
        "keyring_fil",
        "limits.deadline",
        "limits.allow_http_hosts",
        "limits.bogus",
    }
    assert issues["download_dir"] == "required"
    assert issues["max_backups"] == "expected an integer >= 1; got '5'"
    assert issues["keyring_fil"] == "unknown key (did you mean 'keyring_file'?)"
    assert issues["limits.deadline"] == "expected a duration > 0; got 0"
    assert info.value.code == "D1002"
    assert isinstance(info.value, ValueError)
    with pytest.raises(updater.UpdateConfigError, match="expected a mapping"):
        updater.UpdateConfig.from_mapping(["x"], platform="p")  # type: ignore[arg-type]


def test_limits_sizes_use_the_size_grammar() -> None:
    """``update.limits`` size keys read sizes as every other section does ("10MiB", "10MB",
    "10 MiB", bytes), and a bad one is reported under its key."""
    import pytest

    limits = updater.UpdateConfig.from_mapping(
        {
            "download_dir": "/d",
            "backup_dir": "/b",
            "limits": {"max_bytes": "10MiB", "disk_reserve_bytes": "10 MB", "min_rate_bps": "4KiB"},
        },
        platform="p",
    ).limits
    assert (limits.max_bytes, limits.disk_reserve_bytes) == (10 * 1024**2, 10 * 1000**2)
    assert limits.min_rate_bps == 4096
    with pytest.raises(updater.UpdateConfigError) as info:
        updater.UpdateConfig.from_mapping(
            {
                "download_dir": "/d",
                "backup_dir": "/b",
                "limits": {"max_bytes": "10 MiBs", "disk_reserve_bytes": 0.5, "min_rate_bps": -1},
            },
            platform="p",
        )
    issues = dict(info.value.issues)
    assert issues["limits.max_bytes"].startswith("not a size: '10 MiBs'")
    assert issues["limits.disk_reserve_bytes"].startswith("not a size: 0.5")
    assert issues["limits.min_rate_bps"].startswith("not a size: -1")
    with pytest.raises(updater.UpdateConfigError, match=r"limits\.max_bytes: expected a size >= 1"):
        updater.UpdateConfig.from_mapping(
            {"download_dir": "/d", "backup_dir": "/b", "limits": {"max_bytes": "0MB"}},
            platform="p",
        )


def test_config_paths_and_extra_keys() -> None:
    """Relative paths follow base_dir; the caller's own keys are not unknown."""
    config = updater.UpdateConfig.from_mapping(
        {
            "download_dir": "d",
            "backup_dir": "/b",
            "install_root": "x",
            "platform": "linux-aarch64",
            "version_check_timeout": "2s",
        },
        platform="linux-x86_64",
        base_dir=Path("/etc/hv"),
        extra_keys=("install_root",),
    )
    assert config.download_dir == Path("/etc/hv/d")
    assert config.backup_dir == Path("/b")
    assert config.state_dir == Path("/etc/hv/updater")
    assert config.platform == "linux-aarch64"
    assert config.version_check_timeout_s == 2.0


def test_daemon_update_settings() -> None:
    """A daemon's block: agents default to every agent under its id; an explicit mapping
    names components, binaries and the version check; self-update and restart settings."""
    agents = {"ne": Path("/usr/bin/node_exporter"), "tg": Path("/usr/bin/telegraf")}
    base = {"download_dir": "/d", "backup_dir": "/b"}
    default = updater.UpdateSettings.from_mapping(base, agents=agents, platform="p")
    assert [(t.component, t.agent_id, t.binary_path) for t in default.targets] == [
        ("ne", "ne", Path("/usr/bin/node_exporter")),
        ("tg", "tg", Path("/usr/bin/telegraf")),
    ]
    assert (default.install_root, default.restart, default.daemon_trial_s) == (None, "exit", 300)
    settings = updater.UpdateSettings.from_mapping(
        {
            **base,
            "install_root": "opt",
            "daemon_trial": "1h30m",
            "restart": "reexec",
            "reexec_command": ["/opt/hv/current/bin/hostvisor", "run"],
            "agents": {
                "node_exporter": {"agent": "ne", "version_check": "always"},
                "tg": {"binary_path": "/opt/tg/current/telegraf", "install_root": "/opt/tg",
                       "version_args": None},
            },
        },
        agents=agents,
        platform="p",
        base_dir=Path("/etc/hv"),
    )  # fmt: skip
    ne, tg = settings.targets
    assert (ne.component, ne.agent_id, ne.version_check_always) == ("node_exporter", "ne", True)
    assert ne.version_args == ("--version",)
    assert (tg.install_root, tg.version_args) == (Path("/opt/tg"), None)
    assert settings.install_root == Path("/etc/hv/opt")
    assert settings.daemon_trial_s == 5400.0
    assert settings.reexec_argv() == ["/opt/hv/current/bin/hostvisor", "run"]


def test_daemon_update_settings_errors() -> None:
    import pytest

    with pytest.raises(updater.UpdateConfigError) as info:
        updater.UpdateSettings.from_mapping(
            {
                "download_dir": "/d",
                "restart": "reboot",
                "daemon_max_starts": 0,
                "reexec_command": [],
                "agents": {"x": {"agent": "nope"}, "y": {"agent": "ne", "colour": 1},
                           "z": {"agent": "ne", "binary_path": "rel/bin"}},
            },
            agents={"ne": Path("/bin/ne")},
            platform="p",
        )  # fmt: skip
    issues = dict(info.value.issues)
    assert issues == {
        "backup_dir": "required",
        "restart": "expected one of exit, reexec; got 'reboot'",
        "daemon_max_starts": "expected an integer >= 1; got 0",
        "reexec_command": "expected a non-empty list of strings; got []",
        "agents.x.agent": "no agent 'nope' in agents",
        "agents.y.colour": issues["agents.y.colour"],
        "agents.z.agent": "agent 'ne' is already component 'y'",
        "agents.z.binary_path": "expected an absolute path; got 'rel/bin'",
    }
    assert issues["agents.y.colour"].startswith("unknown key")
