"""The whole system when its parts fail (issue 15, "End-to-end tests"): real processes.

One fleet for the module (:mod:`tests.e2e.harness`): a Manager and three daemons, every
interval 1 s. Nodes 1 and 2 have a spool far larger than any outage here fills; node 3's
holds a few reports only, so that the long outage overflows it. Each test starts from a
settled fleet (nothing waits in any spool, the Manager lists every agent as its daemon
runs it) and leaves one.

What a daemon produced during an outage is read from its spool as it fills
(:class:`~tests.e2e.resilience_helpers.SpoolWatch`): every report it makes while the
Manager is away waits there, one file per report, until it is delivered or dropped by the
spool's bounds. Afterwards each report is looked up at the Manager by its key (node,
type, timestamp) and its exact reading time (``@timestamp``).

Wire timestamps are whole seconds and the Manager ignores a second report of one node,
type and second as a duplicate, so intervals stay at 1 s here: at 0.5 s half the reports
would be duplicates by design.
"""

from __future__ import annotations

import datetime as dt
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Api, DaemonProc, Fleet, processes_under
from tests.e2e.resilience_helpers import (
    Delivery,
    Poller,
    Rows,
    Spooled,
    SpoolWatch,
    agent_runs,
    check_delivery,
    evicted_in_log,
    read_spool,
    read_store,
    stored_metrics,
)
from tests.supervisor.helpers import kill_all
from transport import manager_pb2

pytestmark = pytest.mark.slow

BIG_SPOOL = 8 * 1024 * 1024
"""Nodes 1 and 2: thousands of reports (one is 2 to 8 KiB)."""
SMALL_SPOOL = 24 * 1024
"""Node 3: a few reports (about six of 4 KiB on the development machine)."""
SMALL_NODE = "node-3"
SHORT_OUTAGE_REPORTS = 3
"""Reports each daemon spools before the Manager comes back from a restart."""
LONG_OUTAGE_REPORTS = 24
"""Reports nodes 1 and 2 spool during the long outage: dozens of intervals."""
EVICTIONS = 3
"""Reports node 3 must have dropped before the long outage ends."""


def spool_bounds(index: int) -> dict[str, Any]:
    size = SMALL_SPOOL if f"node-{index}" == SMALL_NODE else BIG_SPOOL
    return {"manager": {"spool": {"max_bytes": size, "max_age": "1h"}}}


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    """The module's fleet; once it is closed, no process of it may be left: none working
    in its directories, and none carrying the marker of any daemon's agents."""
    root = Path(tempfile.mkdtemp(prefix="hvr-", dir="/tmp"))
    made = Fleet(root, nodes=3, daemon_extra=spool_bounds)
    try:
        with made:
            yield made
        left = [(p.pid, p.cmdline()) for p in made.leftovers()]
        agents = {d.node_id: runs for d in made.daemons if (runs := agent_runs(d.work))}
    finally:
        kill_all(p.pid for p in processes_under(root))
        shutil.rmtree(root, ignore_errors=True)
    assert not left, f"left running after the fleet closed: {left}"
    assert not agents, f"agents left running after the fleet closed: {agents}"


# --------------------------------------------------------------------------- views


def manager_view(api: Api, node_id: str) -> dict[str, tuple[str, int]]:
    """The node's agents as the Manager lists them: status and pid by agent id."""
    return {a["agent_id"]: (a["status"], a["pid"]) for a in api.agents(node_id)}


def daemon_view(daemon: DaemonProc) -> dict[str, tuple[str, int]]:
    """The daemon's agents as its state file records them: ``running`` and the pid, or
    ``stopped`` and 0."""
    agents = daemon.state().get("agents", {})
    return {
        agent_id: ("running", int(entry["process"]["pid"]))
        if entry.get("process")
        else ("stopped", 0)
        for agent_id, entry in agents.items()
    }


