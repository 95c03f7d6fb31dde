"""``GET /metrics``: the fleet in Prometheus' text format.

Theory of operation
-------------------
Nothing is counted twice: the figures live where they are kept (the nodes and agents in the
database, the ingest counters in the gRPC ingest, the channel counts in the daemon pool),
and a custom collector (:class:`FleetCollector`) reads them at each scrape through
callables. :func:`fleet_families` turns one reading into metric families; it is pure, so
what a scrape shows is tested without a server.

The readings are synchronous (the store's queries block), so a scrape renders the whole
exposition in a worker thread. A source that fails costs its own families only: the scrape
still answers, with ``hostvisor_manager_scrape_errors`` telling which source failed.

The endpoint needs no credentials, as Prometheus exporters usually do: it tells counts only
(no node names, no addresses).

Names: ``hostvisor_manager_nodes{status}``, ``hostvisor_manager_agents{status}``,
``hostvisor_manager_ingest_<key>`` and ``hostvisor_manager_pool_<key>`` (a key ending in
``_total`` is a counter, any other a gauge).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import trio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = ["FleetCollector", "FleetReading", "Reader", "fleet_families", "prometheus_route"]

logger = logging.getLogger("hostvisor.manager.http")

PREFIX = "hostvisor_manager"
Reader = Callable[[], Mapping[str, float]]
"""A source of figures: name -> value (a name ending in ``_total`` is a counter)."""
_BAD = re.compile(r"[^a-zA-Z0-9_]")


@dataclass(frozen=True, slots=True)
class FleetReading:
    """One reading of every source (None: that source failed or is absent).

    Attributes:
        nodes: Node counts by status (``online``, ``offline``; ``total`` is ignored).
        agents: Agent counts by status.
        ingest: The gRPC ingest's figures.
        pool: The daemon pool's figures.
        errors: The sources that failed.
    """

    nodes: Mapping[str, float] | None
    agents: Mapping[str, float] | None
    ingest: Mapping[str, float] | None
    pool: Mapping[str, float] | None
    errors: tuple[str, ...] = ()


def _name(text: str) -> str:
    cleaned = _BAD.sub("_", text.strip()).strip("_").lower()
    return cleaned or "unnamed"


def _by_status(name: str, doc: str, counts: Mapping[str, float]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=["status"])
    for status, count in sorted(counts.items()):
        if status != "total":
            family.add_metric([status], float(count))
    return family


def _figures(group: str, figures: Mapping[str, float]) -> Iterable[Metric]:
    seen: set[str] = set()
    for key, value in sorted(figures.items()):
        name = _name(key)
        counter = name.endswith("_total")
        base = f"{PREFIX}_{group}_{name.removesuffix('_total') if counter else name}"
        if base in seen:
            continue
        seen.add(base)
        doc = f"{group} figure {key!r}"
        if counter:
            yield CounterMetricFamily(base, doc, value=float(value))
        else:
            yield GaugeMetricFamily(base, doc, value=float(value))


def fleet_families(reading: FleetReading) -> list[Metric]:
    """The metric families of one reading.

    Args:
        reading: What the sources said.

    Returns:
        The families, in a stable order; a failed or absent source has none.
    """
    families: list[Metric] = []
    if reading.nodes is not None:
        families.append(_by_status("nodes", "Nodes by status.", reading.nodes))
    if reading.agents is not None:
        families.append(
            _by_status("agents", "Agents by their last reported status.", reading.agents)
        )
    for group, figures in (("ingest", reading.ingest), ("pool", reading.pool)):
        if figures is not None:
            families.extend(_figures(group, figures))
    errors = GaugeMetricFamily(
        f"{PREFIX}_scrape_errors", "1 for a source that failed in this scrape.", labels=["source"]
    )
    for source in ("nodes", "agents", "ingest", "pool"):
        errors.add_metric([source], 1.0 if source in reading.errors else 0.0)
    families.append(errors)
    return families


class FleetCollector:
    """A Prometheus collector that reads its sources at each scrape (blocking: call
    ``collect`` from a worker thread).

    Args:
        nodes: Node counts by status (``Store.node_counts``).
        agents: Agent counts by status, or None.
        ingest: The ingest's figures, or None.
        pool: The pool's figures, or None.
    """

    def __init__(
        self,
        nodes: Reader,
        *,
        agents: Reader | None = None,
        ingest: Reader | None = None,
        pool: Reader | None = None,
    ) -> None:
        self._sources: dict[str, Reader | None] = {
            "nodes": nodes,
            "agents": agents,
            "ingest": ingest,
            "pool": pool,
        }

    def read(self) -> FleetReading:
        """Read every source once (a failing one is logged and left out)."""
        got: dict[str, Mapping[str, float] | None] = {}
        errors: list[str] = []
        for source, reader in self._sources.items():
            got[source] = None
            if reader is None:
                continue
            try:
                got[source] = dict(reader())
            except Exception:
                logger.exception("/metrics: reading %s failed", source)
                errors.append(source)
        return FleetReading(got["nodes"], got["agents"], got["ingest"], got["pool"], tuple(errors))

    def collect(self) -> Iterable[Metric]:
        """The families of a fresh reading."""
        return fleet_families(self.read())

    def describe(self) -> Iterable[Metric]:
        """Nothing: registering the collector must not read the sources."""
        return []


def prometheus_route(collector: FleetCollector, path: str = "/metrics") -> Route:
    """The route serving ``collector`` (in its own registry) as Prometheus text.

    Args:
        collector: The collector.
        path: Where.

    Returns:
        The route.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)

    async def scrape(request: Request) -> Response:
        body = await trio.to_thread.run_sync(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return Route(path, scrape, methods=["GET"])
