"""Example collector plugins, as a third party would write them against `collectors`."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping

import trio

from collectors import Metrics


class LoadAverageCollector:
    """The 1, 5 and 15 minute load averages, read off the event loop."""

    name = "loadavg"

    def __init__(self, *, interval_s: float, options: Mapping[str, object]) -> None:
        self.interval_s = interval_s
        self.scale = float(options.get("scale", 1.0))  # type: ignore[arg-type]

    async def collect(self) -> Metrics:
        one, five, fifteen = await trio.to_thread.run_sync(os.getloadavg)
        return Metrics(
            name=self.name,
            timestamp=time.time(),
            values={
                "load1": one * self.scale,
                "load5": five * self.scale,
                "load15": fifteen * self.scale,
            },
        )


class FlakyCollector:
    """Raises on every other call."""

    name = "flaky"

    def __init__(self, *, interval_s: float, options: Mapping[str, object]) -> None:
        self.interval_s = interval_s
        self.calls = 0

    async def collect(self) -> Metrics:
        self.calls += 1
        if self.calls % 2:
            raise ConnectionError(f"sensor unreachable (call {self.calls})")
        return Metrics(name=self.name, timestamp=time.time(), values={"calls": self.calls})


def picky_factory(*, interval_s: float, options: Mapping[str, object]) -> LoadAverageCollector:
    """Refuses to build without a 'token' option."""
    if "token" not in options:
        raise ValueError("option 'token' is required")
    raise NotImplementedError


def misnamed_factory(*, interval_s: float, options: Mapping[str, object]) -> object:
    """Returns a collector under another name than its entry point's."""
    return LoadAverageCollector(interval_s=interval_s, options=options)


class StubbornCollector(LoadAverageCollector):
    """Ignores the configured interval."""

    name = "stubborn"

    def __init__(self, *, interval_s: float, options: Mapping[str, object]) -> None:
        super().__init__(interval_s=1.0, options=options)
