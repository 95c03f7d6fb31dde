"""Helpers of the Manager's gRPC service tests: the original daemon's recorded calls, the
service on loopback over a real store."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import trio
from google.protobuf import json_format
from google.protobuf.message import Message

from transport import (
    Channel,
    ClientTls,
    DaemonService,
    Listener,
    ManagerService,
    ServerTls,
    UnaryMethod,
    open_channel,
    open_grpc_loop,
)
from transport._grpc_thread import serve_grpc_in_thread
from transport.manager._ingest import Ingest, store_writer
from transport.manager._service import manager_routes
from transport.manager._store import Store

TRAFFIC = Path(__file__).with_name("data") / "original_daemon_traffic.json"
"""Calls of the original Go daemon, recorded by a Manager (see its "about"); a copy of
../shared/notes/original-daemon-traffic.json."""

METHODS: dict[str, UnaryMethod[Any, Any]] = {
    "/manager.ManagerService/RegisterNode": ManagerService.RegisterNode,
    "/manager.ManagerService/Heartbeat": ManagerService.Heartbeat,
    "/manager.ManagerService/ReportMetrics": ManagerService.ReportMetrics,
    "/proto.DaemonService/SyncAgentStates": DaemonService.SyncAgentStates,
}


@dataclass(frozen=True)
class Recorded:
    """One recorded call: its method and the request message."""

    method: UnaryMethod[Any, Any]
    request: Message


def recorded_calls() -> list[Recorded]:
    """The original daemon's calls, in recording order, as request messages."""
    calls = json.loads(TRAFFIC.read_text())["calls"]
    found: list[Recorded] = []
    for call in calls:
        method = METHODS[call["path"]]
        request = json_format.ParseDict(call["request"], method.request_type())
        found.append(Recorded(method, request))
    return found


@dataclass
class Serving:
    """A Manager's gRPC service on loopback over a real store (see :func:`serving`)."""

    address: str
    store: Store
    ingest: Ingest


@asynccontextmanager
async def serving(
    store: Store,
    *,
    tls: ServerTls | None = None,
    bind_node_identity: bool = False,
    ingest: Ingest | None = None,
) -> AsyncIterator[Serving]:
    """Serve the Manager's routes on 127.0.0.1 for the block (in their own thread, as the
    Manager does).

    Args:
        store: The store.
        tls: The server's TLS; None: plaintext.
        bind_node_identity: As for ``manager_routes``.
        ingest: The ingest (not yet running); None: one writing to ``store``.
    """
    ingest = ingest or Ingest(store_writer(store))
    routes = manager_routes(ingest, bind_node_identity=bind_node_identity)
    listeners = [Listener("127.0.0.1:0", tls)]
    async with trio.open_nursery() as nursery:
        await nursery.start(ingest.run)
        bound = await nursery.start(partial(serve_grpc_in_thread, routes, listeners))
        yield Serving(bound[0], store, ingest)
        nursery.cancel_scope.cancel()


@contextmanager
def sqlite_store(directory: Path) -> Iterator[Store]:
    """A new SQLite store in ``directory``, closed after the block."""
    with Store.open(f"sqlite:///{directory / 'manager.db'}") as store:
        yield store


@asynccontextmanager
async def connected(
    store: Store, *, tls: ServerTls | None = None, client: ClientTls | None = None, **kwargs: Any
) -> AsyncIterator[tuple[Serving, Channel]]:
    """A grpc loop, the service (:func:`serving`) and a channel to it, for the block."""
    async with (
        open_grpc_loop(),
        serving(store, tls=tls, **kwargs) as manager,
        open_channel(manager.address, tls=client) as channel,
    ):
        yield manager, channel
