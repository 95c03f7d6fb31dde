"""The Manager as a whole: every part started in process, start-up failures, and
``python -m transport.manager run`` as a real process from start to SIGTERM."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import yaml

from transport import (
    ListenError,
    ManagerService,
    manager_pb2,
    open_channel,
    open_grpc_loop,
)
from transport.manager import ManagerConfigError
from transport.manager._config import ManagerConfig, parse_config
from transport.manager._run import GRPC_SERVER_OPTIONS, Listening, open_store, serve_manager

ROOT = Path(__file__).resolve().parents[3]
SAFETY_S = 120  # a safety net against a hung test, never a timing assertion
PASSWORD = "correct horse battery"


def document(tmp_path: Path, **sections: Any) -> dict[str, Any]:
    return {
        "data_dir": str(tmp_path / "data"),
        "server": {"host": "127.0.0.1", "port": 0},
        "grpc": {"host": "127.0.0.1", "port": 0},
        **sections,
    }


def config_of(tmp_path: Path, **sections: Any) -> ManagerConfig:
    return parse_config(document(tmp_path, **sections))


@asynccontextmanager
async def manager(config: ManagerConfig) -> AsyncIterator[tuple[Listening, io.StringIO]]:
    """The Manager served in this process, inside the grpc loop the test's calls use too."""
    out = io.StringIO()
    with trio.fail_after(SAFETY_S):
        async with open_grpc_loop(), trio.open_nursery() as nursery:
            listening = await nursery.start(
                partial(serve_manager, config, out=out, open_loop=False)
            )
            yield listening, out
            nursery.cancel_scope.cancel()


async def register(grpc_address: str, node_id: str) -> manager_pb2.RegisterNodeResponse:
    """RegisterNode (needs a grpc loop around it)."""
    request = manager_pb2.RegisterNodeRequest(
        node_id=node_id, hostname="web-1", ip="127.0.0.1", os="linux", arch="amd64"
    )
    async with open_channel(grpc_address) as channel:
        return await channel.call(ManagerService.RegisterNode, request, timeout_s=30)


