"""The fleet simulator (benchmarks/fleet_sim.py) against a real gRPC server that records
every call: each node registers once, the call mix and counts are the plan's, latencies
are recorded, and nothing is left connected when it returns."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil
import trio
from hypothesis import given, strategies as st

from tests.benchmark_scripts import load_benchmark
from tests.transport.manager.service_helpers import serving, sqlite_store
from transport import (
    CallContext,
    DaemonService,
    Listener,
    ManagerService,
    StatusCode,
    StatusError,
    daemon_pb2,
    manager_pb2,
    open_grpc_loop,
    serve_grpc,
    unary_route,
)
from transport.daemon._metric_keys import ORIGINAL_KEYS
from transport.manager._model import NodeStatus

ROOT = Path(__file__).resolve().parents[3]
SIMULATOR = ROOT / "benchmarks" / "fleet_sim.py"


fleet_sim = load_benchmark("fleet_sim")


@dataclass
class Recorder:
    """What the stand-in Manager received: (method, node_id) per call, and the requests."""

    calls: list[tuple[str, str]] = field(default_factory=list)
    registered: set[str] = field(default_factory=set)
    metric_keys: dict[str, set[str]] = field(default_factory=dict)
    states: Counter[int] = field(default_factory=Counter)
    forget: set[str] = field(default_factory=set)

    def note(self, method: str, node: str) -> None:
        self.calls.append((method, node))
        if method not in ("RegisterNode", "Heartbeat") and node not in self.registered:
            raise StatusError(StatusCode.NOT_FOUND, f"node {node} is not registered")


def routes(recorder: Recorder) -> list[Any]:
    async def register(
        request: manager_pb2.RegisterNodeRequest, _: CallContext
    ) -> manager_pb2.RegisterNodeResponse:
        recorder.note("RegisterNode", request.node_id)
        if request.node_id not in recorder.forget:
            recorder.registered.add(request.node_id)
        return manager_pb2.RegisterNodeResponse(success=True)

    async def heartbeat(
        request: manager_pb2.HeartbeatRequest, context: CallContext
    ) -> manager_pb2.HeartbeatResponse:
        recorder.note("Heartbeat", request.node_id)
        if request.node_id not in recorder.registered:
            context.trailing_metadata.append(("hostvisor-register", "1"))
        return manager_pb2.HeartbeatResponse(success=True)

    async def metrics(
        request: manager_pb2.ReportMetricsRequest, _: CallContext
    ) -> manager_pb2.ReportMetricsResponse:
        recorder.note("ReportMetrics", request.node_id)
        for data in request.metrics:
            recorder.metric_keys.setdefault(data.type, set()).update(data.values)
        return manager_pb2.ReportMetricsResponse(success=True)

    async def sync(
        request: daemon_pb2.SyncAgentStatesRequest, _: CallContext
    ) -> daemon_pb2.SyncAgentStatesResponse:
        recorder.note("SyncAgentStates", request.node_id)
        recorder.states[len(request.states)] += 1
        return daemon_pb2.SyncAgentStatesResponse(success=True)

    return [
        unary_route(ManagerService.RegisterNode, register),
        unary_route(ManagerService.Heartbeat, heartbeat),
        unary_route(ManagerService.ReportMetrics, metrics),
        unary_route(DaemonService.SyncAgentStates, sync),
    ]


@asynccontextmanager
async def stand_in() -> AsyncIterator[tuple[str, Recorder]]:
    """A gRPC server on 127.0.0.1 that records every call; yields its address."""
    recorder = Recorder()
    async with open_grpc_loop(), trio.open_nursery() as nursery:
        bound = await nursery.start(serve_grpc, routes(recorder), [Listener("127.0.0.1:0")])
        yield bound[0], recorder
        nursery.cancel_scope.cancel()


def connections_to(port: int) -> list[Any]:
    """This process's TCP connections to ``port`` that are not closed."""
    return [
        c
        for c in psutil.Process().net_connections(kind="tcp")
        if c.raddr and c.raddr.port == port and c.status != psutil.CONN_TIME_WAIT
    ]


