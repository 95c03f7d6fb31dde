"""The store's agents on SQLite and PostgreSQL: SyncAgentStates semantics, 100 concurrent
syncs of one node, and a Manager killed in the middle of a sync."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.transport.manager.test_store_nodes import registration, together
from transport import AgentInfoRecord, AgentStateRecord, AgentStatus
from transport.manager._errors import NotFoundError
from transport.manager._model import GONE, Agent
from transport.manager._store import Store

ROOT = Path(__file__).resolve().parents[3]
RUNNING = AgentStatus.RUNNING
STOPPED = AgentStatus.STOPPED


def by_id(agents: list[Agent]) -> dict[str, Agent]:
    return {agent.agent_id: agent for agent in agents}


@pytest.fixture
def node(store: Store) -> str:
    store.register_node(registration("node-1"), now=1.0, grpc_port=None)
    return "node-1"


def test_sync_creates_agents(store: Store, node: str) -> None:
    states = [
        AgentStateRecord("b", RUNNING, 20, 1000, "filebeat", "8.1"),
        AgentStateRecord("a", STOPPED, 0, None, "node_exporter", "1.7"),
    ]
    assert store.sync_agent_states(node, states, now=50.0) == 2
    agents = store.list_agents(node)
    assert [a.agent_id for a in agents] == ["a", "b"]
    b = agents[1]
    assert (b.node_id, b.type, b.version, b.status, b.pid) == (
        node,
        "filebeat",
        "8.1",
        "running",
        20,
    )
    assert b.last_heartbeat == 1000.0 and b.last_sync_time == b.created_at == b.updated_at == 50.0
    assert store.get_agent(node, "b") == b
    assert agents[0].last_heartbeat is None and agents[0].status == "stopped"


def test_empty_fields_keep_stored_values(store: Store, node: str) -> None:
    store.sync_agent_states(node, [AgentStateRecord("a", RUNNING, 20, 1000, "t", "1.0")], now=1.0)
    # Nothing reported: everything kept.
    store.sync_agent_states(node, [AgentStateRecord("a")], now=2.0)
    a = store.get_agent(node, "a")
    assert (a.type, a.version, a.status, a.pid, a.last_heartbeat) == (
        "t",
        "1.0",
        "running",
        20,
        1000.0,
    )
    assert a.last_sync_time == 2.0 and a.created_at == 1.0
    # A status with pid 0 is a stopped agent: the pid is taken.
    store.sync_agent_states(node, [AgentStateRecord("a", STOPPED, 0, None, "", "1.1")], now=3.0)
    a = store.get_agent(node, "a")
    assert (a.type, a.version, a.status, a.pid, a.last_heartbeat) == (
        "t",
        "1.1",
        "stopped",
        0,
        1000.0,
    )
    # A pid without a status is taken too.
    store.sync_agent_states(node, [AgentStateRecord("a", None, 33, 2000)], now=4.0)
    a = store.get_agent(node, "a")
    assert (a.status, a.pid, a.last_heartbeat) == ("stopped", 33, 2000.0)


def test_full_sync_marks_missing_agents_gone(store: Store, node: str) -> None:
    store.sync_agent_states(
        node, [AgentStateRecord(x, RUNNING, 10 + i) for i, x in enumerate("abc")], now=1.0
    )
    assert store.sync_agent_states(node, [AgentStateRecord("b", RUNNING, 11)], now=2.0) == 1
    agents = by_id(store.list_agents(node))
    assert {k: (a.status, a.pid) for k, a in agents.items()} == {
        "a": (GONE, 0),
        "b": ("running", 11),
        "c": (GONE, 0),
    }
    assert agents["a"].updated_at == 2.0 and agents["a"].last_sync_time == 1.0
    # A partial sync leaves the others alone; a gone agent that is reported comes back.
    store.sync_agent_states(node, [AgentStateRecord("a", RUNNING, 99)], now=3.0, full=False)
    agents = by_id(store.list_agents(node))
    assert (agents["a"].status, agents["a"].pid) == ("running", 99)
    assert agents["b"].status == "running" and agents["c"].status == GONE
    # An empty full sync: the node runs nothing.
    assert store.sync_agent_states(node, [], now=4.0) == 0
    assert {a.status for a in store.list_agents(node)} == {GONE}


def test_full_sync_of_a_long_list(store: Store, node: str) -> None:
    many = [AgentStateRecord(f"agent-{i:04d}", RUNNING, i + 1) for i in range(1500)]
    assert store.sync_agent_states(node, many, now=1.0) == 1500
    assert store.sync_agent_states(node, many[1:], now=2.0) == 1499
    agents = by_id(store.list_agents(node))
    assert agents["agent-0000"].status == GONE
    assert sum(a.status == "running" for a in agents.values()) == 1499


def test_an_agent_named_twice_takes_its_last_state(store: Store, node: str) -> None:
    states = [AgentStateRecord("a", RUNNING, 1), AgentStateRecord("a", STOPPED, 0)]
    assert store.sync_agent_states(node, states, now=1.0) == 1
    assert store.get_agent(node, "a").status == "stopped"


def test_unknown_node_and_agent(store: Store, node: str) -> None:
    with pytest.raises(NotFoundError, match="node ghost is not registered"):
        store.sync_agent_states("ghost", [AgentStateRecord("a")], now=1.0)
    with pytest.raises(NotFoundError, match="ghost"):
        store.list_agents("ghost")
    with pytest.raises(NotFoundError, match="ghost"):
        store.get_agent("ghost", "a")
    with pytest.raises(NotFoundError, match="no agent zz"):
        store.get_agent(node, "zz")
    with pytest.raises(NotFoundError):
        store.replace_agents("ghost", [], now=1.0)


def test_replace_agents_is_a_full_sync(store: Store, node: str) -> None:
    store.sync_agent_states(node, [AgentStateRecord("old", RUNNING, 5)], now=1.0)
    infos = [AgentInfoRecord("new", "filebeat", "8", RUNNING, 42, 100, 3, 200)]
    assert store.replace_agents(node, infos, now=2.0) == 1
    agents = by_id(store.list_agents(node))
    assert agents["old"].status == GONE
    new = agents["new"]
    assert (new.type, new.version, new.status, new.pid, new.last_heartbeat) == (
        "filebeat",
        "8",
        "running",
        42,
        200.0,
    )


def test_agent_counts(store: Store, node: str) -> None:
    assert store.agent_counts() == {}
    store.register_node(registration("node-2"), now=1.0, grpc_port=None)
    store.sync_agent_states(node, [AgentStateRecord(x, RUNNING, 1) for x in "abc"], now=1.0)
    store.sync_agent_states(node, [AgentStateRecord("a", RUNNING, 1)], now=2.0)
    store.sync_agent_states(
        "node-2", [AgentStateRecord("x", STOPPED), AgentStateRecord("y")], now=2.0
    )
    assert store.agent_counts() == {"running": 1, GONE: 2, "stopped": 1, "unknown": 1}


def test_purge_gone_agents(store: Store, node: str) -> None:
    store.sync_agent_states(node, [AgentStateRecord(x, RUNNING, 1) for x in "abc"], now=1.0)
    store.sync_agent_states(node, [AgentStateRecord("c", RUNNING, 1)], now=10.0)  # a, b gone at 10
    assert store.purge_gone_agents(before=10.0) == 0
    assert store.purge_gone_agents(before=11.0) == 2
    assert [a.agent_id for a in store.list_agents(node)] == ["c"]


def test_100_concurrent_syncs_of_one_node(store: Store, node: str) -> None:
    common = [f"common-{i}" for i in range(10)]

    def sync(index: int) -> int:
        states = [AgentStateRecord(a, RUNNING, index + 1) for a in common]
        states.append(AgentStateRecord(f"only-{index}", RUNNING, index + 1))
        return store.sync_agent_states(node, states, now=float(index))

    assert together(100, sync) == [11] * 100
    agents = store.list_agents(node)
    assert len(agents) == len({a.agent_id for a in agents}) == 110  # no duplicate rows
    alive = [a for a in agents if a.status != GONE]
    # The last sync to commit is the state, whole: its agents alive with its pid, no other.
    pids = {a.pid for a in alive}
    assert len(pids) == 1
    (winner,) = pids
    assert {a.agent_id for a in alive} == {*common, f"only-{winner - 1}"}
    assert all(a.pid == 0 for a in agents if a.status == GONE)


CHILD = textwrap.dedent(
    """
    import sys
    from sqlalchemy import event
    from transport import AgentStateRecord, AgentStatus
    from transport.manager._store import Store

    store = Store.open(sys.argv[1], migrate=False)

    @event.listens_for(store.engine, "after_cursor_execute")
    def pause(conn, cursor, statement, parameters, context, executemany):
        if "INSERT INTO AGENTS" in statement.upper():  # PostgreSQL: inside a WITH
            print("inside", flush=True)
            sys.stdin.read()  # until killed

    states = [AgentStateRecord(f"new-{i}", AgentStatus.FAILED, 7) for i in range(50)]
    states.append(AgentStateRecord("a", AgentStatus.FAILED, 7, None, "changed", "9"))
    store.sync_agent_states("node-1", states, now=99.0)
    print("committed", flush=True)
    """
)


def test_manager_killed_in_the_middle_of_a_sync(store_url: str, store: Store, node: str) -> None:
    store.sync_agent_states(
        node, [AgentStateRecord(x, RUNNING, 5, 100, "t", "1") for x in "ab"], now=1.0
    )
    before = store.list_agents(node)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, store_url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "inside\n"  # the upsert ran, not committed
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
        for stream in (child.stdin, child.stdout):
            if stream is not None:
                stream.close()
    assert child.returncode == -signal.SIGKILL
    assert store.list_agents(node) == before
    # Nothing is left locked: the next sync goes through.
    assert store.sync_agent_states(node, [AgentStateRecord("a", STOPPED, 0)], now=2.0) == 1
    assert by_id(store.list_agents(node))["b"].status == GONE


def test_a_batch_writes_all_four_kinds_in_one_transaction(store: Store) -> None:
    """Store.write_batch (the gRPC ingest's batch): a node registered in the batch is known
    to its heartbeats, reports and syncs; an unknown node's sync is None, not an error."""
    from transport import MetricPoint

    running = AgentStateRecord(agent_id="a1", status=AgentStatus.RUNNING, pid=7)
    registered, created, inserted, synced = store.write_batch(
        [(registration("n1"), 9091, 10.0)],
        [("n1", 11.0), ("n2", 11.0)],
        [("n1", [MetricPoint("cpu", 11, {"usage_percent": 5.0})])],
        [("ghost", (running,), 12.0), ("n1", (running,), 12.0)],
        now=13.0,
    )
    assert [(n.node_id, n.grpc_port) for n in registered] == [("n1", 9091)]
    assert (created, inserted, synced) == ([False, True], [1], [None, 1])
    assert [(a.agent_id, a.pid) for a in store.list_agents("n1")] == [("a1", 7)]
    assert store.write_batch([], [], [], [], now=14.0) == ([], [], [], [])
    # Two syncs of one node in a batch: the last list decides which agents are gone.
    other = AgentStateRecord(agent_id="a2", status=AgentStatus.RUNNING, pid=8)
    both, only_other = (running, other), (other,)
    _, _, _, synced = store.write_batch(
        [], [], [], [("n1", both, 15.0), ("n1", only_other, 16.0)], now=16.0
    )
    assert synced == [2, 1]
    agents = {a.agent_id: (a.status, a.pid) for a in store.list_agents("n1")}
    assert agents == {"a1": (GONE, 0), "a2": ("running", 8)}


def test_a_batch_of_many_nodes_syncs(store: Store) -> None:
    """Full syncs of several nodes in one batch (on PostgreSQL one statement): each node's
    agents are upserted with the empty-field rules, the agents its list left out are gone
    as of its own sync, a node with an empty list has every agent gone, and a node
    without a sync in the batch is untouched."""
    for node in ("n1", "n2", "n3", "n4"):
        store.register_node(registration(node), now=1.0, grpc_port=None)
        store.sync_agent_states(
            node,
            [AgentStateRecord("a", RUNNING, 10, type="telegraf", version="1.0"),
             AgentStateRecord("b", RUNNING, 11)],
            now=2.0,
        )  # fmt: skip
    empty_fields = AgentStateRecord("a", None, 0)  # keeps type, version, status and pid
    _, _, _, synced = store.write_batch(
        [],
        [],
        [],
        [
            ("n2", (AgentStateRecord("b", STOPPED, 0), AgentStateRecord("c", RUNNING, 12)), 5.0),
            ("n1", (empty_fields,), 4.0),
            ("n3", (), 6.0),
        ],
        now=6.0,
    )
    assert synced == [2, 1, 0]

    def states(node: str) -> dict[str, tuple[str, int, float]]:
        return {a.agent_id: (a.status, a.pid, a.updated_at) for a in store.list_agents(node)}

    assert states("n1") == {"a": ("running", 10, 4.0), "b": (GONE, 0, 4.0)}
    assert by_id(store.list_agents("n1"))["a"].type == "telegraf"
    assert states("n2") == {
        "a": (GONE, 0, 5.0),
        "b": ("stopped", 0, 5.0),
        "c": ("running", 12, 5.0),
    }
    assert states("n3") == {"a": (GONE, 0, 6.0), "b": (GONE, 0, 6.0)}
    assert states("n4") == {"a": ("running", 10, 2.0), "b": ("running", 11, 2.0)}
