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

import pytest  # noqa: E402
import trio  # noqa: E402
from fault_server import FaultServer, TLSFiles, make_tls_files, serve  # noqa: E402
from updater_testlib import Signer, make_signer  # noqa: E402


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