def config(target: str, **changes: Any) -> Any:
    base = fleet_sim.FleetConfig(
        target=target, nodes=20, duration_s=2.0, compression=60.0, agents=3
    )
    return replace(base, **changes)


async def test_fleet_sends_the_plan_and_records_latencies() -> None:
    async with stand_in() as (target, recorder):
        run = config(target)
        result = await trio.to_thread.run_sync(fleet_sim.simulate, run)
        port = int(target.rpartition(":")[2])
        assert connections_to(port) == []

    expected = fleet_sim.plan(run)
    counts = Counter(method for method, _ in recorder.calls)
    assert dict(counts) == expected
    assert result.sent == expected
    assert result.ok == expected
    assert result.failures == {}
    assert result.unsent == dict.fromkeys(fleet_sim.METHODS, 0)
    nodes = {fleet_sim.node_id(run, i) for i in range(20)}
    assert recorder.registered == nodes
    assert Counter(node for method, node in recorder.calls if method == "RegisterNode") == (
        dict.fromkeys(nodes, 1)
    )
    # A 1 s ramp and a 2 s window at compression 60: two heartbeats per node, four
    # syncs at least.
    assert expected["Heartbeat"] == expected["ReportMetrics"] == 20 * 2
    assert expected["SyncAgentStates"] >= 20 * 4
    assert set(recorder.states) == {3}
    for kind, keys in ORIGINAL_KEYS.items():
        assert keys <= recorder.metric_keys[kind]
    for method in fleet_sim.METHODS:
        assert result.latency[method], method
        assert all(x > 0 for x in result.latency[method])
    table = fleet_sim.figures(result)
    assert table["steady"]["calls"] == sum(len(result.latency[m]) for m in fleet_sim.METHODS[1:])
    assert table["steady"]["p50"] <= table["steady"]["p99"] <= table["steady"]["max"]
    assert len(result.lag) == table["steady"]["calls"]  # none failed


async def test_the_managers_service_takes_the_fleet(tmp_path: Path) -> None:
    """The Manager's real gRPC service over SQLite: every call succeeds and is stored."""
    with sqlite_store(tmp_path) as store:
        async with open_grpc_loop(), serving(store) as manager:
            run = config(manager.address, nodes=10, duration_s=1.0)
            result = await trio.to_thread.run_sync(fleet_sim.simulate, run)
            stats = manager.ingest.statistics()
        expected = fleet_sim.plan(run)
        assert (result.ok, result.failures, result.register_requests) == (expected, {}, 0)
        assert stats.refused == {}
        assert (stats.registrations, stats.heartbeats, stats.metric_rows) == (
            10,
            expected["Heartbeat"],
            4 * expected["ReportMetrics"],
        )
        for index in range(10):
            name = fleet_sim.node_id(run, index)
            assert store.get_node(name).status is NodeStatus.ONLINE
            assert len(store.list_agents(name)) == run.agents
            assert all(row is not None for row in store.latest_metrics(name).values())


