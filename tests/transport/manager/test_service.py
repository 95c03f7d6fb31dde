"""The Manager's gRPC service over real loopback gRPC and a real SQLite store."""

from __future__ import annotations

import concurrent.futures
import gc
import threading
import weakref
from pathlib import Path
from typing import Any

import pytest
import trio
from google.protobuf.message import Message

from transport import (
    CallContext,
    DaemonService,
    ManagerService,
    RemoteError,
    StatusCode,
    StatusError,
    UnaryMethod,
    daemon_pb2,
    manager_pb2,
    open_channel,
    open_grpc_loop,
)
from transport.daemon._retry import REGISTER_METADATA_KEY
from transport.manager import NotFoundError, StoreError
from transport.manager._ingest import Batch, BatchResult, Ingest, store_writer, wait_future
from transport.manager._model import GONE, NodeStatus
from transport.manager._service import _Service
from transport.manager._validate import DEFAULT_LIMITS, GRPC_PORT_METADATA_KEY

from .service_helpers import connected, recorded_calls, serving, sqlite_store

SAFETY_S = 60
ORIGINAL_NODE = "9fb66f0b-dce6-49a2-ae58-2ab38de1821c"


def register(node_id: str) -> manager_pb2.RegisterNodeRequest:
    return manager_pb2.RegisterNodeRequest(node_id=node_id, hostname="h", ip="10.0.0.1")


Calls = list[tuple[UnaryMethod[Any, Any], Message]]


def cpu(node_id: str, *timestamps: int) -> manager_pb2.ReportMetricsRequest:
    return manager_pb2.ReportMetricsRequest(
        node_id=node_id,
        metrics=[
            manager_pb2.MetricData(type="cpu", timestamp=t, values={"usage_percent": 1.0})
            for t in timestamps
        ],
    )


async def test_the_original_daemons_calls_succeed_and_are_stored(tmp_path: Path) -> None:
    """A replay of the original Go daemon's recorded calls: each one succeeds."""
    with sqlite_store(tmp_path) as store, trio.fail_after(SAFETY_S):
        async with connected(store) as (manager, channel):
            for call in recorded_calls():
                reply = await channel.call_with_metadata(call.method, call.request)
                assert reply.response.success, (call.method.name, reply.response)
                assert REGISTER_METADATA_KEY not in dict(reply.trailing_metadata)
    node = store.get_node(ORIGINAL_NODE)
    assert (node.hostname, node.ip, node.os, node.arch) == ("vm", "127.0.0.1", "linux", "amd64")
    assert node.status is NodeStatus.ONLINE and node.grpc_port is None
    latest = store.latest_metrics(ORIGINAL_NODE)
    assert all(latest[kind] is not None for kind in ("cpu", "memory", "disk", "network"))
    assert latest["network"] is not None and latest["network"].values["rx_bytes"] == 24589
    agents = {a.agent_id: a for a in store.list_agents(ORIGINAL_NODE)}
    assert (agents["beta"].status, agents["beta"].pid) == ("running", 18246)
    assert (agents["alpha"].status, agents["alpha"].last_heartbeat) == ("stopped", None)
    stats = manager.ingest.statistics()
    assert stats.calls == dict.fromkeys(stats.calls, 1)
    assert (stats.registrations, stats.heartbeats, stats.metric_rows, stats.agent_states) == (
        1, 1, 4, 2
    )  # fmt: skip
    assert stats.refused == {}


async def test_an_original_daemon_reappears_after_the_database_was_lost(tmp_path: Path) -> None:
    """The original daemon does not register again after a heartbeat: its heartbeat
    creates the node, and its reports are stored from then on."""
    calls = {c.method.name: c for c in recorded_calls()}
    with sqlite_store(tmp_path) as store, trio.fail_after(SAFETY_S):
        async with connected(store) as (manager, channel):
            for name in ("Heartbeat", "ReportMetrics", "SyncAgentStates", "Heartbeat"):
                call = calls[name]
                reply = await channel.call_with_metadata(call.method, call.request)
                assert reply.response.success
                asked = REGISTER_METADATA_KEY in dict(reply.trailing_metadata)
                assert asked is (name == "Heartbeat" and not store.list_agents(ORIGINAL_NODE))
    node = store.get_node(ORIGINAL_NODE)
    assert (node.hostname, node.ip, node.status) == ("unknown", "unknown", NodeStatus.ONLINE)
    assert len(store.list_agents(ORIGINAL_NODE)) == 2
    assert manager.ingest.statistics().nodes_created == 1


