"""GET /metrics: the fleet in Prometheus' text format, through a real server, parsed back
with prometheus_client's own parser; and the collector's pure part."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.transport.manager.fleet_helpers import fleet, register
from transport import AgentStateRecord, AgentStatus
from transport.manager._http._prom import FleetCollector, FleetReading, fleet_families


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def test_metrics_endpoint(tmp_path: Path, sock_dir: Path) -> None:
    """Nodes by status, the ingest's figures as the callable gives them at each scrape, the
    pool's counts; no credentials needed; not enveloped."""
    async with fleet(tmp_path, sock_dir) as w:
        for name in ("a", "b", "c"):
            await w.db(register, w.store, name)
        await w.db(w.store.mark_offline, cutoff=time.time() + 1, now=time.time())
        await w.db(register, w.store, "a")
        states = [
            AgentStateRecord("x", status=AgentStatus.RUNNING),
            AgentStateRecord("y", status=AgentStatus.RUNNING),
            AgentStateRecord("z", status=AgentStatus.FAILED),
        ]
        await w.db(w.store.sync_agent_states, "a", states, now=time.time())
        await w.db(w.store.sync_agent_states, "b", states[:1], now=time.time())
        await w.db(w.store.sync_agent_states, "b", [], now=time.time())  # x is gone
        w.ingest.update(reports_total=41.0, queue_depth=3.0)

        response = await w.client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        got = _samples(response.text)
        assert got[("hostvisor_manager_nodes", (("status", "online"),))] == 1.0
        assert got[("hostvisor_manager_nodes", (("status", "offline"),))] == 2.0
        assert got[("hostvisor_manager_agents", (("status", "running"),))] == 2.0
        assert got[("hostvisor_manager_agents", (("status", "failed"),))] == 1.0
        assert got[("hostvisor_manager_agents", (("status", "gone"),))] == 1.0
        assert got[("hostvisor_manager_ingest_reports_total", ())] == 41.0
        assert got[("hostvisor_manager_ingest_queue_depth", ())] == 3.0
        assert got[("hostvisor_manager_pool_open_channels", ())] == 0.0
        assert ("hostvisor_manager_pool_calls_total", ()) in got
        assert got[("hostvisor_manager_scrape_errors", (("source", "nodes"),))] == 0.0

        w.ingest["reports_total"] = 42.0
        again = _samples((await w.client.get("/metrics")).text)
        assert again[("hostvisor_manager_ingest_reports_total", ())] == 42.0


def test_a_failing_source_costs_its_own_families_only() -> None:
    """A reader that raises is reported in scrape_errors; the others still show."""

    def broken() -> Mapping[str, float]:
        raise RuntimeError("database down")

    collector = FleetCollector(broken, ingest=lambda: {"calls_total": 5.0})
    reading = collector.read()
    assert reading.errors == ("nodes",) and reading.nodes is None
    names = {family.name for family in collector.collect()}
    assert "hostvisor_manager_nodes" not in names
    assert "hostvisor_manager_ingest_calls" in names  # a counter's family name drops _total
    errors = next(f for f in fleet_families(reading) if f.name.endswith("scrape_errors"))
    assert {s.labels["source"]: s.value for s in errors.samples} == {
        "nodes": 1.0,
        "agents": 0.0,
        "ingest": 0.0,
        "pool": 0.0,
    }


def test_families_are_named_safely_and_once() -> None:
    """Odd figure names are made valid metric names; two that clean to one name show once;
    `total` is not a status."""
    reading = FleetReading(
        nodes={"total": 3, "online": 2, "offline": 1},
        agents={"running": 4, "gone": 1},
        ingest={"batch size!": 2.0, "batch_size": 3.0},
        pool=None,
    )
    families = fleet_families(reading)
    names = [family.name for family in families]
    assert names.count("hostvisor_manager_ingest_batch_size") == 1
    nodes = next(f for f in families if f.name == "hostvisor_manager_nodes")
    assert sorted(s.labels["status"] for s in nodes.samples) == ["offline", "online"]
    agents = next(f for f in families if f.name == "hostvisor_manager_agents")
    assert {s.labels["status"]: s.value for s in agents.samples} == {"gone": 1.0, "running": 4.0}