async def test_failures_and_register_requests_are_counted() -> None:
    """The stand-in forgets two nodes' registrations: their heartbeats are answered with
    the "register again" metadata, their other calls NOT_FOUND; counted, no latencies."""
    async with stand_in() as (target, recorder):
        run = config(target, nodes=4, duration_s=0.5)
        recorder.forget = {fleet_sim.node_id(run, 1), fleet_sim.node_id(run, 3)}
        result = await trio.to_thread.run_sync(fleet_sim.simulate, run)
    per_node = fleet_sim.plan(replace(run, nodes=1, first=1, total=4))
    per_node_3 = fleet_sim.plan(replace(run, nodes=1, first=3, total=4))
    assert result.failures == {
        "ReportMetrics": {"NOT_FOUND": per_node["ReportMetrics"] + per_node_3["ReportMetrics"]},
        "SyncAgentStates": {
            "NOT_FOUND": per_node["SyncAgentStates"] + per_node_3["SyncAgentStates"]
        },
    }
    assert result.register_requests == per_node["Heartbeat"] + per_node_3["Heartbeat"]
    assert result.ok["Heartbeat"] == result.sent["Heartbeat"]
    expected_ok = result.sent["SyncAgentStates"] - result.failures["SyncAgentStates"]["NOT_FOUND"]
    assert result.ok["SyncAgentStates"] == expected_ok
    assert fleet_sim.figures(result)["steady"]["failures"] == result.failed()


async def test_cli_shards_write_json_that_merges(tmp_path: Path) -> None:
    """Two simulator processes, each a half of one fleet, as bench_manager runs them."""
    async with stand_in() as (target, recorder):
        total = 10
        argv = [
            sys.executable,
            str(SIMULATOR),
            "--target",
            target,
            "--total",
            str(total),
            "--duration",
            "1",
            "--compression",
            "60",
            "--quiet",
        ]

        async def shard(first: int, out: Path) -> None:
            extra = ["--nodes", "5", "--first", str(first), "--json", str(out)]
            await trio.run_process([*argv, *extra], stdout=subprocess.DEVNULL)

        paths = [tmp_path / "a.json", tmp_path / "b.json"]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(shard, 0, paths[0])
            nursery.start_soon(shard, 5, paths[1])
        results = [fleet_sim.from_json(json.loads(p.read_text())) for p in paths]
    merged = fleet_sim.merge(results)
    whole = fleet_sim.FleetConfig(target=target, nodes=total, duration_s=1, compression=60)
    assert merged.sent == fleet_sim.plan(whole)
    assert Counter(method for method, _ in recorder.calls) == fleet_sim.plan(whole)
    assert recorder.registered == {fleet_sim.node_id(whole, i) for i in range(total)}
    assert merged.nodes == total


@given(
    total=st.integers(1, 300),
    compression=st.sampled_from([1.0, 7.5, 60.0]),
    duration=st.floats(0.1, 200.0),
    settle=st.floats(0.0, 10.0),
)
def test_events_are_ordered_spread_and_within_the_window(
    total: int, compression: float, duration: float, settle: float
) -> None:
    run = fleet_sim.FleetConfig(
        target="x", nodes=total, duration_s=duration, compression=compression, settle_s=settle
    )
    end = run.window[1]
    registrations = []
    for index in range(total):
        events = list(fleet_sim.node_events(run, index))
        dues = [due for due, _, _ in events]
        assert dues == sorted(dues)
        assert all(0 <= due < end for due in dues)
        assert events[0][1] == "RegisterNode"
        assert [m for _, m, _ in events].count("RegisterNode") == 1
        beats = [m for _, m, _ in events]
        assert beats.count("Heartbeat") == beats.count("ReportMetrics")
        registrations.append(events[0][0])
    gaps = {round(b - a, 6) for a, b in itertools.pairwise(registrations)}
    assert len(gaps) <= 1  # evenly spread over one heartbeat interval
    assert max(registrations) < run.ramp_s


@given(total=st.integers(2, 200), split=st.integers(1, 199), duration=st.floats(1.0, 300.0))
def test_shards_plan_what_the_fleet_plans(total: int, split: int, duration: float) -> None:
    split = min(split, total - 1)
    whole = fleet_sim.FleetConfig(target="x", nodes=total, duration_s=duration)
    left = replace(whole, nodes=split, total=total)
    right = replace(whole, nodes=total - split, first=split, total=total)
    a, b = fleet_sim.plan(left), fleet_sim.plan(right)
    assert {m: a[m] + b[m] for m in fleet_sim.METHODS} == fleet_sim.plan(whole)
