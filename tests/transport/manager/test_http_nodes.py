"""The node routes through a real HTTP server on a real SQLite store: the original's shapes
field by field, paging, filters, parameter errors, roles, deleting and its audit."""

from __future__ import annotations

import time
from pathlib import Path

import argon2
from hypothesis import given, strategies as st

from tests.transport.manager.fleet_helpers import fleet, register
from tests.transport.manager.http_helpers import envelope, error_of, is_rfc3339
from transport.manager._http._envelope import ErrorCode
from transport.manager._http._nodes import shown_status
from transport.manager._model import Node, NodeStatus, Role

NODE_KEYS = {
    "id",
    "created_at",
    "updated_at",
    "node_id",
    "hostname",
    "ip",
    "os",
    "arch",
    "labels",
    "daemon_version",
    "agent_version",
    "status",
    "last_seen_at",
    "register_at",
    "grpc_port",
}


async def test_nodes_list_get_and_statistics(tmp_path: Path, sock_dir: Path) -> None:
    """Every field the console reads, with the original's names and types; labels {} when
    a daemon sends none; both `pages` and `total_pages`; the status filter."""
    async with fleet(tmp_path, sock_dir) as w:
        for i in range(25):
            labels = {"zone": "a"} if i == 0 else None
            await w.db(register, w.store, f"node-{i:02}", labels=labels, grpc_port=9191)
        await w.db(w.store.mark_offline, cutoff=time.time() + 1, now=time.time())
        await w.db(register, w.store, "node-00", labels={"zone": "a"})  # online again
        viewer = w.auth(Role.VIEWER)

        data = envelope(await w.client.get("/api/v1/nodes", headers=viewer))
        assert data["page_info"] == {
            "page": 1,
            "page_size": 20,
            "total": 25,
            "pages": 2,
            "total_pages": 2,
        }
        assert len(data["list"]) == 20
        first = data["list"][0]
        assert set(first) == NODE_KEYS
        assert first["node_id"] == "node-00" and isinstance(first["id"], int)
        assert (first["hostname"], first["ip"], first["os"], first["arch"]) == (
            "host-node-00",
            "127.0.0.1",
            "linux",
            "amd64",
        )
        assert (first["daemon_version"], first["agent_version"]) == ("1.2.3", "0.9")
        assert first["labels"] == {"zone": "a"} and first["status"] == "online"
        assert all(is_rfc3339(first[k]) for k in ("created_at", "last_seen_at", "register_at"))
        assert data["list"][1]["labels"] == {} and data["list"][1]["status"] == "offline"
        assert data["list"][1]["grpc_port"] == 9191

        page2 = envelope(await w.client.get("/api/v1/nodes?page=2&page_size=20", headers=viewer))
        assert [n["node_id"] for n in page2["list"]] == [f"node-{i}" for i in range(20, 25)]
        online = envelope(await w.client.get("/api/v1/nodes?status=online", headers=viewer))
        assert [n["node_id"] for n in online["list"]] == ["node-00"]
        assert online["page_info"]["total"] == 1

        stats = envelope(await w.client.get("/api/v1/nodes/statistics", headers=viewer))
        assert stats == {"statistics": {"total": 25, "online": 1, "offline": 24}}

        one = envelope(await w.client.get("/api/v1/nodes/node-00", headers=viewer))
        assert set(one) == {"node"} and one["node"] == first


async def test_node_parameter_errors_and_unknown_node(tmp_path: Path, sock_dir: Path) -> None:
    """Bad parameters are 1001 naming the parameter; an unknown node 2001 (404); no
    credentials 1002."""
    async with fleet(tmp_path, sock_dir) as w:
        viewer = w.auth(Role.VIEWER)
        for query, name in (
            ("status=gone", "status"),
            ("page=0", "page"),
            ("page_size=101", "page_size"),
            ("page_size=x", "page_size"),
        ):
            message = error_of(await w.client.get(f"/api/v1/nodes?{query}", headers=viewer), 1001)
            assert message.startswith(f"{name}:"), message
        message = error_of(await w.client.get("/api/v1/nodes/nope", headers=viewer), 2001)
        assert "nope" in message
        error_of(await w.client.get("/api/v1/nodes"), ErrorCode.UNAUTHORIZED)
        error_of(await w.client.get("/api/v1/nodes/statistics"), ErrorCode.UNAUTHORIZED)


