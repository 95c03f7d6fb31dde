"""Pushing updates through the REST API: to a real `hostvisor run` daemon with a signed
artifact it installs (the result followed through GetUpdateResult), to a daemon without
updates (refused), to one that cannot be reached; validation, roles, paging, audit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio
import yaml

from tests.supervisor.helpers import free_port, shell_agent, wait_until
from tests.transport.daemon.update_world import (  # noqa: F401 (fixtures)
    World as UpdateWorld,
    http_server,
    signer,
    world,
)
from tests.transport.manager.fleet_helpers import fleet, register
from tests.transport.manager.http_helpers import envelope, error_of, is_rfc3339
from tests.updater.updater_testlib import agent_script
from transport.manager._events import EventHub
from transport.manager._http._envelope import ErrorCode
from transport.manager._model import Role

JOB_KEYS = {"id", "created_at", "actor", "component", "version", "download_url", "hash", "targets"}
TARGET_KEYS = {"node_id", "state", "update_id", "message", "updated_at"}


def push_body(node_ids: list[str], **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "node_ids": node_ids,
        "component": "agent",
        "version": "1.2.0",
        "download_url": "http://127.0.0.1:1/f/x",
        "hash": "ab" * 32,
        "signature": "sig",
    }
    return {**body, **changes}


async def test_push_to_a_real_daemon_and_follow_the_result(
    world: UpdateWorld,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
    sock_dir: Path,
) -> None:
    """A signed update pushed through the API is accepted by the daemon (its update id
    recorded); GET /updates/:id asks the daemon until it reports `succeeded`, and the agent
    runs the new version."""
    port = free_port()
    document = yaml.safe_load(world.config.read_text())
    document["daemon"].update(id="n1", grpc_port=port)
    world.config.write_text(yaml.safe_dump(document))
    await world.start_serving()
    await wait_until(lambda: f"gRPC: serving on 127.0.0.1:{port}" in world.log())
    request = json.loads(world.request(agent_script("1.11.0")).read_text())

    (tmp_path / "m").mkdir()
    async with fleet(tmp_path / "m", sock_dir) as w:
        await w.db(register, w.store, "n1", grpc_port=port)
        body = {
            "node_ids": ["n1"],
            "component": "agent",
            "version": request["version"],
            "download_url": request["download_url"],
            "hash": request["hash"],
            "signature": request["envelope"],
        }
        response = await w.client.post("/api/v1/updates", json=body, headers=w.auth(Role.OPERATOR))
        job = envelope(response, status=201, message="created")["update"]
        assert set(job) == JOB_KEYS
        assert (job["actor"], job["component"], job["version"]) == ("operator", "agent", "1.11.0")
        (target,) = job["targets"]
        assert set(target) == TARGET_KEYS
        assert (target["node_id"], target["state"]) == ("n1", "accepted")
        assert target["update_id"].startswith(f"hvm{job['id']}-")

        url = f"/api/v1/updates/{job['id']}"
        with trio.fail_after(90):
            while True:
                got = envelope(await w.client.get(url, headers=w.auth(Role.VIEWER)))["update"]
                (target,) = got["targets"]
                if target["state"] not in ("accepted", "pending", "running"):
                    break
                await trio.sleep(0.1)  # the daemon installs on its own schedule
        assert target["state"] == "succeeded", target
        assert "1.11.0" in target["message"] and is_rfc3339(target["updated_at"])
        assert await world.running_version() == "1.11.0"
        actions = await w.audit_actions()
        assert actions == [("operator", "update.push", f"update:{job['id']}", "ok")]


async def test_refused_and_unreachable_targets(tmp_path: Path, sock_dir: Path) -> None:
    """Each node's answer is recorded on its own: a daemon without updates refuses
    (FAILED_PRECONDITION), a daemon that cannot be reached is `unreachable`; neither stops
    the other; GET /updates/:id leaves finished targets alone."""
    agents = [shell_agent("a1", "exec sleep 1000", tmp_path)]
    hub = EventHub()
    async with fleet(tmp_path, sock_dir, agents=agents, app_options={"events": hub}) as w:
        await w.db(register, w.store, "far", grpc_port=free_port())
        op = w.auth(Role.OPERATOR)
        with hub.subscribe() as events:
            response = await w.client.post(
                "/api/v1/updates", json=push_body(["n1", "far", "n1"]), headers=op
            )
            job = envelope(response, status=201, message="created")["update"]
            # Each target's result reaches the console's open pages as an `update` event.
            for _ in range(2):
                event = await events.receive(timeout_s=10)
                assert event is not None and (event.name, event.data) == (
                    "update",
                    {"id": job["id"]},
                )
        states = {t["node_id"]: (t["state"], t["update_id"]) for t in job["targets"]}
        assert states == {"far": ("unreachable", ""), "n1": ("refused", "")}
        messages = {t["node_id"]: t["message"] for t in job["targets"]}
        assert messages["n1"].startswith("FAILED_PRECONDITION: updates are not configured")
        assert "far" in messages["far"]
        again = envelope(await w.client.get(f"/api/v1/updates/{job['id']}", headers=op))
        assert again["update"] == job

        (entry,) = (await w.db(w.store.list_audit, page=1, page_size=10)).items
        assert (entry.action, entry.outcome) == ("update.push", "ok")
        assert dict(entry.detail)["states"] == {"refused": 1, "unreachable": 1}


async def test_push_validation_roles_and_listing(tmp_path: Path, sock_dir: Path) -> None:
    """Missing or ill-typed fields are 1001 naming the field; unknown nodes 2001 before
    anything is pushed; viewers may read but not push; the list pages with both `pages`
    and `total_pages`; an unknown job is 1004."""
    async with fleet(tmp_path, sock_dir) as w:
        await w.db(register, w.store, "a", grpc_port=free_port())
        op, viewer = w.auth(Role.OPERATOR), w.auth(Role.VIEWER)
        cases = {
            "node_ids": push_body([]),
            "node_ids[0]": push_body([""]),
            "component": push_body(["a"], component=None),
            "version": push_body(["a"], version=7),
            "download_url": push_body(["a"], download_url=""),
            "signature": push_body(["a"], signature=["x"]),
        }
        for name, body in cases.items():
            message = error_of(await w.client.post("/api/v1/updates", json=body, headers=op), 1001)
            assert message.startswith(f"{name}:"), message
        unknown = await w.client.post("/api/v1/updates", json=push_body(["a", "zz"]), headers=op)
        assert "'zz'" in error_of(unknown, ErrorCode.NODE_NOT_FOUND)
        denied = await w.client.post("/api/v1/updates", json=push_body(["a"]), headers=viewer)
        error_of(denied, ErrorCode.FORBIDDEN)
        empty = envelope(await w.client.get("/api/v1/updates", headers=viewer))
        assert empty["list"] == [] and empty["page_info"]["total"] == 0

        for _ in range(3):
            response = await w.client.post("/api/v1/updates", json=push_body(["a"]), headers=op)
            envelope(response, status=201, message="created")
        page = envelope(await w.client.get("/api/v1/updates?page_size=2", headers=viewer))
        assert page["page_info"] == {
            "page": 1,
            "page_size": 2,
            "total": 3,
            "pages": 2,
            "total_pages": 2,
        }
        assert [job["targets"][0]["state"] for job in page["list"]] == ["unreachable"] * 2
        error_of(await w.client.get("/api/v1/updates/999", headers=viewer), ErrorCode.NOT_FOUND)
        error_of(await w.client.get("/api/v1/updates/x", headers=viewer), 1001)
        outcomes = [entry[3] for entry in await w.audit_actions()]
        assert outcomes == ["error:1001"] * 6 + ["error:2001", "denied"] + ["ok"] * 3
