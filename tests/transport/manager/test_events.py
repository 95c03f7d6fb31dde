"""The event hub: fan-out, dropping a lagging subscriber, publishing from other threads,
agent-change detection and the loader task, and the SSE wire format."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence

import pytest
import trio
import trio.testing
from hypothesis import given, strategies as st

from transport import AgentStateRecord, AgentStatus
from transport.manager._events import EventHub, sse
from transport.manager._model import Agent

SAFETY_S = 30


async def test_every_subscriber_gets_every_event_in_order() -> None:
    """Two subscribers each receive what was published after they subscribed."""
    hub = EventHub()
    hub.publish("before", {})  # nobody listens yet: discarded
    with hub.subscribe() as a, hub.subscribe() as b:
        assert hub.subscribers == 2
        hub.publish("node", {"node_id": "n1", "status": "online"})
        hub.update(7)
        for sub in (a, b):
            first, second = await sub.receive(), await sub.receive()
            assert first is not None and second is not None
            assert (first.name, dict(first.data)) == ("node", {"node_id": "n1", "status": "online"})
            assert (second.name, dict(second.data)) == ("update", {"id": 7})
        assert await a.receive(timeout_s=0) is None
    assert hub.subscribers == 0
    stats = hub.statistics()
    assert (stats.published, stats.delivered, stats.dropped) == (3, 4, 0)


async def test_a_lagging_subscriber_is_dropped_never_waited_for() -> None:
    """Publishing never blocks: a full queue drops its subscriber, which reads what was
    queued and then the end; the others go on."""
    hub = EventHub(queue_size=2)
    with hub.subscribe() as slow, hub.subscribe() as fast:
        for i in range(2):
            hub.update(i)
            event = await fast.receive()
            assert event is not None and event.data == {"id": i}
        hub.update(2)  # slow's queue is full: dropped
        assert hub.subscribers == 1 and hub.statistics().dropped == 1
        assert [(await slow.receive()).data for _ in range(2)] == [{"id": 0}, {"id": 1}]  # type: ignore[union-attr]
        with pytest.raises(trio.EndOfChannel):
            await slow.receive()
        event = await fast.receive()
        assert event is not None and event.data == {"id": 2}


async def test_publishing_from_another_thread() -> None:
    """A publication from a thread that is not Trio's is delivered by the Trio thread."""
    hub = EventHub()
    with hub.subscribe() as sub:
        thread = threading.Thread(target=hub.node_status, args=("n9", "offline"))
        thread.start()
        await trio.to_thread.run_sync(thread.join)
        with trio.fail_after(SAFETY_S):
            event = await sub.receive()
        assert event is not None and event.data == {"node_id": "n9", "status": "offline"}
        hub.node_seen("n8")  # never reported offline: nothing
        await trio.to_thread.run_sync(hub.node_seen, "n9")  # back: online
        with trio.fail_after(SAFETY_S):
            event = await sub.receive()
        assert event is not None and event.data == {"node_id": "n9", "status": "online"}
        hub.node_seen("n9")  # reported online already: nothing more
        assert await sub.receive(timeout_s=0) is None


def _state(agent_id: str, status: AgentStatus, pid: int = 0) -> AgentStateRecord:
    return AgentStateRecord(agent_id=agent_id, status=status, pid=pid, last_heartbeat=None)


async def test_changed_agents_are_loaded_and_published_by_run() -> None:
    """A report that changes ids, statuses or pids makes ``run`` load the node's agents and
    publish them; the same report again (even with other heartbeats) does not."""
    hub = EventHub()
    loads: list[str] = []

    def load(node_id: str) -> Sequence[Agent]:
        loads.append(node_id)
        return [Agent(id=1, node_id=node_id, agent_id="a", status="running", pid=10)]

    running = [_state("a", AgentStatus.RUNNING, 10)]
    with trio.fail_after(SAFETY_S), hub.subscribe() as sub:
        async with trio.open_nursery() as nursery:
            await nursery.start(hub.run, load)
            assert await trio.to_thread.run_sync(hub.agents_reported, "n1", running)
            event = await sub.receive()
            assert event is not None and event.name == "agents"
            assert event.data["node_id"] == "n1"
            assert [(a["agent_id"], a["status"], a["pid"]) for a in event.data["agents"]] == [
                ("a", "running", 10)
            ]
            assert not hub.agents_reported("n1", running)
            hub.node_status("n1", "deleted")  # forgotten: its next report is news
            assert (await sub.receive()) is not None
            assert hub.agents_reported("n1", running)
            event = await sub.receive()
            assert event is not None and event.name == "agents"
            assert hub.agents_reported("n1", [_state("a", AgentStatus.STOPPED)])
            event = await sub.receive()
            assert event is not None and event.name == "agents"
            nursery.cancel_scope.cancel()
        with pytest.raises(trio.EndOfChannel):  # run stopped: the subscriptions end
            await sub.receive()
    assert loads == ["n1", "n1", "n1"]


async def test_no_listener_no_load() -> None:
    """Without subscribers a change reads nothing."""
    hub = EventHub()
    loads: list[str] = []

    def load(node_id: str) -> Sequence[Agent]:
        loads.append(node_id)
        return []

    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run, load)
        assert hub.agents_reported("n1", [_state("a", AgentStatus.RUNNING, 1)])
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert loads == []


@given(
    st.from_regex(r"[A-Za-z0-9_-]+", fullmatch=True),
    st.dictionaries(st.text(), st.one_of(st.text(), st.integers(), st.none())),
)
def test_sse_is_one_event_line_and_one_data_line(name: str, data: dict[str, object]) -> None:
    """Whatever the data, an event is ``event:`` and a single ``data:`` line of JSON that
    reads back equal, ended by a blank line."""
    wire = sse(name, data).decode()
    assert wire.endswith("\n\n")
    lines = wire[:-2].split("\n")
    assert len(lines) == 2 and lines[0] == f"event: {name}"
    assert lines[1].startswith("data: ") and json.loads(lines[1][6:]) == data


def test_sse_refuses_a_multiline_name_and_formats_a_comment() -> None:
    """A name with a line break could forge events: refused. None is a keep-alive."""
    for name in ("a\nevent: b", "a\rb", "", "é"):
        with pytest.raises(ValueError):
            sse(name, {})
    assert sse(None) == b": keep-alive\n\n"