def spawns(work: Path) -> dict[str, set[str]]:
    """The spawns (run markers) of a daemon's agents that have a live process, by agent
    id: one each means no second copy runs, whatever children an agent has just now."""
    return {agent: set(runs) for agent, runs in agent_runs(work).items()}


def running_pids(daemon: DaemonProc) -> dict[str, int]:
    """The pids ``state.json`` records for the daemon's agents that are alive now, each
    in its agent's processes."""
    live = agent_runs(daemon.work)
    return {
        agent: pid
        for agent, pid in daemon.pids().items()
        if any(pid in pids for pids in live.get(agent, {}).values())
    }


def settle(fleet: Fleet) -> None:
    """Wait until every daemon delivered all it made and the Manager lists every agent as
    its daemon runs it."""
    api = fleet.api("viewer")

    def settled() -> bool:
        return all(
            not read_spool(d.work) and d.running and manager_view(api, d.node_id) == daemon_view(d)
            for d in fleet.daemons
        )

    fleet.wait(settled, "empty spools and the Manager's agents as the daemons run them")


def unix(text: str) -> float:
    """An RFC 3339 time of the REST API as unix seconds."""
    return dt.datetime.fromisoformat(text).timestamp()


def rfc3339(when: float) -> str:
    return dt.datetime.fromtimestamp(int(when), tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rest_rows(api: Api, node_id: str, start: float) -> Rows:
    """A node's rows of one type through the REST API's history (raw rows: a span under
    an hour), from ``start`` until now."""

    def rows(kind: str) -> list[tuple[int, int, float]]:
        found = api.get(
            f"/metrics/nodes/{node_id}/{kind}/history",
            start_time=rfc3339(start - 1),
            end_time=rfc3339(time.time() + 2),
        )
        return [
            (
                r["id"],
                int(unix(r["timestamp"])),
                r["values"].get("@timestamp", unix(r["timestamp"])),
            )
            for r in found
        ]

    return rows


def count_spooled(watch: SpoolWatch, node_id: str) -> int:
    return len(watch.entries(node_id, "metrics"))


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_manager_restart_loses_nothing(fleet: Fleet, sig: int) -> None:
    """The Manager stops (SIGTERM, or SIGKILL) and comes back on the same ports and
    database: the daemons register again by themselves, every metric report they made
    meanwhile arrives (seen through the REST API's history), in order, and the agents'
    states at the Manager match the hosts again."""
    settle(fleet)
    api = fleet.api("viewer")
    registrations = {d.node_id: d.run_text().count("registered as node") for d in fleet.daemons}
    evicted = {d.node_id: evicted_in_log(d.run_text()) for d in fleet.daemons}
    started = time.time()
    watch = SpoolWatch({d.node_id: d.work for d in fleet.daemons})
    with watch.running():
        fleet.manager.stop(sig)
        fleet.wait(
            lambda: all(count_spooled(watch, n) >= SHORT_OUTAGE_REPORTS for n in fleet.node_ids),
            f"{SHORT_OUTAGE_REPORTS} reports spooled by every daemon",
        )
        back = time.time()
        fleet.manager.start()
        fleet.wait(lambda: not any(read_spool(d.work) for d in fleet.daemons), "empty spools")
    settle(fleet)
    for daemon in fleet.daemons:
        node = daemon.node_id
        log = daemon.run_text()
        assert log.count("registered as node") > registrations[node], f"{node} did not register"
        delivery = check_delivery(node, watch.entries(node), rest_rows(api, node, started))
        dropped = evicted_in_log(log) - evicted[node]
        assert len(delivery.lost) <= dropped, f"{node}: lost {delivery.lost} but dropped {dropped}"
        if node != SMALL_NODE:
            assert not delivery.lost and dropped == 0, f"{node} lost reports within its bound"
        for agent in api.agents(node):  # synced since the Manager came back
            assert unix(agent["last_sync_time"]) >= int(back), (node, agent)


def test_killed_daemon_agents_are_adopted_and_never_seen_stopped(fleet: Fleet) -> None:
    """A daemon SIGKILLed leaves its agents running (same pids); a new daemon on the same
    work directory adopts them (same pids, no second copy); and the Manager, polled
    every 0.1 s from the kill until the new daemon has synced twice, always lists each
    agent once, running, with its pid."""
    settle(fleet)
    daemon = fleet.daemon("node-2")
    node = daemon.node_id
    pids = daemon.pids()
    assert pids and all(status == "running" for status, _ in daemon_view(daemon).values())
    runs = spawns(daemon.work)
    assert {agent: len(ids) for agent, ids in runs.items()} == dict.fromkeys(pids, 1)
    assert running_pids(daemon) == pids
    api = fleet.api("viewer")
    poller = Poller(lambda: api.agents(node))
    with poller.running():
        daemon.kill()
        killed = time.time()
        assert spawns(daemon.work) == runs, "the agents changed when the daemon died"
        assert running_pids(daemon) == pids
        fleet.wait(
            lambda: sum(when > killed for when, _ in list(poller.answers)) >= 3,
            "the Manager's list read while no daemon runs on the node",
        )
        restarted = time.time()
        daemon.start()

        def synced_twice() -> bool:
            seconds = {
                unix(a["last_sync_time"])
                for _, agents in list(poller.answers)
                for a in agents
                if a["last_sync_time"] and unix(a["last_sync_time"]) > restarted
            }
            return len(seconds) >= 2

        fleet.wait(synced_twice, f"two agent syncs of {node} after its daemon restarted")
    assert not poller.failures, poller.failures
    assert poller.answers
    for when, agents in poller.answers:
        listed = [a["agent_id"] for a in agents]
        assert sorted(listed) == sorted(pids), f"at {when}: the Manager listed {listed}"
        for agent in agents:
            assert (agent["status"], agent["pid"]) == ("running", pids[agent["agent_id"]]), (
                f"at {when}: the Manager listed {agent}"
            )
    assert spawns(daemon.work) == runs, "an agent was started again instead of adopted"
    assert running_pids(daemon) == pids and daemon.pids() == pids
    for agent_id, pid in pids.items():
        assert f"agent {agent_id}: adopted running pid {pid}" in daemon.run_text()
    assert sorted(n["node_id"] for n in api.nodes()) == fleet.node_ids
    settle(fleet)


def test_long_outage_delivers_the_spool_in_order(fleet: Fleet) -> None:
    """The Manager is away for dozens of intervals, and every daemon's agent ``sleeper``
    stops meanwhile. Nodes 1 and 2, within their spool's bound, deliver every report
    they made once it is back, in order, nothing missing, nothing else; node 3 overflows
    its small spool: it drops the oldest reports and says so in its log, the spool stays
    within its bound, and the newest arrive in order. Every node's state change arrives.
    Node 2's daemon is SIGKILLed and started again during the outage: the next one
    delivers what the first spooled, before its own reports."""
    settle(fleet)
    registrations = {d.node_id: d.run_text().count("registered as node") for d in fleet.daemons}
    evicted = {d.node_id: evicted_in_log(d.run_text()) for d in fleet.daemons}
    small, restarted = fleet.daemon(SMALL_NODE), fleet.daemon("node-2")
    watch = SpoolWatch({d.node_id: d.work for d in fleet.daemons})
    with watch.running():
        fleet.manager.kill()
        for daemon in fleet.daemons:
            result = daemon.ctl("stop", "sleeper")
            assert result.returncode == 0, result.stderr
        fleet.wait(
            lambda: count_spooled(watch, restarted.node_id) >= SHORT_OUTAGE_REPORTS,
            f"{SHORT_OUTAGE_REPORTS} reports spooled by {restarted.node_id}",
        )
        restarted.kill()
        restarted.start()
        registrations[restarted.node_id] = evicted[restarted.node_id] = 0  # a new log
        fleet.wait(
            lambda: (
                all(
                    count_spooled(watch, n) >= LONG_OUTAGE_REPORTS
                    for n in fleet.node_ids
                    if n != SMALL_NODE
                )
                and evicted_in_log(small.run_text()) - evicted[SMALL_NODE] >= EVICTIONS
            ),
            f"{LONG_OUTAGE_REPORTS} reports spooled by nodes 1 and 2, {EVICTIONS} dropped by"
            f" {SMALL_NODE}",
        )
        fleet.manager.start()
        fleet.wait(lambda: not any(read_spool(d.work) for d in fleet.daemons), "empty spools")
    assert "undelivered report(s) from before" in restarted.run_text()
    api = fleet.api("viewer")
    fleet.wait(
        lambda: all(manager_view(api, n)["sleeper"] == ("stopped", 0) for n in fleet.node_ids),
        "sleeper listed stopped on every node",
    )
    db = fleet.manager.dir / "data" / "manager.db"
    with read_store(db) as store:
        for daemon in fleet.daemons:
            node = daemon.node_id
            log = daemon.run_text()
            assert log.count("registered as node") > registrations[node], f"{node} did not register"
            assert watch.entries(node, "metrics"), (
                f"{node}'s spool took no report: is one larger than {SMALL_SPOOL} bytes here?"
            )
            delivery = check_delivery(
                node, watch.entries(node), partial(stored_metrics, store, node)
            )
            dropped = evicted_in_log(log) - evicted[node]
            if node != SMALL_NODE:
                assert len(delivery.arrived) + len(delivery.duplicates) >= LONG_OUTAGE_REPORTS
                assert not delivery.lost and dropped == 0, f"{node} lost reports within its bound"
                continue
            assert delivery.lost, f"{node} overflowed its spool but lost nothing"
            assert len(delivery.lost) <= dropped, f"{node}: lost {delivery.lost}, dropped {dropped}"
            newest = watch.entries(node, "metrics")[-1]
            assert newest not in delivery.lost, f"{node}: the newest report did not arrive"
            assert watch.most_bytes[node] <= SMALL_SPOOL + watch.largest[node], (
                f"{node}: the spool held {watch.most_bytes[node]} bytes (bound {SMALL_SPOOL})"
            )
    for daemon in fleet.daemons:
        result = daemon.ctl("start", "sleeper")
        assert result.returncode == 0, result.stderr
    settle(fleet)


# --------------------------------------------------------------------------- the checker


def report(seq: int, *readings: tuple[str, float]) -> Spooled:
    """A spooled metric report of ``(type, exact reading time)`` pairs."""
    request = manager_pb2.ReportMetricsRequest(
        node_id="node-x",
        metrics=[
            manager_pb2.MetricData(
                type=kind, timestamp=int(exact), values={"@timestamp": exact, "usage": 1.0}
            )
            for kind, exact in readings
        ],
    )
    return Spooled(seq, readings[0][1], "metrics", request.SerializeToString())


def table(*rows: tuple[int, str, float]) -> Rows:
    """Stored rows ``(row id, type, exact reading time)`` as :func:`check_delivery` reads
    them."""

    def of(kind: str) -> list[tuple[int, int, float]]:
        found = [(row_id, int(exact), exact) for row_id, k, exact in rows if k == kind]
        return sorted(found, key=lambda row: row[1])

    return of


SPOOLED = [
    report(seq, ("cpu", ts + 0.25), ("memory", ts + 0.5))
    for seq, ts in ((3, 103), (5, 104), (6, 105), (8, 107))
]
"""Four reports a daemon spooled (seq 4 and 7: state syncs), one a second but for a tick
its collectors missed (106)."""


def rows_at(*seconds: int, first_id: int = 1) -> list[tuple[int, str, float]]:
    """A cpu and a memory row, as SPOOLED's, for each second, with growing ids."""
    rows = [[(0, "cpu", ts + 0.25), (0, "memory", ts + 0.5)] for ts in seconds]
    flat = [row for pair in rows for row in pair]
    return [(first_id + i, kind, exact) for i, (_, kind, exact) in enumerate(flat)]


def test_the_checker_accepts_every_report_delivered_in_order() -> None:
    delivery = check_delivery("node-x", SPOOLED, table(*rows_at(102, 103, 104, 105, 107, 108)))
    assert delivery == Delivery(SPOOLED, [], [])


def test_the_checker_accepts_the_oldest_dropped() -> None:
    delivery = check_delivery("node-x", SPOOLED, table(*rows_at(105, 107)))
    assert delivery == Delivery(SPOOLED[2:], [], SPOOLED[:2])


LATE = [
    report(1, ("cpu", 100.5), ("memory", 101.05)),  # the memory reading came late
    report(2, ("cpu", 101.5), ("memory", 101.96)),
    report(3, ("cpu", 101.9), ("memory", 101.99)),  # a whole round late into the next
    report(4, ("cpu", 102.5), ("memory", 102.9)),
]
"""Reports whose readings meet others' in one second (the Manager keeps the first)."""


def test_the_checker_knows_readings_of_one_second() -> None:
    """The Manager keeps the first reading of a second: a later one sharing it is no
    loss, and neither is a report made only of such readings."""
    rows = [(1, "cpu", 100.5), (2, "memory", 101.05), (3, "cpu", 101.5), (4, "cpu", 102.5)]
    delivery = check_delivery("node-x", LATE, table(*rows, (5, "memory", 102.9)))
    assert delivery == Delivery([LATE[0], LATE[1], LATE[3]], [LATE[2]], [])
    # The first report dropped (the spool's oldest): the second's reading is the first.
    rows = [(3, "cpu", 101.5), (4, "memory", 101.96), (5, "cpu", 102.5), (6, "memory", 102.9)]
    delivery = check_delivery("node-x", LATE, table(*rows))
    assert delivery == Delivery([LATE[1], LATE[3]], [LATE[2]], [LATE[0]])
    # A later reading stored instead of the first: delivered out of order.
    later = [*LATE, report(5, ("cpu", 103.5), ("memory", 102.97))]
    rows = [(1, "cpu", 100.5), (2, "memory", 101.05), (3, "cpu", 101.5), (4, "cpu", 102.5)]
    rows += [(5, "memory", 102.97), (6, "cpu", 103.5)]
    with pytest.raises(AssertionError, match=r"first made and delivered is 102\.9$"):
        check_delivery("node-x", later, table(*rows))


@pytest.mark.parametrize(
    ("rows", "problem"),
    [
        pytest.param(rows_at(103, 107), "not all older", id="lost-in-the-middle"),
        pytest.param(rows_at(105, 107)[:-1], "arrived in part", id="part-of-a-report"),
        pytest.param(
            [*rows_at(105), (3, "cpu", 106.0), *rows_at(107, first_id=4)],
            "but the daemon made",
            id="a-row-nobody-made",
        ),
        pytest.param(
            [*rows_at(105), (3, "cpu", 107.75), (4, "memory", 107.5)],
            "stored reading",
            id="another-reading",
        ),
        pytest.param(
            [(3, "cpu", 105.25), (2, "memory", 105.5), (1, "cpu", 107.25), (4, "memory", 107.5)],
            "out of order",
            id="out-of-order",
        ),
        pytest.param([(1, "disk", 106.0)], "none of 4", id="nothing-arrived"),
    ],
)
def test_the_checker_finds_what_went_wrong(
    rows: list[tuple[int, str, float]], problem: str
) -> None:
    with pytest.raises(AssertionError, match=problem):
        check_delivery("node-x", SPOOLED, table(*rows))
