"""Shared fixtures for the updater tests.

The repository root is put on ``sys.path`` when the package is not installed (pytest runs
with ``--import-mode=importlib``, which does not add it), and this directory too, so the
helpers in ``updater_testlib.py`` can be imported by name.
"""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
for entry in (_HERE.parent.parent, _HERE):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

from collections.abc import AsyncIterator  # noqa: E402

import pytest  # noqa: E402
import trio  # noqa: E402
from agent_env import AGENT, V1, Env, make_manager  # noqa: E402
from fault_server import FaultServer, TLSFiles, make_tls_files, serve  # noqa: E402
from updater_testlib import ProcessControl, Signer, make_signer  # noqa: E402

from updater import AgentTarget  # noqa: E402
from updater._envelope import encode_keyring  # noqa: E402


@pytest.fixture(scope="session")
def signer() -> Signer:
    """Release keys, a keyring with them, and helpers to sign statements (session-wide)."""
    return make_signer()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """A throwaway CA and server certificate for 127.0.0.1."""
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture
async def https_server(nursery: trio.Nursery, tls_files: TLSFiles) -> FaultServer:
    """A fault-injecting HTTPS server on 127.0.0.1."""
    return await serve(nursery, FaultServer(), tls_files)


@pytest.fixture
async def http_server(nursery: trio.Nursery) -> FaultServer:
    """A fault-injecting plain HTTP server on 127.0.0.1."""
    return await serve(nursery, FaultServer())


@pytest.fixture
async def env(
    nursery: trio.Nursery,
    https_server: FaultServer,
    tls_files: TLSFiles,
    signer: Signer,
    tmp_path: Path,
) -> AsyncIterator[Env]:
    """A single-executable agent ``a1`` (component ``agent``) at 1.0.0, running."""
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
