"""The contracts, checked by an independent compile of the .proto files.

Nothing here trusts ``transport._pb``: the .proto files are compiled at test time with
grpc_tools' protoc into a temporary directory, the result is loaded into a separate
descriptor pool (or a separate process), and compared with our committed code and with the
original system's contracts written out below from ../shared/notes/original-system.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, unknown_fields
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

import transport
from transport import (
    CallContext,
    DaemonService,
    HostvisorService,
    ManagerService,
    Send,
    daemon_pb2,
    hostvisor_pb2,
    manager_pb2,
)
from transport._pb import regen

PROTOS = Path(transport.__file__).parent / "protos"
F = descriptor_pb2.FieldDescriptorProto

# The original contracts: message -> [(number, name, type)], types as protoc spells them
# ("map<k,v>" and "repeated X" for the composite ones).
ORIGINAL: dict[str, list[tuple[int, str, str]]] = {
    "manager.RegisterNodeRequest": [
        (1, "node_id", "string"), (2, "hostname", "string"), (3, "ip", "string"),
        (4, "os", "string"), (5, "arch", "string"), (6, "labels", "map<string,string>"),
        (7, "daemon_version", "string"), (8, "agent_version", "string"),
    ],
    "manager.RegisterNodeResponse": [(1, "success", "bool"), (2, "message", "string")],
    "manager.HeartbeatRequest": [(1, "node_id", "string"), (2, "timestamp", "int64")],
    "manager.HeartbeatResponse": [(1, "success", "bool"), (2, "message", "string")],
    "manager.MetricData": [
        (1, "type", "string"), (2, "timestamp", "int64"), (3, "values", "map<string,double>"),
    ],
    "manager.ReportMetricsRequest": [
        (1, "node_id", "string"), (2, "metrics", "repeated manager.MetricData"),
    ],
    "manager.ReportMetricsResponse": [(1, "success", "bool"), (2, "message", "string")],
    "proto.RegisterRequest": [
        (1, "hostname", "string"), (2, "ip", "string"), (3, "os", "string"),
        (4, "arch", "string"), (5, "labels", "map<string,string>"),
        (6, "daemon_version", "string"), (7, "agent_version", "string"),
    ],
    "proto.RegisterResponse": [
        (1, "node_id", "string"), (2, "success", "bool"), (3, "message", "string"),
    ],
    "proto.HeartbeatRequest": [
        (1, "node_id", "string"), (2, "timestamp", "int64"), (3, "status", "string"),
    ],
    "proto.HeartbeatResponse": [(1, "success", "bool"), (2, "message", "string")],
    "proto.MetricsRequest": [
        (1, "node_id", "string"), (2, "timestamp", "int64"), (3, "data", "bytes"),
    ],
    "proto.MetricsResponse": [(1, "success", "bool"), (2, "message", "string")],
    "proto.ConfigRequest": [(1, "node_id", "string"), (2, "config_type", "string")],
    "proto.ConfigResponse": [
        (1, "success", "bool"), (2, "message", "string"), (3, "config_data", "bytes"),
    ],
    "proto.UpdateRequest": [
        (1, "node_id", "string"), (2, "component", "string"), (3, "version", "string"),
        (4, "download_url", "string"), (5, "hash", "string"), (6, "signature", "string"),
        (7, "update_data", "bytes"),
    ],
    "proto.UpdateResponse": [(1, "success", "bool"), (2, "message", "string")],
    "proto.AgentInfo": [
        (1, "id", "string"), (2, "type", "string"), (3, "version", "string"),
        (4, "status", "string"), (5, "pid", "int32"), (6, "start_time", "int64"),
        (7, "restart_count", "int32"), (8, "last_heartbeat", "int64"),
    ],
    "proto.ListAgentsRequest": [],
    "proto.ListAgentsResponse": [(1, "agents", "repeated proto.AgentInfo")],
    "proto.AgentOperationRequest": [(1, "agent_id", "string"), (2, "operation", "string")],
    "proto.AgentOperationResponse": [(1, "success", "bool"), (2, "error_message", "string")],
    "proto.ResourceDataPoint": [
        (1, "timestamp", "int64"), (2, "cpu", "double"), (3, "memory_rss", "uint64"),
        (4, "memory_vms", "uint64"), (5, "disk_read_bytes", "uint64"),
        (6, "disk_write_bytes", "uint64"), (7, "open_files", "int32"),
    ],
    "proto.AgentMetricsRequest": [(1, "agent_id", "string"), (2, "duration_seconds", "int64")],
    "proto.AgentMetricsResponse": [
        (1, "agent_id", "string"), (2, "data_points", "repeated proto.ResourceDataPoint"),
    ],
    "proto.AgentState": [
        (1, "agent_id", "string"), (2, "status", "string"), (3, "pid", "int32"),
        (4, "last_heartbeat", "int64"), (5, "type", "string"), (6, "version", "string"),
    ],
    "proto.SyncAgentStatesRequest": [
        (1, "node_id", "string"), (2, "states", "repeated proto.AgentState"),
    ],
    "proto.SyncAgentStatesResponse": [(1, "success", "bool"), (2, "message", "string")],
}  # fmt: skip

ORIGINAL_METHODS = {
    "/manager.ManagerService/RegisterNode": ("manager.RegisterNode", "manager.RegisterNode"),
    "/manager.ManagerService/Heartbeat": ("manager.Heartbeat", "manager.Heartbeat"),
    "/manager.ManagerService/ReportMetrics": ("manager.ReportMetrics", "manager.ReportMetrics"),
    "/proto.DaemonService/Register": ("proto.Register", "proto.Register"),
    "/proto.DaemonService/Heartbeat": ("proto.Heartbeat", "proto.Heartbeat"),
    "/proto.DaemonService/ReportMetrics": ("proto.Metrics", "proto.Metrics"),
    "/proto.DaemonService/GetConfig": ("proto.Config", "proto.Config"),
    "/proto.DaemonService/PushUpdate": ("proto.Update", "proto.Update"),
    "/proto.DaemonService/ListAgents": ("proto.ListAgents", "proto.ListAgents"),
    "/proto.DaemonService/OperateAgent": ("proto.AgentOperation", "proto.AgentOperation"),
    "/proto.DaemonService/GetAgentMetrics": ("proto.AgentMetrics", "proto.AgentMetrics"),
    "/proto.DaemonService/SyncAgentStates": ("proto.SyncAgentStates", "proto.SyncAgentStates"),
}
"""Every method of the original services: path -> the stems of its request and response
message names (``+ "Request"``, ``+ "Response"``); all unary."""

OURS = {"manager.proto": manager_pb2, "daemon.proto": daemon_pb2}
OURS["hostvisor/v1/hostvisor.proto"] = hostvisor_pb2
METHOD_TABLES = (ManagerService, DaemonService, HostvisorService)


@dataclass(frozen=True)
class Compiled:
    """The independent compile: descriptors in a pool of their own, and protoc's output."""

    files: dict[str, descriptor_pb2.FileDescriptorProto]
    pool: descriptor_pool.DescriptorPool
    out: Path

    def message(self, full_name: str) -> type[Message]:
        return message_factory.GetMessageClass(self.pool.FindMessageTypeByName(full_name))


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Compiled:
    from grpc_tools import protoc  # type: ignore[import-untyped]

    out = tmp_path_factory.mktemp("protoc")
    protos = sorted(p.relative_to(PROTOS).as_posix() for p in PROTOS.rglob("*.proto"))
    status = protoc.main(
        [
            "protoc",
            f"-I{PROTOS}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            f"--descriptor_set_out={out / 'set.pb'}",
            "--include_imports",
            *protos,
        ]
    )
    assert status == 0
    found = descriptor_pb2.FileDescriptorSet.FromString((out / "set.pb").read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file in found.file:
        pool.Add(file)
    return Compiled({f.name: f for f in found.file}, pool, out)


def _type_name(field: FieldDescriptor) -> str:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        key, value = (field.message_type.fields_by_name[n] for n in ("key", "value"))
        return f"map<{_type_name(key)},{_type_name(value)}>"
    base = {
        F.TYPE_STRING: "string", F.TYPE_BOOL: "bool", F.TYPE_INT32: "int32",
        F.TYPE_INT64: "int64", F.TYPE_UINT64: "uint64", F.TYPE_DOUBLE: "double",
        F.TYPE_BYTES: "bytes",
    }.get(field.type)  # fmt: skip
    if base is None:
        assert field.message_type is not None, field.full_name
        base = field.message_type.full_name
    return f"repeated {base}" if field.is_repeated else base


def test_original_messages_match_the_contract(compiled: Compiled) -> None:
    """Every original message has exactly the original fields: number, name and type."""
    for full_name, expected in ORIGINAL.items():
        descriptor = compiled.pool.FindMessageTypeByName(full_name)
        got = [(f.number, f.name, _type_name(f)) for f in descriptor.fields]
        assert got == expected, full_name
    for file_name, package in (("manager.proto", "manager"), ("daemon.proto", "proto")):
        file = compiled.files[file_name]
        assert file.package == package
        assert sorted(f"{package}.{m.name}" for m in file.message_type) == sorted(
            name for name in ORIGINAL if name.startswith(f"{package}.")
        )


def _methods(compiled: Compiled) -> dict[str, tuple[str, str, bool, bool]]:
    found = {}
    for file in compiled.files.values():
        for service in file.service:
            for m in service.method:
                path = f"/{file.package}.{service.name}/{m.name}"
                found[path] = (
                    m.input_type.lstrip("."),
                    m.output_type.lstrip("."),
                    m.client_streaming,
                    m.server_streaming,
                )
    return found


def test_original_method_paths(compiled: Compiled) -> None:
    """The original services have exactly their methods, paths and message types."""
    methods = _methods(compiled)
    original = {p: m for p, m in methods.items() if not p.startswith("/hostvisor.")}
    assert original == {
        path: (f"{request}Request", f"{response}Response", False, False)
        for path, (request, response) in ORIGINAL_METHODS.items()
    }
    assert "/hostvisor.v1.HostvisorService/FollowAgentLogs" in methods


def test_method_tables_match_the_descriptors(compiled: Compiled) -> None:
    """Our typed method descriptors name exactly the compiled methods and their types."""
    ours = {}
    for table in METHOD_TABLES:
        for method in vars(table).values():
            if isinstance(method, transport.UnaryMethod | transport.StreamMethod):
                ours[method.path] = (
                    method.request_type.DESCRIPTOR.full_name,
                    method.response_type.DESCRIPTOR.full_name,
                    False,
                    isinstance(method, transport.StreamMethod),
                )
    assert ours == _methods(compiled)


def test_committed_descriptors_equal_the_compiled_ones(compiled: Compiled) -> None:
    """transport._pb registers the same files as a fresh compile, byte for byte."""
    assert set(compiled.files) == set(OURS)
    for name, module in OURS.items():
        ours = descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb)
        theirs = descriptor_pb2.FileDescriptorProto()
        theirs.CopyFrom(compiled.files[name])
        # protoc's python output leaves out the derived JSON names; nothing else differs.
        stack = list(theirs.message_type)
        while stack:
            message = stack.pop()
            stack += message.nested_type
            for field in message.field:
                field.ClearField("json_name")
        assert ours == theirs, name


