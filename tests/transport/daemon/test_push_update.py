"""PushUpdate and GetUpdateResult against a real `hostvisor run` with an `update:` block:
a real artifact server, real signed envelopes, real agents (see test_updates.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from tests.supervisor.helpers import wait_until
from tests.transport.daemon.update_world import World, archive
from tests.updater.updater_testlib import agent_script
from transport import (
    UPDATE_ID_METADATA_KEY,
    Channel,
    DaemonService,
    HostvisorService,
    RemoteError,
    StatusCode,
    daemon_pb2 as d,
    hostvisor_pb2 as h,
    open_channel,
    open_grpc_loop,
)
from transport.daemon._cli import EXIT_RESTART
from transport.daemon._server import control_socket_path

FINISHED = (h.UPDATE_STATE_SUCCEEDED, h.UPDATE_STATE_FAILED, h.UPDATE_STATE_ROLLED_BACK)


async def serving(world: World, starts: int = 1) -> trio.Process:
    """Start the daemon; return once it serves gRPC (its ``starts``-th start in the log)."""
    daemon = await world.start_serving()
    await wait_until(lambda: world.log().count("serving the command line") >= starts)
    return daemon


@asynccontextmanager
async def channel_to(world: World) -> AsyncIterator[Channel]:
    socket = control_socket_path(str(world.work))
    async with open_grpc_loop(), open_channel(f"unix:{socket}") as channel:
        yield channel


def push_message(world: World, data: bytes, component: str = "agent") -> d.UpdateRequest:
    """A signed request for ``data`` as PushUpdate's message (the envelope in signature)."""
    doc: dict[str, Any] = json.loads(world.request(data, component=component).read_text())
    return d.UpdateRequest(
        component=component,
        version=doc["version"],
        download_url=doc["download_url"],
        hash=doc["hash"],
        signature=doc["envelope"],
    )


async def finished(channel: Channel, update_id: str) -> h.UpdateResult:
    request = h.GetUpdateResultRequest(update_id=update_id)
    with trio.fail_after(90):
        while True:
            result = await channel.call(HostvisorService.GetUpdateResult, request)
            if result.state in FINISHED:
                return result
            assert result.state in (h.UPDATE_STATE_PENDING, h.UPDATE_STATE_RUNNING)
            await trio.sleep(0.1)


async def refused(call: Any) -> tuple[StatusCode, str]:
    with pytest.raises(RemoteError) as caught:
        await call
    return caught.value.status, caught.value.details


async def test_push_update_installs_and_reports(world: World) -> None:
    """An accepted update is installed with the usual verification; its id comes back in
    the metadata; GetUpdateResult tells the outcome, by id or as the component's latest;
    ListAgents shows the new version; a retry with the same id installs nothing twice."""
    await serving(world)
    message = push_message(world, agent_script("1.11.0"))
    async with channel_to(world) as channel:
        reply = await channel.call_with_metadata(
            DaemonService.PushUpdate, message, metadata=((UPDATE_ID_METADATA_KEY, "rollout-7"),)
        )
        assert reply.response.success
        assert (UPDATE_ID_METADATA_KEY, "rollout-7") in reply.initial_metadata
        result = await finished(channel, "rollout-7")
        assert (result.state, result.component, result.old_version, result.new_version) == (
            h.UPDATE_STATE_SUCCEEDED,
            "agent",
            "",
            "1.11.0",
        )
        assert result.accepted_at_ms > 0 and result.finished_at_ms >= result.accepted_at_ms
        assert await world.running_version() == "1.11.0"
        hits = len(world.server.hits)

        again = await channel.call_with_metadata(
            DaemonService.PushUpdate, message, metadata=((UPDATE_ID_METADATA_KEY, "rollout-7"),)
        )
        assert (UPDATE_ID_METADATA_KEY, "rollout-7") in again.initial_metadata
        other = push_message(world, agent_script("1.12.0"))
        status, details = await refused(
            channel.call(
                DaemonService.PushUpdate, other, metadata=((UPDATE_ID_METADATA_KEY, "rollout-7"),)
            )
        )
        assert status is StatusCode.ALREADY_EXISTS and "rollout-7" in details
        await trio.sleep(0.5)
        assert len(world.server.hits) == hits, "the retry downloaded nothing"

        latest = await channel.call(
            HostvisorService.GetUpdateResult, h.GetUpdateResultRequest(component="agent")
        )
        assert latest.update_id == "rollout-7"
        agents = await channel.call(DaemonService.ListAgents, d.ListAgentsRequest())
        assert agents.agents[0].version == "1.11.0"

        generated = await channel.call_with_metadata(DaemonService.PushUpdate, other)
        (update_id,) = [v for k, v in generated.initial_metadata if k == UPDATE_ID_METADATA_KEY]
        assert update_id.startswith("req-")
        assert (await finished(channel, update_id)).new_version == "1.12.0"


