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
    "Outcome",
    "AgentControl",
    "DaemonInstall",
    "RESTART_EXIT_CODE",
    "needs_restart",
    "force_rollback",
    "reexec",
    "UpdateConfig",
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

    assert [parse_duration(v) for v in ("250ms", "5", 7, "1.5h", "2m")] == [
        0.25, 5.0, 7.0, 5400.0, 120.0,
    ]  # fmt: skip
    with pytest.raises(ValueError, match="duration"):
        parse_duration("soon")