async def test_unknown_nodes_are_asked_to_register(tmp_path: Path) -> None:
    """ReportMetrics and SyncAgentStates of an unknown node: NOT_FOUND, nothing stored;
    after RegisterNode (with the announced port) they succeed; duplicates are ignored."""
    with sqlite_store(tmp_path) as store, trio.fail_after(SAFETY_S):
        async with connected(store) as (manager, channel):
            sync = daemon_pb2.SyncAgentStatesRequest(
                node_id="n1", states=[daemon_pb2.AgentState(agent_id="a", status="running")]
            )
            unknown: Calls = [
                (ManagerService.ReportMetrics, cpu("n1", 100)),
                (DaemonService.SyncAgentStates, sync),
            ]
            for method, request in unknown:
                with pytest.raises(RemoteError) as caught:
                    await channel.call(method, request)
                assert caught.value.status is StatusCode.NOT_FOUND
                assert caught.value.details == "node n1 is not registered"
            metadata = ((GRPC_PORT_METADATA_KEY, "9191"),)
            await channel.call(ManagerService.RegisterNode, register("n1"), metadata=metadata)
            first = await channel.call(ManagerService.ReportMetrics, cpu("n1", 100, 101))
            again = await channel.call(ManagerService.ReportMetrics, cpu("n1", 101, 102))
            synced = await channel.call(DaemonService.SyncAgentStates, sync)
    assert (first.message, again.message) == ("stored 2 of 2 metrics", "stored 1 of 2 metrics")
    assert synced.success and synced.message == "synced 1 agents"
    assert store.get_node("n1").grpc_port == 9191
    rows = store.metric_rows("n1", "cpu", start=0, end=1000)
    assert [r.timestamp for r in rows] == [100, 101, 102]
    stats = manager.ingest.statistics()
    assert stats.refused == {"NOT_FOUND": 2} and stats.metric_duplicates == 1


async def test_a_full_sync_marks_missing_agents_gone(tmp_path: Path) -> None:
    with sqlite_store(tmp_path) as store, trio.fail_after(SAFETY_S):
        async with connected(store) as (_, channel):
            await channel.call(ManagerService.RegisterNode, register("n1"))
            for ids in (["a", "b"], ["b"]):
                states = [daemon_pb2.AgentState(agent_id=i, status="running") for i in ids]
                request = daemon_pb2.SyncAgentStatesRequest(node_id="n1", states=states)
                await channel.call(DaemonService.SyncAgentStates, request)
    assert {a.agent_id: a.status for a in store.list_agents("n1")} == {"a": GONE, "b": "running"}


async def test_bad_requests_are_invalid_and_other_methods_unimplemented(tmp_path: Path) -> None:
    cases: list[tuple[UnaryMethod[Any, Any], Message, str]] = [
        (ManagerService.Heartbeat, manager_pb2.HeartbeatRequest(), "HeartbeatRequest.node_id"),
        (
            ManagerService.RegisterNode,
            register("bad id"),
            "RegisterNodeRequest.node_id",
        ),
        (
            ManagerService.ReportMetrics,
            cpu("n1", 0),
            "ReportMetricsRequest.metrics[0].timestamp",
        ),
        (
            DaemonService.SyncAgentStates,
            daemon_pb2.SyncAgentStatesRequest(
                node_id="n1", states=[daemon_pb2.AgentState(agent_id="a", status="weird")]
            ),
            "SyncAgentStatesRequest.states[0].status",
        ),
    ]
    with sqlite_store(tmp_path) as store, trio.fail_after(SAFETY_S):
        async with connected(store) as (manager, channel):
            await channel.call(ManagerService.RegisterNode, register("n1"))
            for method, request, field in cases:
                with pytest.raises(RemoteError) as caught:
                    await channel.call(method, request)
                assert caught.value.status is StatusCode.INVALID_ARGUMENT
                assert caught.value.details.startswith(f"{field}: ")
            bad_port = ((GRPC_PORT_METADATA_KEY, "http"),)
            with pytest.raises(RemoteError, match="hostvisor-grpc-port"):
                await channel.call(ManagerService.RegisterNode, register("n2"), metadata=bad_port)
            unserved: Calls = [
                (DaemonService.ListAgents, daemon_pb2.ListAgentsRequest()),
                (DaemonService.Heartbeat, daemon_pb2.HeartbeatRequest(node_id="n1")),
            ]
            for method, request in unserved:
                with pytest.raises(RemoteError) as caught:
                    await channel.call(method, request)
                assert caught.value.status is StatusCode.UNIMPLEMENTED
    assert manager.ingest.statistics().refused == {"INVALID_ARGUMENT": 5}
    with pytest.raises(NotFoundError):
        store.get_node("n2")