async def test_push_update_validates_at_once(world: World) -> None:
    """Bad input is INVALID_ARGUMENT naming the field, before anything is downloaded; a
    replayed request is FAILED_PRECONDITION; unknown updates NOT_FOUND."""
    await serving(world)
    good = push_message(world, agent_script("1.11.0"))
    tampered = json.loads(good.signature)
    other = json.loads(push_message(world, agent_script("1.12.0")).signature)
    tampered["signatures"] = other["signatures"]

    def variant(**changes: Any) -> d.UpdateRequest:
        message = d.UpdateRequest()
        message.CopyFrom(good)
        for key, value in changes.items():
            setattr(message, key, value)
        return message

    cases = {
        "UpdateRequest.update_data": variant(update_data=b"\x7fELF"),
        "UpdateRequest.component": variant(component=""),
        "UpdateRequest.hash": variant(hash="abc"),
        "UpdateRequest.download_url": variant(download_url="ftp://127.0.0.1/x"),
        "UpdateRequest.version": variant(version=""),
        "UpdateRequest.signature": variant(signature=json.dumps(tampered)),
    }
    async with channel_to(world) as channel:
        for field, message in cases.items():
            status, details = await refused(channel.call(DaemonService.PushUpdate, message))
            assert status is StatusCode.INVALID_ARGUMENT, (field, details)
            assert details.startswith(f"{field}: "), (field, details)
        status, details = await refused(
            channel.call(DaemonService.PushUpdate, variant(component="nope"))
        )
        assert details == (
            "UpdateRequest.component: unknown component 'nope' (one of ['agent', 'daemon'])"
        )
        status, details = await refused(
            channel.call(DaemonService.PushUpdate, variant(signature="", hash=good.hash))
        )
        assert status is StatusCode.INVALID_ARGUMENT and "no envelope and no legacy" in details
        status, details = await refused(
            channel.call(
                DaemonService.PushUpdate, good, metadata=((UPDATE_ID_METADATA_KEY, "../x"),)
            )
        )
        assert status is StatusCode.INVALID_ARGUMENT
        assert details.startswith(f"metadata {UPDATE_ID_METADATA_KEY}: ")
        assert world.server.hits == [], "nothing was downloaded"
        for request, expected in (
            (h.GetUpdateResultRequest(update_id="nope"), StatusCode.NOT_FOUND),
            (h.GetUpdateResultRequest(component="agent"), StatusCode.NOT_FOUND),
            (h.GetUpdateResultRequest(), StatusCode.INVALID_ARGUMENT),
            (h.GetUpdateResultRequest(update_id="a/b"), StatusCode.INVALID_ARGUMENT),
        ):
            status, _ = await refused(channel.call(HostvisorService.GetUpdateResult, request))
            assert status is expected, request

        # A request whose install was tried and failed cannot be pushed again.
        broken = push_message(world, b"#!/bin/sh\nexit 1\n")
        reply = await channel.call_with_metadata(DaemonService.PushUpdate, broken)
        (update_id,) = [v for k, v in reply.initial_metadata if k == UPDATE_ID_METADATA_KEY]
        result = await finished(channel, update_id)
        assert result.state in (h.UPDATE_STATE_FAILED, h.UPDATE_STATE_ROLLED_BACK)
        assert result.reason and result.code and result.error
        status, details = await refused(channel.call(DaemonService.PushUpdate, broken))
        assert status is StatusCode.FAILED_PRECONDITION and "replayed" in details
    assert await world.running_version() == "1.0.0"


async def test_self_update_result_survives_the_restart(world: World) -> None:
    """A pushed update of the daemon itself: the daemon exits with 75 once it is installed;
    the next daemon still answers GetUpdateResult (restart_required)."""
    daemon = await serving(world)
    message = push_message(world, archive({"hostvisor": b"#!/bin/sh\n"}), component="daemon")
    async with channel_to(world) as channel:
        reply = await channel.call_with_metadata(
            DaemonService.PushUpdate, message, metadata=((UPDATE_ID_METADATA_KEY, "self-1"),)
        )
        assert reply.response.success
    with trio.fail_after(60):
        assert await daemon.wait() == EXIT_RESTART
    await serving(world, starts=2)
    async with channel_to(world) as channel:
        result = await finished(channel, "self-1")
    assert result.state == h.UPDATE_STATE_SUCCEEDED and result.restart_required
    assert (result.component, result.old_version, result.new_version) == (
        "daemon",
        "1.0.0",
        "1.11.0",
    )
