"""Helpers of the Manager's gRPC service tests: the original daemon's recorded calls."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from transport import DaemonService, ManagerService, UnaryMethod

TRAFFIC = Path(__file__).with_name("data") / "original_daemon_traffic.json"
"""Calls of the original Go daemon, recorded by a Manager (see its "about"); a copy of
../shared/notes/original-daemon-traffic.json."""

METHODS: dict[str, UnaryMethod[Any, Any]] = {
    "/manager.ManagerService/RegisterNode": ManagerService.RegisterNode,
    "/manager.ManagerService/Heartbeat": ManagerService.Heartbeat,
    "/manager.ManagerService/ReportMetrics": ManagerService.ReportMetrics,
    "/proto.DaemonService/SyncAgentStates": DaemonService.SyncAgentStates,
}


@dataclass(frozen=True)
class Recorded:
    """One recorded call: its method and the request message."""

    method: UnaryMethod[Any, Any]
    request: Message


def recorded_calls() -> list[Recorded]:
    """The original daemon's calls, in recording order, as request messages."""
    calls = json.loads(TRAFFIC.read_text())["calls"]
    found: list[Recorded] = []
    for call in calls:
        method = METHODS[call["path"]]
        request = json_format.ParseDict(call["request"], method.request_type())
        found.append(Recorded(method, request))
    return found
