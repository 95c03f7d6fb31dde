"""The whole system at work: a Manager and three daemons, real agents, the REST API.

One fleet serves the module (``fleet_options``): every node runs ``ticker``, ``sleeper``
and ``app`` (an updatable shell agent of version 1.0.0 with an ``update:`` block trusting
the test keyring); node 1 also runs Debian's prometheus-node-exporter. Every wait is on a
condition with a safety timeout, never on a duration.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Iterator
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.e2e.harness import NODE_EXPORTER, ArtifactServer, Fleet, shell_agent
from tests.supervisor.helpers import alive
from tests.updater.updater_testlib import FAR, PLATFORM, Signer, _record, agent_script
from updater import _crypto
from updater._envelope import Keyring, encode_keyring

APP = "app"
"""The updatable agent on every node (its component has its name, the default)."""
TOOL, TOOLKIT = "tool", "toolkit"
"""An updatable agent on node 3 only, and its component (named apart from it)."""


def script_agent(agent_id: str) -> dict[str, Any]:
    """An agent running ``bin/AGENT_ID`` of its node's directory (the updater replaces it)."""
    return shell_agent(agent_id, "", binary_path=f"bin/{agent_id}", args=[], start_seconds="0.2s")


UPDATE_BLOCK: dict[str, Any] = {  # what every node's update: block has
    "download_dir": "upd/downloads",  # relative: to the node's directory
    "backup_dir": "upd/backups",
    "state_dir": "upd/state",
    "keyring_file": "keyring.json",
    "platform": PLATFORM,
    "verify_timeout": "1s",
    "max_backups": 2,
    "limits": {"allow_http_hosts": ["127.0.0.1"], "disk_reserve_bytes": 0},
}


def update_block(index: int) -> dict[str, Any]:
    """Node ``index``'s ``update:`` block: ``app`` everywhere, ``tool`` on node 3."""
    agents: dict[str, Any] = {APP: {"agent": APP}}
    if index == 3:
        agents[TOOLKIT] = {"agent": TOOL}
    return {**UPDATE_BLOCK, "agents": agents}


@pytest.fixture(scope="module")
def signer() -> Signer:
    """``release`` signs ``app`` and ``toolkit`` and is trusted; ``stranger`` is not."""
    pems = {name: _crypto.generate_private_key("ed25519") for name in ("release", "stranger")}
    records = {name: _record(name, "ed25519", pem, {APP, TOOLKIT}) for name, pem in pems.items()}
    return Signer(pems, records, Keyring.of([records["release"]], expires=FAR))


@pytest.fixture(scope="module")
def artifacts() -> Iterator[ArtifactServer]:
    with ArtifactServer() as server:
        yield server


@pytest.fixture(scope="module")
def fleet_options(signer: Signer) -> dict[str, Any]:
    def prepare(index: int, directory: Path) -> None:
        (directory / "bin").mkdir()
        for name in (APP, TOOL):
            binary = directory / "bin" / name
            binary.write_bytes(agent_script("1.0.0"))
            binary.chmod(0o755)
        (directory / "keyring.json").write_bytes(encode_keyring(signer.keyring))

    def agents(index: int) -> list[dict[str, Any]]:
        return [script_agent(APP)] + ([script_agent(TOOL)] if index == 3 else [])

    return {
        "prepare": prepare,
        "extra_agents": agents,
        "daemon_extra": lambda index: {"update": update_block(index)},
    }


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def expected_agents(node_id: str) -> set[str]:
    names = {"ticker", "sleeper", APP}
    if node_id == "node-1" and NODE_EXPORTER is not None:
        names.add("node-exporter")
    if node_id == "node-3":
        names.add(TOOL)
    return names


def running_agents(fleet: Fleet, node_id: str) -> dict[str, dict[str, Any]]:
    """The node's agents as the API shows them, by id."""
    return {a["agent_id"]: a for a in fleet.api().agents(node_id)}


def shown_status(fleet: Fleet, node_id: str, agent_id: str) -> tuple[str, int] | None:
    """The agent's status and pid as the API shows them (None: not listed)."""
    agent = fleet.api().agent(node_id, agent_id)
    return None if agent is None else (agent["status"], agent["pid"])


def agents_match(fleet: Fleet, node_id: str) -> bool:
    """Whether the API shows every agent of the node running with its real pid."""
    agents = running_agents(fleet, node_id)
    pids = fleet.daemon(node_id).pids()
    return set(agents) == expected_agents(node_id) and all(
        a["status"] == "running" and a["pid"] == pids.get(name) and a["pid"] > 0
        for name, a in agents.items()
    )


# --------------------------------------------------------------------------- reporting