def _fill(cls: type[Message], depth: int = 0) -> Message:
    """A message of ``cls`` with every field set to a non-default value."""
    message = cls()
    scalars: dict[int, Any] = {
        F.TYPE_STRING: "sé ✓", F.TYPE_BOOL: True, F.TYPE_INT32: -(2**31),
        F.TYPE_INT64: -(2**63), F.TYPE_UINT64: 2**64 - 1, F.TYPE_DOUBLE: -1.5e300,
        F.TYPE_BYTES: b"\x00\xff",
    }  # fmt: skip
    descriptor: Descriptor = cls.DESCRIPTOR
    oneofs_done: set[str] = set()
    for field in descriptor.fields:
        if field.containing_oneof is not None:
            if field.containing_oneof.name in oneofs_done:
                continue
            oneofs_done.add(field.containing_oneof.name)
        target = getattr(message, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            target["k1"] = scalars[value_field.type]
            target[""] = scalars[value_field.type]
        elif field.type == F.TYPE_MESSAGE:
            sub = message_factory.GetMessageClass(field.message_type)
            if depth >= 3:
                continue
            if field.is_repeated:
                target.extend([_fill(sub, depth + 1), sub()])
            else:
                target.CopyFrom(_fill(sub, depth + 1))
        elif field.type == F.TYPE_ENUM:
            number = field.enum_type.values[-1].number
            if field.is_repeated:
                target.append(number)
            else:
                setattr(message, field.name, number)
        elif field.is_repeated:
            target.extend([scalars[field.type], scalars[field.type]])
        else:
            setattr(message, field.name, scalars[field.type])
    return message


def _all_messages() -> Iterator[type[Message]]:
    for module in OURS.values():
        for descriptor in module.DESCRIPTOR.message_types_by_name.values():
            yield message_factory.GetMessageClass(descriptor)


@pytest.mark.parametrize("ours", list(_all_messages()), ids=lambda c: c.DESCRIPTOR.full_name)
def test_messages_cross_decode(compiled: Compiled, ours: type[Message]) -> None:
    """A message serialized by our classes decodes with the independent ones, and back."""
    theirs = compiled.message(ours.DESCRIPTOR.full_name)
    sample = _fill(ours)
    wire = sample.SerializeToString(deterministic=True)
    decoded = theirs.FromString(wire)
    assert decoded.SerializeToString(deterministic=True) == wire
    assert ours.FromString(decoded.SerializeToString()) == sample
    assert len(unknown_fields.UnknownFieldSet(decoded)) == 0


CLIENT = textwrap.dedent(
    """
    import json, sys
    import grpc
    from google.protobuf import json_format
    import daemon_pb2, daemon_pb2_grpc
    from hostvisor.v1 import hostvisor_pb2, hostvisor_pb2_grpc

    out = {}
    with grpc.insecure_channel(sys.argv[1]) as channel:
        daemon = daemon_pb2_grpc.DaemonServiceStub(channel)
        reply = daemon.ListAgents(daemon_pb2.ListAgentsRequest(), timeout=10)
        out["agents"] = [json_format.MessageToDict(a, preserving_proto_field_name=True)
                         for a in reply.agents]
        for name, call, request in [
            ("operate", daemon.OperateAgent,
             daemon_pb2.AgentOperationRequest(agent_id="a1", operation="kill")),
            ("register", daemon.Register, daemon_pb2.RegisterRequest()),
        ]:
            try:
                call(request, timeout=10)
            except grpc.RpcError as exc:
                out[name] = [exc.code().name, exc.details()]
        logs = hostvisor_pb2_grpc.HostvisorServiceStub(channel).FollowAgentLogs(
            hostvisor_pb2.FollowAgentLogsRequest(agent_id="a1", tail_lines=3), timeout=10)
        out["logs"] = [line for chunk in logs for line in chunk.lines]
    print(json.dumps(out))
    """
)


async def test_independent_client_gets_the_same_answers(compiled: Compiled) -> None:
    """A client generated by stock grpc tools from the .proto files, in another process,
    gets our server's answers (messages, statuses, streams)."""

    async def list_agents(
        request: daemon_pb2.ListAgentsRequest, ctx: CallContext
    ) -> daemon_pb2.ListAgentsResponse:
        record = transport.AgentInfoRecord(
            "a1", "filebeat", "8.1", transport.AgentStatus.RUNNING, 42, 1_700_000_000, 2, None
        )
        return daemon_pb2.ListAgentsResponse(agents=[transport.agent_info_to_message(record)])

    async def operate(
        request: daemon_pb2.AgentOperationRequest, ctx: CallContext
    ) -> daemon_pb2.AgentOperationResponse:
        transport.operation_request_from_message(request)
        return daemon_pb2.AgentOperationResponse(success=True)

    async def follow(
        request: hostvisor_pb2.FollowAgentLogsRequest,
        ctx: CallContext,
        send: Send[hostvisor_pb2.LogChunk],
    ) -> None:
        tail = transport.parse_follow_request(request)
        await send(hostvisor_pb2.LogChunk(lines=[f"line {i}" for i in range(tail.lines)]))

    routes = [
        transport.unary_route(DaemonService.ListAgents, list_agents),
        transport.unary_route(DaemonService.OperateAgent, operate),
        transport.stream_route(HostvisorService.FollowAgentLogs, follow),
    ]
    script = compiled.out / "client.py"
    script.write_text(CLIENT)
    with trio.fail_after(60):
        async with transport.open_grpc_loop(), trio.open_nursery() as nursery:
            listeners = [transport.Listener("127.0.0.1:0")]
            (address,) = await nursery.start(transport.serve_grpc, routes, listeners)
            result = await trio.run_process(
                [sys.executable, str(script), address],
                cwd=compiled.out,
                env={"PYTHONPATH": str(compiled.out), "PATH": "/usr/bin:/bin"},
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
            nursery.cancel_scope.cancel()
    assert result.returncode == 0, result.stderr.decode()
    out = json.loads(result.stdout)
    assert out["agents"] == [
        {
            "id": "a1",
            "type": "filebeat",
            "version": "8.1",
            "status": "running",
            "pid": 42,
            "start_time": "1700000000",
            "restart_count": 2,
        }
    ]
    assert out["operate"] == [
        "INVALID_ARGUMENT",
        "AgentOperationRequest.operation: unknown operation 'kill' (start, stop or restart)",
    ]
    assert out["register"][0] == "UNIMPLEMENTED"
    assert out["logs"] == ["line 0", "line 1", "line 2"]


def test_generated_code_is_current() -> None:
    """transport/_pb is what the pinned generator makes of the .proto files today."""
    assert regen.check() == []


def test_generator_is_pinned_in_pyproject() -> None:
    """pyproject pins the grpcio-tools release that regen.py insists on."""
    pyproject = (PROTOS.parents[1] / "pyproject.toml").read_text(encoding="utf-8")
    assert f'"grpcio-tools=={regen.PINNED_GRPCIO_TOOLS}"' in pyproject


def test_regen_check_reports_a_stale_file(tmp_path: Path) -> None:
    """--check fails with a diff when a generated file differs or is missing."""
    out = tmp_path / "_pb"
    out.mkdir()
    assert regen.write(out) != []
    assert regen.check(out) == []
    stale = out / "daemon_rpc.py"
    stale.write_text(stale.read_text().replace("ListAgents", "ListAgentz"))
    (out / "manager_pb2.pyi").unlink()
    (out / "old_pb2.py").write_text("# a leftover\n")
    diff = "".join(regen.check(out))
    assert "ListAgentz" in diff and "manager_pb2.pyi" in diff and "old_pb2.py" in diff
    assert sorted(regen.write(out)) == ["daemon_rpc.py", "manager_pb2.pyi", "old_pb2.py"]
    assert regen.check(out) == []


def test_regen_command_line() -> None:
    """``python -m transport._pb.regen --check`` exits 0 when current."""
    result = subprocess.run(
        [sys.executable, "-m", "transport._pb.regen", "--check"],
        cwd=PROTOS.parents[1],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "current" in result.stdout


def test_public_names_load_lazily() -> None:
    """``import transport`` loads neither protobuf nor grpc; every public name resolves."""
    code = textwrap.dedent(
        """
        import sys
        import transport
        heavy = ("google.protobuf", "grpc", "trio_asyncio")
        assert not [m for m in sys.modules if m.startswith(heavy)], "eager import"
        for name in transport.__all__:
            getattr(transport, name)
        assert len(set(transport.__all__)) == len(transport.__all__)
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROTOS.parents[1],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.stdout.strip() == "ok", result.stderr
