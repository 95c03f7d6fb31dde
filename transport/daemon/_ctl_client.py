"""The control commands' gRPC side: finding the daemon, calling it, printing its answers.

Imported only by a control command (it loads grpc). Every failure to reach or to be
served by the daemon becomes a :class:`~transport.daemon._ctl.ControlError`: one line and
an exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO, cast

import trio

from supervisor import ConfigError
from transport import (
    Channel,
    ClientTls,
    DaemonService,
    HostvisorService,
    RemoteError,
    StatusCode,
    TransportError,
    daemon_pb2,
    hostvisor_pb2,
    open_channel,
    open_grpc_loop,
)

from ._cli import (
    EXIT_CONFIG,
    EXIT_ERROR as EXIT_FAILED,
    EXIT_NO_AGENT,
    EXIT_NO_DAEMON,
    EXIT_REFUSED,
    EXIT_TIMEOUT,
    EXIT_USAGE,
)
from ._config import DaemonConfig, _read_document, is_loopback, parse_config
from ._ctl import (
    OPERATION_TIMEOUT_S,
    QUERY_TIMEOUT_S,
    ControlError,
    shorten,
    size,
    table,
    uptime,
)
from ._server import control_socket_path, tcp_address

__all__ = ["Target", "execute", "local_target", "remote_target"]

_REFUSALS = frozenset(
    {
        StatusCode.INVALID_ARGUMENT,
        StatusCode.FAILED_PRECONDITION,
        StatusCode.UNIMPLEMENTED,
        StatusCode.PERMISSION_DENIED,
        StatusCode.UNAUTHENTICATED,
        StatusCode.ALREADY_EXISTS,
        StatusCode.OUT_OF_RANGE,
    }
)
_RUNNING = frozenset({"starting", "running", "stopping", "restarting"})
_HEALTH = {
    hostvisor_pb2.HEALTH_HEALTHY: "healthy",
    hostvisor_pb2.HEALTH_UNHEALTHY: "unhealthy",
}
_PARALLEL = 16


@dataclass(frozen=True, slots=True)
class Target:
    """Where the daemon is.

    Attributes:
        address: gRPC's target (``unix:/path`` or ``host:port``).
        tls: TLS settings for a TCP target, or None.
        describe: The target in words, for messages.
        work_dir: The daemon's work directory, when found through a configuration.
    """

    address: str
    tls: ClientTls | None
    describe: str
    work_dir: str | None = None


def _read(path: str, option: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read(1 << 20)
    except OSError as exc:
        raise ControlError(EXIT_USAGE, f"{option}: cannot read {path!r}: {exc.strerror}") from None


def remote_target(
    address: str, ca: str | None, cert: str | None, key: str | None, server_name: str | None
) -> Target:
    """A daemon reached over TCP.

    Raises:
        ControlError: A malformed address; a certificate without its key; an unreadable
            file.
    """
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ControlError(EXIT_USAGE, f"--address: expected HOST:PORT; got {address!r}")
    if (cert is None) != (key is None):
        raise ControlError(EXIT_USAGE, "--tls-cert and --tls-key go together")
    tls = None
    if ca is not None or cert is not None:
        tls = ClientTls(
            server_ca=_read(ca, "--tls-ca") if ca is not None else None,
            cert_chain=_read(cert, "--tls-cert") if cert is not None else None,
            private_key=_read(key, "--tls-key") if key is not None else None,
            server_name=server_name,
        )
    return Target(address, tls, f"{address} ({'TLS' if tls else 'no TLS'})")


def local_target(work_dir: str | None, config_path: str | None) -> Target:
    """The daemon of a work directory (or of a configuration file) on this host.

    Raises:
        ControlError: The configuration is unreadable or invalid; no daemon runs there.
    """
    config: DaemonConfig | None = None
    if work_dir is None:
        assert config_path is not None
        config = _config(config_path)
        work_dir = config.daemon.work_dir
    socket = control_socket_path(work_dir)
    if os.path.exists(socket):
        return Target(f"unix:{socket}", None, f"the daemon of {work_dir}", work_dir)
    from ._updates import daemon_pid

    pid = daemon_pid(work_dir)
    if pid is None:
        raise ControlError(EXIT_NO_DAEMON, f"no daemon is running for {work_dir}")
    spec = config.daemon if config is not None else None
    if spec is not None and not spec.control_socket and spec.grpc_port and not spec.tls.enabled:
        host = spec.grpc_host if is_loopback(spec.grpc_host) else "127.0.0.1"
        address = tcp_address(host, spec.grpc_port)
        return Target(address, None, f"the daemon of {work_dir} at {address}", work_dir)
    raise ControlError(
        EXIT_NO_DAEMON,
        f"the daemon of {work_dir} (pid {pid}) has no control socket at {socket}"
        " (daemon.control_socket: false?); reach it with --address",
    )


def _config(path: str) -> DaemonConfig:
    """The configuration's validated document (its files are not checked: the daemon
    running from it needs only its work directory found)."""
    try:
        document = _read_document(path)
        return parse_config(
            cast("Mapping[str, Any]", document),  # parse_config reports a non-mapping
            source=path,
            base_dir=os.path.dirname(os.path.abspath(path)),
        )
    except ConfigError as exc:
        first = exc.issues[0] if exc.issues else ""
        more = f" (and {len(exc.issues) - 1} more)" if len(exc.issues) > 1 else ""
        raise ControlError(EXIT_CONFIG, f"{path}: {first}{more}") from None


# --------------------------------------------------------------------------- calling


async def execute(args: argparse.Namespace, target: Target) -> int:
    """Run the control command ``args.command`` against the daemon at ``target``.

    Returns:
        The exit code.

    Raises:
        ControlError: The daemon cannot be reached or refused the request.
    """
    commands: dict[str, Callable[[Client, argparse.Namespace], Coroutine[Any, Any, int]]] = {
        "status": _status,
        "start": _operate,
        "stop": _operate,
        "restart": _operate,
        "logs": _logs,
        "metrics": _metrics,
        "config": _show_config,
    }
    operation = args.command in ("start", "stop", "restart")
    timeout = args.timeout or (OPERATION_TIMEOUT_S if operation else QUERY_TIMEOUT_S)
    async with open_grpc_loop(), open_channel(target.address, tls=target.tls) as channel:
        client = Client(channel, target, timeout)
        try:
            return await commands[args.command](client, args)
        except RemoteError as exc:
            raise client.explain(exc) from None
        except TransportError as exc:
            raise ControlError(EXIT_NO_DAEMON, f"{target.describe}: {exc}") from None


@dataclass
class Client:
    """Calls to one daemon, with the command's timeout."""

    channel: Channel
    target: Target
    timeout_s: float
    out: TextIO = sys.stdout

    def explain(self, exc: RemoteError) -> ControlError:
        """A remote error as the user's one line and exit code."""
        details = exc.details or exc.status.name
        if exc.status is StatusCode.UNAVAILABLE:
            if "ermission denied" in details:
                return ControlError(
                    EXIT_REFUSED,
                    f"permission denied by {self.target.describe}: only the daemon's user may"
                    " use its control socket",
                )
            if self.target.address.startswith("unix:"):
                return ControlError(EXIT_NO_DAEMON, f"no daemon answers: {self.target.describe}")
            hint = ""
            if "Socket closed" in details or "andshake" in details:
                hint = (
                    " (if it listens there, it refused our TLS certificate: it needs one signed"
                    " by its daemon.tls.ca_file)"
                    if self.target.tls is not None
                    else " (if it listens there, it may require TLS: see --tls-ca, --tls-cert)"
                )
            return ControlError(
                EXIT_NO_DAEMON, f"cannot reach {self.target.describe}: {details}{hint}"
            )
        if exc.status is StatusCode.DEADLINE_EXCEEDED:
            return ControlError(EXIT_TIMEOUT, f"no answer within {self.timeout_s:g} s")
        if exc.status is StatusCode.NOT_FOUND:
            return ControlError(EXIT_NO_AGENT, details)
        if exc.status in _REFUSALS:
            return ControlError(EXIT_REFUSED, f"refused: {details}")
        return ControlError(EXIT_FAILED, f"{exc.status.name}: {details}")

    def print(self, text: str) -> None:
        """Write a line to stdout at once (a pipe or a terminal alike)."""
        self.out.write(text + "\n")
        self.out.flush()

    async def details(self, agent_ids: Sequence[str] = ()) -> list[hostvisor_pb2.AgentDetail]:
        """ListAgentDetails."""
        request = hostvisor_pb2.ListAgentDetailsRequest(agent_ids=list(agent_ids))
        reply = await self.channel.call(
            HostvisorService.ListAgentDetails, request, timeout_s=self.timeout_s
        )
        return list(reply.agents)