def test_every_node_registers_heartbeats_and_reports(fleet: Fleet) -> None:
    """Each node is listed with its own identity, its heartbeats move last_seen_at, and
    fresh metrics of the four collectors arrive for it, with plausible values."""
    api = fleet.api()
    nodes = {n["node_id"]: n for n in api.nodes()}
    assert set(nodes) == set(fleet.node_ids)
    for index, node_id in enumerate(fleet.node_ids, start=1):
        node = nodes[node_id]
        assert node["status"] == "online"
        assert (node["hostname"], node["ip"]) == (socket.gethostname(), "127.0.0.1")
        assert node["labels"] == {"fleet": "e2e", "index": str(index)}
        assert node["daemon_version"]
        assert node["grpc_port"] == fleet.daemon(node_id).port

    started = time.time()
    seen = {node_id: parse_time(nodes[node_id]["last_seen_at"]) for node_id in fleet.node_ids}
    fleet.wait(
        lambda: all(
            parse_time(api.node(node_id)["last_seen_at"]) > seen[node_id]
            for node_id in fleet.node_ids
        ),
        "a new heartbeat from every node",
    )

    def fresh(node_id: str) -> dict[str, Any] | None:
        latest = api.latest_metrics(node_id)
        rows = [latest[kind] for kind in ("cpu", "memory", "disk", "network")]
        # Timestamps are whole seconds: a row of the current second is fresh.
        if all(row is not None and parse_time(row["timestamp"]) >= int(started) for row in rows):
            return latest
        return None

    fleet.wait(lambda: all(fresh(n) for n in fleet.node_ids), "fresh metrics from every node")
    overview = api.get("/metrics/cluster/overview")
    assert overview["aggregate"]["node_counts"] == {"total": 3, "online": 3, "offline": 0}
    assert {n["node_id"] for n in overview["nodes"]} == set(fleet.node_ids)
    memory_total = psutil.virtual_memory().total
    for node_id in fleet.node_ids:
        latest = fresh(node_id)
        assert latest is not None
        for kind, row in latest.items():
            assert (row["node_id"], row["type"]) == (node_id, kind)
        cpu, memory = latest["cpu"]["values"], latest["memory"]["values"]
        disk, network = latest["disk"]["values"], latest["network"]["values"]
        assert 0 <= cpu["usage_percent"] <= 100
        assert cpu["cores"] == psutil.cpu_count()
        assert memory["total_bytes"] == memory_total
        assert 0 < memory["used_bytes"] < memory_total
        assert 0 < disk["used_bytes"] <= disk["total_bytes"]
        assert 0 <= disk["usage_percent"] <= 100
        assert network["rx_bytes"] >= 0 and network["tx_bytes"] >= 0
        assert network["interval_seconds"] > 0


def test_agent_states_and_real_pids(fleet: Fleet) -> None:
    """Every node's agents show up running with the pids of the real processes; the
    node-exporter's pid is the Go binary serving its port."""
    for node_id in fleet.node_ids:
        fleet.wait(partial(agents_match, fleet, node_id), f"{node_id}'s agents")
        for agent in running_agents(fleet, node_id).values():
            assert alive(agent["pid"]), agent
            assert agent["node_id"] == node_id
    if NODE_EXPORTER is None:
        pytest.skip("prometheus-node-exporter is not installed: its part is skipped")
    exporter = running_agents(fleet, "node-1")["node-exporter"]
    process = psutil.Process(exporter["pid"])
    assert os.path.realpath(process.exe()) == os.path.realpath(NODE_EXPORTER)
    assert exporter["type"] == "node_exporter"
    port = fleet.node_exporter_port
    fleet.wait(partial(exposes_metrics, port), "node-exporter's /metrics")
    listening = {c.laddr.port for c in process.net_connections("tcp") if c.laddr}
    assert port in listening  # the page came from this process

    # Its resource samples, asked of the daemon through the Manager: a Go binary's RSS.
    def samples() -> list[dict[str, Any]]:
        path = "/nodes/node-1/agents/node-exporter/metrics"
        points: list[dict[str, Any]] = fleet.api().get(path, duration=600)["data_points"]
        return points

    fleet.wait(lambda: bool(samples()), "node-exporter's resource samples")
    assert all(point["memory_rss"] > 1 << 20 for point in samples())


def exposes_metrics(port: int | None) -> bool:
    """Whether ``127.0.0.1:port/metrics`` answers with node-exporter's metrics."""
    try:
        page = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30)
    except httpx.TransportError:
        return False
    return page.status_code == 200 and "node_cpu_seconds_total" in page.text