async def test_a_node_silent_too_long_is_shown_offline(tmp_path: Path, sock_dir: Path) -> None:
    """Before the offline job marks it, a node whose last heartbeat is older than the
    threshold is shown offline (list, detail, overview)."""
    async with fleet(tmp_path, sock_dir, offline_after_s=60) as w:
        await w.db(register, w.store, "old", now=time.time() - 3600)
        await w.db(register, w.store, "new")
        viewer = w.auth(Role.VIEWER)
        listed = envelope(await w.client.get("/api/v1/nodes", headers=viewer))["list"]
        assert {n["node_id"]: n["status"] for n in listed} == {"old": "offline", "new": "online"}
        one = envelope(await w.client.get("/api/v1/nodes/old", headers=viewer))["node"]
        assert one["status"] == "offline"
        overview = envelope(await w.client.get("/api/v1/metrics/cluster/overview", headers=viewer))
        assert overview["aggregate"]["node_counts"] == {"total": 2, "online": 1, "offline": 1}


async def test_delete_node_admin_only_both_paths_audited(tmp_path: Path, sock_dir: Path) -> None:
    """DELETE /api/v1/admin/nodes/:id and DELETE /api/v1/nodes/:id (what the console
    sends) delete by numeric id, admins only; every attempt is audited."""
    async with fleet(tmp_path, sock_dir) as w:
        a = await w.db(register, w.store, "a")
        b = await w.db(register, w.store, "b")
        admin = w.auth(Role.ADMIN)

        denied = await w.client.delete(f"/api/v1/nodes/{a.id}", headers=w.auth(Role.OPERATOR))
        error_of(denied, ErrorCode.FORBIDDEN)
        data = envelope(await w.client.delete(f"/api/v1/nodes/{a.id}", headers=admin))
        assert data == {"message": "node a deleted"}
        data = envelope(await w.client.delete(f"/api/v1/admin/nodes/{b.id}", headers=admin))
        assert data == {"message": "node b deleted"}

        error_of(await w.client.delete(f"/api/v1/nodes/{a.id}", headers=admin), 2001)
        message = error_of(await w.client.delete("/api/v1/nodes/x1", headers=admin), 1001)
        assert message.startswith("id:")
        error_of(await w.client.get("/api/v1/nodes/a", headers=admin), 2001)
        assert envelope(await w.client.get("/api/v1/nodes", headers=admin))["list"] == []

        assert await w.audit_actions() == [
            ("operator", "node.delete", f"node:{a.id}", "denied"),
            ("admin", "node.delete", "node:a", "ok"),
            ("admin", "node.delete", "node:b", "ok"),
            ("admin", "node.delete", f"node:{a.id}", "error:2001"),
            ("admin", "node.delete", "node:x1", "error:1001"),
        ]


@given(
    status=st.sampled_from(NodeStatus),
    seen=st.none() | st.floats(0, 2e9),
    now=st.floats(0, 2e9),
    after=st.floats(0, 1e6),
)
def test_shown_status(status: NodeStatus, seen: float | None, now: float, after: float) -> None:
    """Online only when stored online and seen within the threshold."""
    node = Node(1, "n", status=status, last_seen_at=seen)
    shown = shown_status(node, now=now, offline_after_s=after)
    expected = status is NodeStatus.ONLINE and seen is not None and now - seen <= after
    assert (shown is NodeStatus.ONLINE) == expected


async def test_the_consoles_flow_with_a_login(tmp_path: Path, sock_dir: Path) -> None:
    """As the original console: log in, read data.token, then the dashboard, the node list
    and a node with `Authorization: Bearer <JWT>`; a bad token is 401 (it logs out)."""
    async with fleet(tmp_path, sock_dir) as w:
        stored = argon2.PasswordHasher().hash("console-pass")
        await w.db(w.store.create_user, "ops", stored, role=Role.VIEWER, now=time.time())
        await w.db(register, w.store, "web-1", labels={"env": "prod"})
        body = {"username": "ops", "password": "console-pass"}
        login = envelope(await w.client.post("/api/v1/auth/login", json=body))
        assert login["user"]["username"] == "ops"
        bearer = {"Authorization": f"Bearer {login['token']}"}

        overview = envelope(await w.client.get("/api/v1/metrics/cluster/overview", headers=bearer))
        aggregate = overview["aggregate"]
        for key in ("avg_cpu", "total_memory_gb", "total_disk_gb"):
            assert isinstance(aggregate[key], float)
        assert aggregate["node_counts"] == {"total": 1, "online": 1, "offline": 0}
        (row,) = overview["nodes"]
        assert (row["node_id"], row["hostname"], row["ip"]) == ("web-1", "host-web-1", "127.0.0.1")
        assert all(isinstance(row[k], float) for k in ("cpu_usage", "memory_usage", "disk_usage"))

        listed = envelope(await w.client.get("/api/v1/nodes", headers=bearer))
        assert listed["page_info"]["total"] == 1
        node = envelope(await w.client.get("/api/v1/nodes/web-1", headers=bearer))["node"]
        assert node["labels"] == {"env": "prod"} and node["status"] == "online"
        bad = {"Authorization": "Bearer not.a.jwt"}
        assert (await w.client.get("/api/v1/nodes", headers=bad)).status_code == 401