# --------------------------------------------------------------------------- commands


def _detail_document(detail: hostvisor_pb2.AgentDetail, now: float) -> dict[str, Any]:
    info = detail.info
    running = info.status in _RUNNING and info.start_time > 0
    return {
        "id": info.id,
        "name": detail.name,
        "type": info.type,
        "enabled": detail.enabled,
        "status": info.status,
        "pid": info.pid,
        "version": info.version,
        "start_time": info.start_time or None,
        "uptime_s": max(0, int(now - info.start_time)) if running else None,
        "restart_count": info.restart_count,
        "consecutive_restarts": detail.consecutive_restarts,
        "health": _HEALTH.get(detail.health, "unknown"),
        "health_summary": detail.health_summary,
        "last_error": detail.last_error or None,
        "last_exit": detail.last_exit or None,
        "last_heartbeat": info.last_heartbeat or None,
        "next_restart_at": detail.next_restart_at_ms / 1000 if detail.next_restart_at_ms else None,
    }


async def _status(client: Client, args: argparse.Namespace) -> int:
    details = await client.details(args.agents)
    now = time.time()
    documents = [_detail_document(detail, now) for detail in details]
    if args.json:
        client.print(json.dumps(documents, indent=2))
        return 0
    rows = [["ID", "TYPE", "STATE", "PID", "UPTIME", "RESTARTS", "HEALTH", "LAST ERROR"]]
    for doc, detail in zip(documents, details, strict=True):
        health = doc["health"] if doc["health"] != "unknown" else "-"
        error = doc["last_error"] or ""
        if doc["health"] == "unhealthy" and detail.health_summary:
            error = error or detail.health_summary
        state = doc["status"] if doc["enabled"] or doc["status"] != "stopped" else "disabled"
        rows.append(
            [
                doc["id"],
                doc["type"] or "-",
                state,
                str(doc["pid"]) if doc["pid"] else "-",
                uptime(doc["uptime_s"]) if doc["uptime_s"] is not None else "-",
                str(doc["restart_count"]),
                health,
                shorten(error) if error else "-",
            ]
        )
    client.print(table(rows))
    return 0