def test_changes_on_the_host_reach_the_api(fleet: Fleet) -> None:
    """What happens on a node without the Manager reaches the API through the daemon's
    state syncs: a SIGKILLed agent restarted by its daemon shows its new pid; an agent
    stopped with the local command line shows stopped, and started again, running."""
    node_id, daemon = "node-3", fleet.daemon("node-3")
    fleet.wait(partial(agents_match, fleet, node_id), "node-3's agents")
    killed = daemon.agent_pid("sleeper")
    assert killed is not None
    os.kill(killed, signal.SIGKILL)
    fleet.wait(
        lambda: agents_match(fleet, node_id) and daemon.agent_pid("sleeper") != killed,
        "the restarted sleeper's pid in the API",
    )
    assert alive(running_agents(fleet, node_id)["sleeper"]["pid"])

    done = daemon.ctl("stop", "sleeper")
    assert done.returncode == 0, done.stderr
    fleet.wait(lambda: shown_status(fleet, node_id, "sleeper") == ("stopped", 0), "stopped")
    done = daemon.ctl("start", "sleeper")
    assert done.returncode == 0, done.stderr
    fleet.wait(partial(agents_match, fleet, node_id), "the sleeper running again")


# --------------------------------------------------------------------------- operations


def test_operations_reach_the_agent_process(fleet: Fleet) -> None:
    """stop, start and restart through the REST API stop, start and restart the real
    process; the API shows each state; the ticker's lines come back through the API."""
    api, node_id, daemon = fleet.api(), "node-2", fleet.daemon("node-2")
    fleet.wait(lambda: agents_match(fleet, node_id), "node-2's agents")
    first = running_agents(fleet, node_id)["ticker"]["pid"]

    api.operate(node_id, "ticker", "stop")
    fleet.wait(lambda: not alive(first), "the ticker's process to end")
    fleet.wait(lambda: shown_status(fleet, node_id, "ticker") == ("stopped", 0), "stopped")
    fleet.wait(lambda: daemon.agent_pid("ticker") is None, "state.json to forget the pid")
    assert alive(running_agents(fleet, node_id)["sleeper"]["pid"])  # only the ticker

    api.operate(node_id, "ticker", "start")
    fleet.wait(lambda: agents_match(fleet, node_id), "the ticker to run again")
    second = running_agents(fleet, node_id)["ticker"]["pid"]
    assert second != first and alive(second)

    api.operate(node_id, "ticker", "restart")
    fleet.wait(
        lambda: (
            agents_match(fleet, node_id)
            and running_agents(fleet, node_id)["ticker"]["pid"] not in (first, second)
        ),
        "the ticker to run a third process",
    )
    third = running_agents(fleet, node_id)["ticker"]["pid"]
    assert alive(third) and not alive(second)

    # Each start begins at "tick 1": the lines of the second and third processes are there.
    fleet.wait(
        lambda: api.logs(node_id, "ticker", 1000).count("tick 1") >= 2,
        "the ticker's lines through the API",
    )
    lines = api.logs(node_id, "ticker", 1000)
    on_disk = daemon.agent_log("ticker").splitlines()
    assert lines and all(line.startswith("tick ") for line in lines), lines
    assert contiguous(lines, on_disk), (lines[-5:], on_disk[-5:])


def contiguous(part: list[str], whole: list[str]) -> bool:
    """Whether ``part`` is a run of consecutive items of ``whole``."""
    return any(whole[i : i + len(part)] == part for i in range(len(whole) - len(part) + 1))


# --------------------------------------------------------------------------- updates


def signed_update(
    signer: Signer,
    artifacts: ArtifactServer,
    data: bytes,
    counter: int,
    key: str = "release",
    component: str = APP,
) -> dict[str, str]:
    """Serve ``data``; the push body's fields for it, signed with ``key``."""
    name = f"{component}-{counter}"
    artifacts.files[name] = data
    statement = signer.statement(
        data, component=component, counter=counter, version=f"1.{counter}.0"
    )
    return {
        "component": component,
        "version": statement.version,
        "download_url": artifacts.url(name),
        "hash": statement.sha256,
        "signature": signer.envelope(statement, key).decode(),
    }


def app_state(fleet: Fleet, node_id: str, agent_id: str = APP) -> tuple[str, int]:
    """The agent's version and pid as the API shows them."""
    agent = fleet.api().agent(node_id, agent_id)
    assert agent is not None
    return agent["version"], agent["pid"]


def shows_version(fleet: Fleet, node_id: str, version: str) -> bool:
    """Whether the API shows ``app`` of ``version`` and every agent with its real pid."""
    return app_state(fleet, node_id)[0] == version and agents_match(fleet, node_id)


def started_as(fleet: Fleet, node_id: str, version: str) -> bool:
    """Whether ``app``'s log through the API says its latest start ran ``version`` (the
    script prints its version as it starts)."""
    starts = [line for line in fleet.api().logs(node_id, APP, 1000) if line.endswith(" starting")]
    return bool(starts) and starts[-1] == f"agent {version} starting"