def refused(address: str) -> bool:
    host, _, port = address.removeprefix("http://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


# --------------------------------------------------------------------------- in process


async def test_every_part_starts_serves_and_stops(tmp_path: Path) -> None:
    config = config_of(tmp_path)
    async with manager(config) as (listening, out):
        assert listening.grpc.startswith("127.0.0.1:")
        assert listening.http.startswith("http://127.0.0.1:")
        assert out.getvalue().splitlines() == [
            f"database sqlite sqlite:///{tmp_path}/data/manager.db",
            f"gRPC listening on {listening.grpc}",
            f"HTTP listening on {listening.http}",
        ]
        async with httpx.AsyncClient(base_url=listening.http, timeout=SAFETY_S) as client:
            health = await client.get("/health")
            assert health.status_code == 200
            assert health.json()["status"] == "ok"
        response = await register(listening.grpc, "node-1")
        assert response.success
    assert refused(listening.http)
    assert refused(listening.grpc)
    with open_store(config) as store:
        assert store.get_node("node-1").hostname == "web-1"
    secret = Path(config.jwt_secret_path)
    assert secret.stat().st_mode & 0o777 == 0o600


@contextmanager
def busy_port() -> Iterator[int]:
    """A port of 127.0.0.1 another socket listens on."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        yield busy.getsockname()[1]


async def test_a_busy_grpc_port_fails_the_start(tmp_path: Path) -> None:
    with busy_port() as port:
        config = config_of(tmp_path, grpc={"host": "127.0.0.1", "port": port})
        with pytest.RaisesGroup(ListenError, allow_unwrapped=True, flatten_subgroups=True):
            async with manager(config):
                pytest.fail("started on a busy port")


async def test_a_busy_http_port_fails_the_start(tmp_path: Path) -> None:
    with busy_port() as port:
        config = config_of(tmp_path, server={"host": "127.0.0.1", "port": port})
        with pytest.RaisesGroup(
            pytest.RaisesExc(ListenError, match="cannot listen on '127.0.0.1:.*' \\(HTTP\\)"),
            allow_unwrapped=True,
            flatten_subgroups=True,
        ):
            async with manager(config):
                pytest.fail("started on a busy port")


async def test_a_missing_tls_file_stops_it_before_anything_opens(tmp_path: Path) -> None:
    tls = {"enabled": True, "cert_file": str(tmp_path / "no.pem"), "key_file": "no.key"}
    config = config_of(tmp_path, grpc={"host": "127.0.0.1", "port": 0, "tls": tls})
    with pytest.raises(ManagerConfigError) as caught:
        async with manager(config):
            pytest.fail("started without its certificate")
    assert caught.value.issues[0] == ("grpc.tls.cert_file", f"not found: '{tmp_path}/no.pem'")
    assert not (tmp_path / "data" / "manager.db").exists()


def test_the_server_permits_the_daemons_pings() -> None:
    options = dict(GRPC_SERVER_OPTIONS)
    assert options["grpc.keepalive_permit_without_calls"] == 1
    # The original daemon pings every 30 s, ours every 20 s or slower.
    assert int(options["grpc.http2.min_ping_interval_without_data_ms"]) <= 20_000


# --------------------------------------------------------------------------- a real process


async def read_until(stream: trio.abc.ReceiveStream, buffer: bytearray, marker: bytes) -> str:
    """Read ``stream`` into ``buffer`` until a line containing ``marker``; return that line."""
    while True:
        for line in bytes(buffer).split(b"\n")[:-1]:
            if marker in line:
                return line.decode()
        chunk = await stream.receive_some()
        if not chunk:
            raise AssertionError(f"output ended before {marker!r}: {bytes(buffer)!r}")
        buffer += chunk


def manager_command(config: Path, *argv: str) -> list[str]:
    return [sys.executable, "-m", "transport.manager", *argv, "--config", str(config)]


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
async def test_the_manager_process(tmp_path: Path, stop: signal.Signals) -> None:
    config = tmp_path / "manager.yaml"
    config.write_text(yaml.safe_dump(document(tmp_path)))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with trio.fail_after(SAFETY_S):
        created = await trio.run_process(
            manager_command(config, "create-user", "admin", "--role", "admin"),
            stdin=f"{PASSWORD}\n".encode(),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=ROOT,
            env=env,
        )
        assert created.returncode == 0, created.stderr.decode()
        stderr = (tmp_path / "stderr.log").open("wb")
        try:
            process = await trio.lowlevel.open_process(
                manager_command(config, "run"),
                stdout=subprocess.PIPE,
                stderr=stderr,
                cwd=ROOT,
                env=env,
            )
            assert process.stdout is not None
            output = bytearray()
            grpc_line = await read_until(process.stdout, output, b"gRPC listening on ")
            http_line = await read_until(process.stdout, output, b"HTTP listening on ")
            grpc = grpc_line.removeprefix("gRPC listening on ")
            http = http_line.removeprefix("HTTP listening on ")
            try:
                async with open_grpc_loop():
                    assert (await register(grpc, "node-e2e")).success
                async with httpx.AsyncClient(base_url=http, timeout=SAFETY_S) as client:
                    assert (await client.get("/health")).json()["status"] == "ok"
                    login = await client.post(
                        "/api/v1/auth/login", json={"username": "admin", "password": PASSWORD}
                    )
                    assert login.status_code == 200, login.text
                    token = login.json()["data"]["token"]
                    nodes = await client.get(
                        "/api/v1/nodes", headers={"Authorization": f"Bearer {token}"}
                    )
                    assert [n["node_id"] for n in nodes.json()["data"]["list"]] == ["node-e2e"]
            finally:
                process.send_signal(stop)
                code = await process.wait()
            await process.stdout.aclose()
        finally:
            stderr.close()
    log = (tmp_path / "stderr.log").read_text()
    assert code == 0, log
    assert f"received {stop.name}; stopping" in log
    assert "Manager stopped" in log
    assert refused(http)
    assert refused(grpc)


def test_the_log_file_rotates_compresses_and_ages(tmp_path: Path) -> None:
    import gzip
    import logging

    from transport.manager._run import setup_logging

    log = {"output_path": str(tmp_path / "logs" / "manager.log"), "max_size": 1}
    config = config_of(tmp_path, log={**log, "max_backups": 2, "max_age": 1, "compress": True})
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    setup_logging(config)
    try:
        logger = logging.getLogger("hostvisor.manager.test")
        line = "x" * 1000
        for _ in range(1100):  # a little more than 1 MiB: one rotation
            logger.info(line)
        first = tmp_path / "logs" / "manager.log.1.gz"
        assert gzip.decompress(first.read_bytes()).count(b"x" * 1000) > 900
        os.utime(first, (0, 0))  # older than max_age
        for _ in range(1100):
            logger.info(line)
        # The second rotation moved the first backup to .2.gz, then aged it out.
        names = sorted(os.listdir(tmp_path / "logs"))
        assert names == ["manager.log", "manager.log.1.gz"]
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:], level = saved
        root.setLevel(level)