async def _operate(client: Client, args: argparse.Namespace) -> int:
    verb: str = args.command
    known = await client.details()
    if args.all:
        chosen = [d.info.id for d in known if verb == "stop" or d.enabled]
    else:
        ids = {d.info.id for d in known}
        unknown = [agent_id for agent_id in args.agents if agent_id not in ids]
        if unknown:
            raise ControlError(EXIT_NO_AGENT, f"unknown agent(s): {', '.join(unknown)}")
        chosen = list(dict.fromkeys(args.agents))
    if not chosen:
        client.print(f"no agent to {verb}")
        return 0
    failures: dict[str, str] = {}
    fatal: list[ControlError] = []  # raised after the nursery, as themselves
    limiter = trio.CapacityLimiter(_PARALLEL)

    async def one(agent_id: str) -> None:
        request = daemon_pb2.AgentOperationRequest(agent_id=agent_id, operation=verb)
        async with limiter:
            try:
                await client.channel.call(
                    DaemonService.OperateAgent, request, timeout_s=client.timeout_s
                )
            except RemoteError as exc:
                if exc.status in (StatusCode.INTERNAL, StatusCode.NOT_FOUND):
                    failures[agent_id] = exc.details
                else:
                    fatal.append(client.explain(exc))
            except TransportError as exc:
                fatal.append(ControlError(EXIT_NO_DAEMON, f"{client.target.describe}: {exc}"))

    async with trio.open_nursery() as nursery:
        for agent_id in chosen:
            nursery.start_soon(one, agent_id)
    if fatal:
        raise fatal[0]
    after = {d.info.id: d for d in await client.details()}
    for agent_id in chosen:
        detail = after.get(agent_id)
        state = f"{detail.info.status}, pid {detail.info.pid}" if detail else "removed"
        if agent_id in failures:
            client.print(f"{agent_id}: {verb} FAILED: {failures[agent_id]}")
        else:
            client.print(f"{agent_id}: {verb} done ({state})")
    return EXIT_FAILED if failures else 0