def finished_job(fleet: Fleet, number: int) -> dict[str, Any]:
    """The update job once no target is pending, accepted or running."""
    found: list[dict[str, Any]] = []

    def done() -> bool:
        job = fleet.api().update_job(number)
        found[:] = [job]
        return all(t["state"] not in ("pending", "accepted", "running") for t in job["targets"])

    fleet.wait(done, f"update {number} to finish")
    return found[0]


def test_signed_update_reaches_the_chosen_nodes(
    fleet: Fleet, signer: Signer, artifacts: ArtifactServer
) -> None:
    """A signed update pushed through the API is installed on node-1 and node-2: the API
    shows the new version and the new binary runs; node-3 keeps its process. Updates
    signed by an unknown key, or with a signature of other bytes, are refused with the
    reason, and the running versions stay."""
    api = fleet.api("operator")
    for node_id in fleet.node_ids:
        fleet.wait(partial(agents_match, fleet, node_id), f"{node_id}'s agents")
    before = {node_id: app_state(fleet, node_id) for node_id in fleet.node_ids}
    chosen, other = ["node-1", "node-2"], "node-3"

    fields = signed_update(signer, artifacts, agent_script("1.21.0"), counter=21)
    pushed = time.time()
    job = api.push_update(node_ids=chosen, **fields)
    assert {t["node_id"]: t["state"] for t in job["targets"]} == dict.fromkeys(
        chosen, "accepted"
    ), job
    job = finished_job(fleet, job["id"])
    for target in job["targets"]:
        assert (target["state"], target["message"]) == ("succeeded", "installed 1.21.0"), job

    for node_id in chosen:
        fleet.wait(partial(shows_version, fleet, node_id, "1.21.0"), f"{node_id}: app 1.21.0")
        pid = app_state(fleet, node_id)[1]
        assert pid != before[node_id][1] and not alive(before[node_id][1])
        assert alive(pid) and psutil.Process(pid).create_time() >= pushed - 1
        binary = fleet.node_dir(fleet.node_ids.index(node_id) + 1) / "bin" / APP
        assert b"agent 1.21.0 starting" in binary.read_bytes()
        fleet.wait(partial(started_as, fleet, node_id, "1.21.0"), f"{node_id}'s new app")
    assert app_state(fleet, other) == before[other]
    assert alive(before[other][1])
    assert started_as(fleet, other, "1.0.0")
    assert b"agent 1.0.0 starting" in (fleet.node_dir(3) / "bin" / "app").read_bytes()

    # Signed by a key the nodes do not trust; signatures of another statement.
    stranger = signed_update(signer, artifacts, agent_script("1.22.0"), 22, key="stranger")
    tampered = signed_update(signer, artifacts, agent_script("1.23.0"), 23)
    envelope = json.loads(tampered["signature"])
    foreign = signer.statement(b"other", component=APP, counter=24, version="1.24.0")
    envelope["signatures"] = json.loads(signer.envelope(foreign, "release"))["signatures"]
    tampered["signature"] = json.dumps(envelope)
    refusals = {
        "untrusted_key: no signature by a trusted key": stranger,
        "bad_signature: signature does not verify with the trusted key": tampered,
    }
    for why, fields in refusals.items():
        running = {node_id: app_state(fleet, node_id) for node_id in fleet.node_ids}
        job = api.push_update(node_ids=fleet.node_ids, **fields)
        for target in job["targets"]:
            assert target["state"] == "refused", job
            assert target["message"].startswith(
                f"INVALID_ARGUMENT: UpdateRequest.signature: {why}"
            ), job
        assert {node_id: app_state(fleet, node_id) for node_id in fleet.node_ids} == running
    assert all(alive(pid) for _, pid in running.values())
    refused = {fields["download_url"].rpartition("/")[2] for fields in refusals.values()}
    assert not refused & set(artifacts.hits), "a refused update was downloaded"


def test_installed_version_of_a_component_named_apart(
    fleet: Fleet, signer: Signer, artifacts: ArtifactServer
) -> None:
    """``tool`` (component ``toolkit``) updated on node 3: once a state sync has come after
    the install, the API shows the new version."""
    api = fleet.api("operator")
    fleet.wait(lambda: agents_match(fleet, "node-3"), "node-3's agents")
    fields = signed_update(signer, artifacts, agent_script("1.31.0"), 31, component=TOOLKIT)
    job = finished_job(fleet, api.push_update(node_ids=["node-3"], **fields)["id"])
    assert job["targets"][0]["state"] == "succeeded", job
    done = time.time()
    fleet.wait(lambda: agents_match(fleet, "node-3"), "node-3's agents")

    def synced_after() -> bool:
        agent = api.agent("node-3", TOOL)
        return agent is not None and parse_time(agent["last_sync_time"]) > done + 1

    fleet.wait(synced_after, "a state sync after the install")
    assert app_state(fleet, "node-3", TOOL)[0] == "1.31.0"
