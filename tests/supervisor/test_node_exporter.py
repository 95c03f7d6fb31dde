"""One real agent that nobody here wrote: Debian's prometheus-node-exporter.

Supervised with its HTTP check on a free port, killed, and seen healthy again. ``.ci/run``
installs the package and sets ``HOSTVISOR_REQUIRE_NODE_EXPORTER``, so CI fails instead of
skipping when it is missing.
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest
import trio

from supervisor import (
    AgentSpec,
    AgentState,
    AgentType,
    HealthCheckSpec,
    LogSpec,
    Supervisor,
    open_supervisor,
)
from supervisor._health import Check, CheckState
from tests.supervisor.helpers import alive, free_port

BINARY = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
#: Real start-up and probing of a Go binary on a shared machine: a guard, not a timing.
GUARD_S = 60.0

if BINARY is None and not os.environ.get("HOSTVISOR_REQUIRE_NODE_EXPORTER"):
    pytest.skip(
        "prometheus-node-exporter is not installed (apt-get install prometheus-node-exporter)",
        allow_module_level=True,
    )


async def _http_healthy(sup: Supervisor) -> None:
    """Wait until the current process has passed its HTTP check."""
    with trio.fail_after(GUARD_S):
        while True:
            health = sup.status("node-exporter").health
            if health is not None and health.checks[Check.HTTP].state is CheckState.HEALTHY:
                return
            await trio.sleep(0.05)


async def test_node_exporter_is_supervised_probed_and_recovered(tmp_path: Path) -> None:
    """Healthy on /metrics; after SIGKILL a new process runs and is healthy again."""
    assert BINARY is not None, "HOSTVISOR_REQUIRE_NODE_EXPORTER is set: install the package"
    port = free_port()
    spec = AgentSpec(
        id="node-exporter",
        type=AgentType.NODE_EXPORTER,
        binary_path=BINARY,
        args=(f"--web.listen-address=127.0.0.1:{port}", "--path.procfs=/proc"),
        work_dir=str(tmp_path / "agents" / "node-exporter"),
        start_seconds_s=0.5,
        stop_timeout_s=10.0,
        log=LogSpec(file=str(tmp_path / "logs" / "node-exporter.log")),
        health_check=HealthCheckSpec(
            interval_s=0.5,
            http_endpoint=f"http://127.0.0.1:{port}/metrics",
            tcp_endpoint=f"127.0.0.1:{port}",
            timeout_s=5.0,
            failures=3,
            heartbeat_timeout_s=0,
        ),
    )
    async with open_supervisor([spec], work_dir=str(tmp_path)) as sup:
        await _http_healthy(sup)
        first = sup.status("node-exporter")
        assert first.healthy is True and first.health is not None
        assert first.health.checks[Check.TCP].state in (CheckState.HEALTHY, CheckState.UNKNOWN)
        samples = sup.metrics("node-exporter", 60)
        assert samples and samples[-1].rss_bytes > 1 << 20  # a Go binary: megabytes

        os.kill(first.pid, signal.SIGKILL)
        with trio.fail_after(GUARD_S):
            while sup.status("node-exporter").pid in (0, first.pid):
                await trio.sleep(0.05)
        await sup.wait_state("node-exporter", AgentState.RUNNING)
        await _http_healthy(sup)
        second = sup.status("node-exporter")
        assert second.pid != first.pid and second.restart_count == 1
        assert second.last_exit is not None and second.last_exit.signal == signal.SIGKILL
        assert second.healthy is True
        assert not alive(first.pid)
    assert not alive(second.pid)
