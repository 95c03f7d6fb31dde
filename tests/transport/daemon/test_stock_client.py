"""A client built only from the .proto files by stock tools (grpc_tools' protoc and the
plain grpcio stubs, in another process, without any of our code) gets from a real
`hostvisor run` the same answers as ours."""

from __future__ import annotations

import json
import shutil
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from google.protobuf import json_format

from tests.transport.daemon.daemon_helpers import SLEEPER, Host, agent
from tests.transport.daemon.grpc_helpers import compile_protos, run_stock_client
from tests.transport.daemon.test_cli import wait_until
from transport import DaemonService, daemon_pb2, open_channel, open_grpc_loop

STOCK_CLIENT = textwrap.dedent(
    """
    import json, sys
    import grpc
    from google.protobuf import json_format
    import daemon_pb2, daemon_pb2_grpc

    def status(call):
        try:
            call()
        except grpc.RpcError as exc:
            return [exc.code().name, exc.details()]
        return ["OK", ""]

    out = {}
    for name, target in (("tcp", sys.argv[1]), ("unix", sys.argv[2])):
        with grpc.insecure_channel(target) as channel:
            stub = daemon_pb2_grpc.DaemonServiceStub(channel)
            reply = stub.ListAgents(daemon_pb2.ListAgentsRequest(), timeout=30)
            out[name] = json_format.MessageToDict(
                reply, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
            )
    with grpc.insecure_channel(sys.argv[1]) as channel:
        stub = daemon_pb2_grpc.DaemonServiceStub(channel)
        op = daemon_pb2.AgentOperationRequest
        out["kill"] = status(lambda: stub.OperateAgent(op(agent_id="a", operation="kill")))
        out["nope"] = status(lambda: stub.OperateAgent(op(agent_id="nope", operation="stop")))
        out["stop"] = status(lambda: stub.OperateAgent(op(agent_id="b", operation="stop")))
        out["register"] = status(lambda: stub.Register(daemon_pb2.RegisterRequest()))
        out["sync"] = status(
            lambda: stub.SyncAgentStates(daemon_pb2.SyncAgentStatesRequest(node_id="n"))
        )
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def stock() -> Iterator[Path]:
    out = compile_protos()
    yield out
    shutil.rmtree(out, ignore_errors=True)


async def _ours(address: str) -> dict[str, object]:
    async with open_grpc_loop(), open_channel(address) as channel:
        reply = await channel.call(DaemonService.ListAgents, daemon_pb2.ListAgentsRequest())
    return json_format.MessageToDict(
        reply, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def test_stock_client_gets_the_same_answers(host: Host, stock: Path) -> None:
    """ListAgents over TCP and the control socket equals ours; statuses are the
    contract's: INVALID_ARGUMENT, NOT_FOUND, UNIMPLEMENTED; stop and sync succeed."""
    host.write([agent("a", SLEEPER, type="filebeat"), agent("b", SLEEPER)])
    daemon = host.start()
    host.wait_serving()
    wait_until(lambda: f"serving on 127.0.0.1:{host.port}" in daemon.text(), "the TCP listener")
    wait_until(lambda: len(host.pids()) == 2, "both agents to run")
    tcp = f"127.0.0.1:{host.port}"
    unix = f"unix:{host.work}/control/hostvisor.sock"
    ours = trio.run(_ours, tcp)
    done = run_stock_client(stock, STOCK_CLIENT, tcp, unix)
    assert done.returncode == 0, done.stderr
    theirs = json.loads(done.stdout)
    assert theirs["tcp"] == ours and theirs["unix"] == ours
    agents = ours["agents"]
    assert isinstance(agents, list) and [a["id"] for a in agents] == ["a", "b"]
    assert agents[0]["type"] == "filebeat" and agents[0]["status"] == "running"
    assert theirs["kill"][0] == "INVALID_ARGUMENT"
    assert theirs["kill"][1].startswith("AgentOperationRequest.operation: unknown operation")
    assert theirs["nope"] == ["NOT_FOUND", "unknown agent 'nope'"]
    assert theirs["stop"] == ["OK", ""]
    assert theirs["register"][0] == "UNIMPLEMENTED"
    assert theirs["sync"] == ["OK", ""]