async def _logs(client: Client, args: argparse.Namespace) -> int:
    if not args.follow:
        request = hostvisor_pb2.GetAgentLogsRequest(agent_id=args.agent, lines=args.lines or 100)
        reply = await client.channel.call(
            HostvisorService.GetAgentLogs, request, timeout_s=client.timeout_s
        )
        for line in reply.lines:
            client.out.write(line + "\n")
        client.out.flush()
        return 0
    tail = args.lines if args.lines is not None else 10
    follow = hostvisor_pb2.FollowAgentLogsRequest(agent_id=args.agent, tail_lines=tail)
    # Ctrl-C (or SIGTERM) ends the stream through a cancel scope, never as an exception
    # raised wherever the program happens to be (inside the asyncio loop, say).
    failure: Exception | None = None
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_on_signal, signals, nursery.cancel_scope)
            try:
                await _follow(client, follow)
            except (RemoteError, TransportError, ControlError) as exc:
                failure = exc  # raised outside the nursery, as itself
            nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return 0


async def _follow(client: Client, request: hostvisor_pb2.FollowAgentLogsRequest) -> None:
    async with client.channel.stream(HostvisorService.FollowAgentLogs, request) as chunks:
        async for chunk in chunks:
            if chunk.dropped_lines:
                print(
                    f"[hostvisor: {chunk.dropped_lines} line(s) skipped: read too slowly]",
                    file=sys.stderr,
                )
            for line in chunk.lines:
                client.out.write(line + "\n")
            client.out.flush()
    raise ControlError(EXIT_NO_DAEMON, "the log stream ended: the daemon stopped")


async def _cancel_on_signal(signals: AsyncIterator[int], scope: trio.CancelScope) -> None:
    async for _ in signals:
        scope.cancel()
        return


async def _metrics(client: Client, args: argparse.Namespace) -> int:
    request = daemon_pb2.AgentMetricsRequest(
        agent_id=args.agent, duration_seconds=max(1, round(args.since))
    )
    reply = await client.channel.call(
        DaemonService.GetAgentMetrics, request, timeout_s=client.timeout_s
    )
    points = list(reply.data_points)
    if args.json:
        fields = (
            "timestamp",
            "cpu",
            "memory_rss",
            "memory_vms",
            "disk_read_bytes",
            "disk_write_bytes",
            "open_files",
        )
        documents = [{name: getattr(p, name) for name in fields} for p in points]
        client.print(json.dumps(documents, indent=2))
        return 0
    if not points:
        client.print(f"no samples of {args.agent} in that time (is it running?)")
        return 0
    rows = [["TIME", "CPU%", "RSS", "VMS", "READ", "WRITTEN", "FILES"]]
    for p in points:
        when = datetime.datetime.fromtimestamp(p.timestamp).strftime("%H:%M:%S")
        rows.append(
            [
                when,
                f"{p.cpu:.1f}",
                size(p.memory_rss),
                size(p.memory_vms),
                size(p.disk_read_bytes),
                size(p.disk_write_bytes),
                str(p.open_files),
            ]
        )
    client.print(table(rows))
    return 0


async def _show_config(client: Client, args: argparse.Namespace) -> int:
    document: dict[str, Any] = {}
    for section in (args.section,) if args.section else ("daemon", "agent"):
        request = daemon_pb2.ConfigRequest(config_type=section)
        reply = await client.channel.call(
            DaemonService.GetConfig, request, timeout_s=client.timeout_s
        )
        document.update(json.loads(reply.config_data))
    client.print(json.dumps(document, indent=2))
    return 0
