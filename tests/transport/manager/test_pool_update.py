"""The daemon pool's PushUpdate and GetUpdateResult against a real `hostvisor run` with an
`update:` block and its TCP listener: a real artifact server, real signed envelopes, a
real agent (the world of tests/transport/daemon/test_push_update.py)."""

from __future__ import annotations

import pytest
import trio
import yaml

from tests.supervisor.helpers import free_port, wait_until
from tests.transport.daemon.test_push_update import push_message
from tests.transport.daemon.update_world import World, http_server, signer, world
from tests.transport.manager.test_pool import running
from tests.updater.updater_testlib import agent_script
from transport import RemoteError, StatusCode, daemon_pb2, open_grpc_loop
from transport.manager._model import Node
from transport.manager._pool import DaemonPool, UpdateStatus

__all__ = ["http_server", "signer", "world"]  # the fixtures of the daemon's update tests

NODE_ID = "node-upd"


async def serving_tcp(world: World) -> Node:
    """Start the daemon with a TCP listener; its node once it serves there."""
    port = free_port()
    document = yaml.safe_load(world.config.read_text())
    document["daemon"].update(id=NODE_ID, grpc_port=port)
    world.config.write_text(yaml.safe_dump(document))
    await world.start_serving()
    await wait_until(lambda: "gRPC: serving on" in world.log())
    return Node(id=1, node_id=NODE_ID, ip="127.0.0.1", grpc_port=port)


async def push(
    pool: DaemonPool, node: Node, message: daemon_pb2.UpdateRequest, update_id: str | None = None
) -> str:
    m = message
    return await pool.push_update(
        node, m.component, m.version, m.download_url, m.hash, m.signature, update_id=update_id
    )


async def finished(pool: DaemonPool, node: Node, update_id: str) -> UpdateStatus:
    """Poll GetUpdateResult until the update ends (another process installs it)."""
    with trio.fail_after(90):
        while True:
            status = await pool.update_result(node, update_id)
            if status.state not in ("pending", "running"):
                return status
            await trio.sleep(0.1)


async def test_push_update_accepted_then_refused(world: World) -> None:
    """An accepted update comes back with its id (the one asked for, or the daemon's) and
    is installed; GetUpdateResult tells the outcome. The daemon's refusals pass through:
    another node's request, an id reused for another update, a tampered signature, an
    unknown update."""
    node = await serving_tcp(world)
    message = push_message(world, agent_script("1.11.0"))
    async with open_grpc_loop(), running(DaemonPool()) as pool:
        assert await push(pool, node, message, "rollout-1") == "rollout-1"
        assert await finished(pool, node, "rollout-1") == ("succeeded", "installed 1.11.0")
        assert await world.running_version() == "1.11.0"
        assert (await pool.list_agents(node))[0].version == "1.11.0"

        other = push_message(world, agent_script("1.12.0"))
        tampered = daemon_pb2.UpdateRequest()
        tampered.CopyFrom(other)
        tampered.hash = "0" * 64
        someone_else = Node(id=2, node_id="someone-else", ip=node.ip, grpc_port=node.grpc_port)
        for call, status, text in (
            (push(pool, someone_else, other), StatusCode.INVALID_ARGUMENT, "node_id"),
            (push(pool, node, other, "rollout-1"), StatusCode.ALREADY_EXISTS, "rollout-1"),
            (push(pool, node, tampered), StatusCode.INVALID_ARGUMENT, "UpdateRequest."),
            (pool.update_result(node, "nope"), StatusCode.NOT_FOUND, ""),
        ):
            with pytest.raises(RemoteError) as caught:
                await call
            assert caught.value.status is status and text in caught.value.details, caught.value

        update_id = await push(pool, node, other)
        assert update_id.startswith("req-")
        assert await finished(pool, node, update_id) == ("succeeded", "installed 1.12.0")
        stats = pool.statistics()
        assert (stats.opened, stats.evictions, stats.unreachable) == (1, 0, 0)
