"""The agent-update test world: a real agent process, a signed artifact server, a manager.

Shared by the agent-update tests; the ``env`` and ``tree_env`` fixtures (conftest.py) build
it with a single-executable agent or an agent installed as a versioned directory tree.
"""

from __future__ import annotations

import base64
import hashlib
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

from fault_server import FaultServer, TLSFiles
from updater_testlib import (
    NOW,
    PLATFORM,
    TEST_LIMITS,
    ProcessControl,
    Signer,
    UnmarkedProcessControl,
    agent_script,
)

from updater import (
    AgentTarget,
    Reason,
    UpdateConfig,
    UpdateManager,
    UpdateRequest,
    UpdateResult,
)

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

    def offer_legacy(self, data: bytes, version: str, *, name: str = "legacy") -> UpdateRequest:
        """Serve ``data`` and return a seed-style request for it, signed by the legacy key."""
        from updater import _crypto

        self.server.files[name] = data
        digest = hashlib.sha256(data).digest()
        signature = _crypto.sign_legacy(self.signer.pems["legacy"], digest)
        return UpdateRequest(
            component=AGENT,
            version=version,
            download_url=self.server.url(f"/f/{name}"),
            hash=digest.hex(),
            signature=base64.b64encode(signature).decode(),
        )

    def check_clean(self) -> None:
        assert not (self.tmp / "state" / "journal.json").exists()
        downloads = self.tmp / "downloads"
        assert not downloads.exists() or list(downloads.iterdir()) == []
        assert not [p for p in self.binary.parent.iterdir() if p.name.startswith(".hostvisor")]


def make_manager(
    env_tmp: Path, server_tls: TLSFiles, control: UnmarkedProcessControl, **kw: object
) -> UpdateManager:
    config_kw: dict[str, object] = {
        "state_dir": env_tmp / "state",
        "download_dir": env_tmp / "downloads",
        "backup_dir": env_tmp / "backups",
        "platform": PLATFORM,
        "trial_s": 0.4,
        "keyring_file": env_tmp / "keyring.json",
        "max_backups": 2,
        "limits": TEST_LIMITS,
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


def agent_archive(version: str, **kw: object) -> bytes:
    """A gzipped tar of an agent tree: ``bin/agent`` and ``etc/agent.conf``."""
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