async def test_failures_answer_statuses_the_daemon_retries(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The database failing: UNAVAILABLE; the ingest overloaded: RESOURCE_EXHAUSTED; a
    defect: INTERNAL."""
    gate, entered = threading.Event(), threading.Event()

    def held(batch: Batch) -> BatchResult:
        if batch.registrations:
            raise StoreError("database is locked")
        if batch.syncs:
            raise RuntimeError("a defect")
        entered.set()
        gate.wait(SAFETY_S)
        return BatchResult((False,) * len(batch.heartbeats), (None,) * len(batch.reports))

    ingest = Ingest(held, interval_s=0, max_queued=1)
    with sqlite_store(tmp_path) as store, trio.fail_after(SAFETY_S):
        async with (
            open_grpc_loop(),
            serving(store, ingest=ingest) as manager,
            open_channel(manager.address) as channel,
            trio.open_nursery() as calls,
        ):
            with pytest.raises(RemoteError) as caught:
                await channel.call(ManagerService.RegisterNode, register("n1"))
            assert caught.value.status is StatusCode.UNAVAILABLE
            assert "database is locked" in caught.value.details
            sync = daemon_pb2.SyncAgentStatesRequest(node_id="n1")
            with pytest.raises(RemoteError) as caught:
                await channel.call(DaemonService.SyncAgentStates, sync)
            assert caught.value.status is StatusCode.INTERNAL
            beat = manager_pb2.HeartbeatRequest(node_id="n1")
            calls.start_soon(channel.call, ManagerService.Heartbeat, beat)  # held
            await trio.to_thread.run_sync(entered.wait, SAFETY_S)
            calls.start_soon(channel.call, ManagerService.Heartbeat, beat)  # queued
            while not ingest.statistics().queued:
                await trio.sleep(0.01)
            with pytest.raises(RemoteError) as caught:
                await channel.call(ManagerService.Heartbeat, beat)
            assert caught.value.status is StatusCode.RESOURCE_EXHAUSTED
            gate.set()
    assert manager.ingest.statistics().refused == {
        "UNAVAILABLE": 1, "INTERNAL": 1, "RESOURCE_EXHAUSTED": 1
    }  # fmt: skip
    assert "a defect" in caplog.text


async def test_trailing_metadata_asks_for_a_registration(tmp_path: Path) -> None:
    """The handlers themselves: the register metadata comes with a created node's
    heartbeat and with NOT_FOUND (a client sees no metadata of a failed call)."""
    with sqlite_store(tmp_path) as store:
        ingest = Ingest(store_writer(store), interval_s=0, wall=lambda: 5.0)
        service = _Service(ingest, bind_node_identity=False, limits=DEFAULT_LIMITS)
        async with trio.open_nursery() as nursery:
            await nursery.start(ingest.run)
            contexts = [CallContext(method="m") for _ in range(3)]
            with pytest.raises(StatusError, match="not registered"):
                await wait_future(service.report(cpu("n1", 1), contexts[0]))
            beat = manager_pb2.HeartbeatRequest(node_id="n1")
            created = await wait_future(service.heartbeat(beat, contexts[1]))
            known = await wait_future(service.heartbeat(beat, contexts[2]))
            nursery.cancel_scope.cancel()
        node = store.get_node("n1")
    register_again = [(REGISTER_METADATA_KEY, "1")]
    assert [c.trailing_metadata for c in contexts] == [register_again, register_again, []]
    assert "register again" in created.message and known.message == "ok"
    assert (node.hostname, node.last_seen_at) == ("unknown", 5.0)


@pytest.mark.parametrize("ending", ["answered", "cancelled"])
def test_a_calls_futures_are_freed_without_the_cycle_collector(tmp_path: Path, ending: str) -> None:
    """A handler's answer and the future of its write hold each other only until the
    write completes: at a fleet's rate a reference cycle per call fed the cycle collector,
    whose full collections stalled every call in flight. Cancelling the answer still
    cancels the write. (A failed call may leave a cycle through its traceback: rare.)"""
    ingest = Ingest(lambda batch: BatchResult((), ()))
    service = _Service(ingest, bind_node_identity=False, limits=DEFAULT_LIMITS)
    write: concurrent.futures.Future[int] = concurrent.futures.Future()
    enabled = gc.isenabled()
    gc.disable()
    try:
        answer = service.then("Heartbeat", write, lambda n: n + 1)
        refs = [weakref.ref(write), weakref.ref(answer)]
        if ending == "answered":
            write.set_result(1)
            assert answer.result(0) == 2
        else:
            assert answer.cancel()
            assert write.cancelled()
        del write, answer
        assert [ref() for ref in refs] == [None, None]
    finally:
        if enabled:
            gc.enable()
