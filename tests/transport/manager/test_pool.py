"""The Manager's daemon pool against the daemon's real gRPC services, over a real
supervisor with real agent processes (tests/transport/daemon/grpc_helpers.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing

from supervisor import AgentSpec, AgentState, HealthCheckSpec, Supervisor, open_supervisor
from tests.supervisor.helpers import free_port, shell_agent, wait_for_file, wait_until
from tests.transport.daemon.grpc_helpers import SAFETY_S, make_pki, serving
from transport import (
    CallContext,
    ClientTls,
    DaemonService,
    Listener,
    Operation,
    RemoteError,
    ServerTls,
    StatusCode,
    daemon_pb2,
    open_grpc_loop,
    serve_grpc,
    unary_route,
)
from transport.daemon._config import DaemonConfig, DaemonSpec
from transport.daemon._service import Backend, DaemonServiceHandlers
from transport.daemon._streams import HostvisorHandlers
from transport.manager._errors import DaemonUnreachableError, ManagerError
from transport.manager._model import Node
from transport.manager._pool import DaemonPool

TICKER = 'i=0; while :; do i=$((i+1)); echo "line $i"; sleep 0.05; done'
SLEEPER = "exec sleep 1000"
SLOW_STOP = "trap 'sleep 2; exit 0' TERM; echo up; while :; do sleep 0.1; done"


def node(address: str, node_id: str = "n1", number: int = 1) -> Node:
    """A node whose daemon listens on ``address`` (``host:port``)."""
    host, _, port = address.rpartition(":")
    return Node(id=number, node_id=node_id, ip=host, grpc_port=int(port))


@asynccontextmanager
async def running(pool: DaemonPool) -> AsyncIterator[DaemonPool]:
    """The pool running in a nursery of its own, cancelled after the block; every channel
    is closed and no task is left when it returns."""
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        yield pool
        nursery.cancel_scope.cancel()
    assert pool.statistics().open_channels == 0


@asynccontextmanager
async def daemon_at(
    supervisor: Supervisor, address: str, tls: ServerTls | None = None
) -> AsyncIterator[str]:
    """The daemon's services over ``supervisor`` on ``address``; its bound address."""
    config = DaemonConfig(daemon=DaemonSpec(work_dir="/nonexistent"), agents=())
    backend = Backend(supervisor, lambda: config)
    routes = DaemonServiceHandlers(backend).routes() + HostvisorHandlers(backend).routes()
    async with trio.open_nursery() as nursery:
        (bound,) = await nursery.start(partial(serve_grpc, routes, [Listener(address, tls)]))
        yield bound
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def supervised(tmp: Path, agents: Sequence[AgentSpec]) -> AsyncIterator[Supervisor]:
    """A supervisor running ``agents`` inside a gRPC loop (the pool's calls need it)."""
    with trio.fail_after(SAFETY_S):
        async with open_supervisor(agents, work_dir=str(tmp / "work")) as sup, open_grpc_loop():
            yield sup


async def trapping(supervisor: Supervisor) -> None:
    """Wait until the SLOW_STOP agent ``s`` handles TERM (it says "up" once it does)."""
    await wait_for_file(Path(supervisor.status("s").log_file), "up")


async def test_pool_calls_every_method(tmp_path: Path, sock_dir: Path) -> None:
    """ListAgents, OperateAgent stop and start, GetAgentMetrics and GetAgentLogs through one
    channel, as transport records; the daemon's refusals pass through unchanged."""
    agents = [
        shell_agent("a1", SLEEPER, tmp_path),
        shell_agent(
            "t",
            TICKER,
            tmp_path,
            health_check=HealthCheckSpec(interval_s=0.05, heartbeat_timeout_s=0),
        ),
    ]
    async with serving(tmp_path, sock_dir, agents) as s, running(DaemonPool()) as pool:
        n = node(s.addresses[0])
        sup = s.supervisor
        await sup.wait_state("a1", AgentState.RUNNING)
        listed = await pool.list_agents(n)
        assert [a.id for a in listed] == ["a1", "t"]
        assert listed[0].pid == sup.status("a1").pid and listed[0].status is not None

        await pool.operate(n, "a1", Operation.STOP)
        assert sup.status("a1").status is AgentState.STOPPED
        await pool.operate(n, "a1", Operation.START)
        assert sup.status("a1").status in (AgentState.STARTING, AgentState.RUNNING)

        await wait_until(lambda: len(sup.metrics("t", 3600)) >= 2)
        points = await pool.agent_metrics(n, "t", 3600)
        assert len(points) >= 2 and points[-1].memory_rss > 0

        await wait_for_file(Path(sup.status("t").log_file), "line 20")
        lines = await pool.agent_logs(n, "t", 5)
        numbers = [int(line.split()[1]) for line in lines]
        assert numbers == list(range(numbers[0], numbers[0] + 5))

        for call, status in (
            (pool.operate(n, "nope", Operation.STOP), StatusCode.NOT_FOUND),
            (pool.agent_metrics(n, "nope", 60), StatusCode.NOT_FOUND),
            (pool.agent_logs(n, "t", 5000), StatusCode.INVALID_ARGUMENT),
            (pool.operate(n, "", Operation.START), StatusCode.INVALID_ARGUMENT),
            (
                pool.push_update(n, "agent", "1.2.0", "http://127.0.0.1/x", "ab" * 32, "sig"),
                StatusCode.FAILED_PRECONDITION,
            ),
        ):
            with pytest.raises(RemoteError) as caught:
                await call
            assert caught.value.status is status, caught.value
        stats = pool.statistics()
        assert (stats.opened, stats.open_channels, stats.evictions) == (1, 1, 0)
        assert stats.calls == 10 and stats.failures == 5 and stats.unreachable == 0


async def test_concurrent_first_calls_share_one_channel_per_node(tmp_path: Path) -> None:
    """Calls racing to a node the pool has no channel for yet open exactly one."""
    async with (
        supervised(tmp_path, [shell_agent("a1", SLEEPER, tmp_path)]) as sup,
        daemon_at(sup, "127.0.0.1:0") as t1,
        daemon_at(sup, "127.0.0.1:0") as t2,
        running(DaemonPool()) as pool,
    ):
        answers: list[int] = []

        async def list_on(n: Node) -> None:
            answers.append(len(await pool.list_agents(n)))

        async with trio.open_nursery() as nursery:
            for number in range(20):
                nursery.start_soon(list_on, node(t1 if number % 2 else t2, f"n{number % 2}"))
        assert answers == [1] * 20
        stats = pool.statistics()
        assert (stats.opened, stats.open_channels, stats.calls) == (2, 2, 20)


async def test_an_unreachable_daemon_fails_at_once(tmp_path: Path) -> None:
    """A port nobody listens on: DaemonUnreachableError naming the node and the target,
    the RemoteError as its cause; the channel is evicted. A node without an address is
    unreachable too."""
    address = f"127.0.0.1:{free_port()}"
    async with open_grpc_loop(), running(DaemonPool()) as pool:
        with trio.fail_after(SAFETY_S), pytest.raises(DaemonUnreachableError) as caught:
            await pool.list_agents(node(address, "n9"))
        assert "n9" in str(caught.value) and address in str(caught.value)
        cause = caught.value.__cause__
        assert isinstance(cause, RemoteError) and cause.status is StatusCode.UNAVAILABLE
        await wait_until(lambda: pool.statistics().open_channels == 0)
        assert pool.targets() == []
        with pytest.raises(DaemonUnreachableError, match="no usable address"):
            await pool.agent_logs(Node(id=2, node_id="n2", ip=""), "a1", 10)
        stats = pool.statistics()
        assert (stats.calls, stats.failures, stats.unreachable, stats.evictions) == (2, 2, 2, 1)


async def test_a_daemon_too_slow_to_answer_is_unreachable(tmp_path: Path) -> None:
    """A daemon that never answers: DEADLINE_EXCEEDED after the pool's timeout becomes
    DaemonUnreachableError, and the channel is evicted."""

    async def hang(request: object, ctx: CallContext) -> daemon_pb2.ListAgentsResponse:
        await trio.sleep_forever()

    route = unary_route(DaemonService.ListAgents, hang)
    async with open_grpc_loop(), trio.open_nursery() as nursery:
        serve = partial(serve_grpc, [route], [Listener("127.0.0.1:0")], grace_s=0)
        (address,) = await nursery.start(serve)
        async with running(DaemonPool(timeout_s=0.2)) as pool:
            with pytest.raises(DaemonUnreachableError) as caught:
                await pool.list_agents(node(address))
            cause = caught.value.__cause__
            assert isinstance(cause, RemoteError) and cause.status is StatusCode.DEADLINE_EXCEEDED
            assert pool.targets() == [] and pool.statistics().evictions == 1
        nursery.cancel_scope.cancel()


async def test_the_cap_closes_the_least_recently_used_idle_channel(tmp_path: Path) -> None:
    """Cap 2, three daemons: the oldest channel is closed, and reopened when used again. A
    channel in use is never closed: the cap waits for its call to end."""
    agents = [shell_agent("a1", SLEEPER, tmp_path), shell_agent("s", SLOW_STOP, tmp_path)]
    async with (
        supervised(tmp_path, agents) as sup,
        daemon_at(sup, "127.0.0.1:0") as t1,
        daemon_at(sup, "127.0.0.1:0") as t2,
        daemon_at(sup, "127.0.0.1:0") as t3,
    ):
        n1, n2, n3 = node(t1, "n1", 1), node(t2, "n2", 2), node(t3, "n3", 3)
        async with running(DaemonPool(max_channels=2)) as pool:
            for n in (n1, n2, n3):
                assert [a.id for a in await pool.list_agents(n)] == ["a1", "s"]
            assert pool.targets() == [t2, t3]
            await wait_until(lambda: pool.statistics().open_channels == 2)
            await pool.list_agents(n1)
            assert pool.targets() == [t3, t1]
            await wait_until(lambda: pool.statistics().open_channels == 2)
            stats = pool.statistics()
            assert (stats.opened, stats.lru_closes, stats.evictions) == (4, 2, 0)

        await trapping(sup)
        async with running(DaemonPool(max_channels=1)) as pool, trio.open_nursery() as calls:
            calls.start_soon(pool.operate, n1, "s", Operation.STOP)
            await wait_until(lambda: sup.status("s").status is AgentState.STOPPING)
            await pool.list_agents(n2)  # n1 is busy: n2 goes once its own call ended
            assert pool.targets() == [t1]
            await pool.list_agents(n3)
            assert pool.targets() == [t1]
        assert sup.status("s").status is AgentState.STOPPED
        stats = pool.statistics()
        assert (stats.opened, stats.lru_closes, stats.failures) == (3, 2, 0)


async def test_a_restarted_daemon_is_reached_again(tmp_path: Path) -> None:
    """The daemon stops: the next call is unreachable and evicts the channel; once the
    daemon is back on the same port, the next call opens a new channel and succeeds."""
    address = f"127.0.0.1:{free_port()}"
    n = node(address)
    async with (
        supervised(tmp_path, [shell_agent("a1", SLEEPER, tmp_path)]) as sup,
        running(DaemonPool()) as pool,
    ):
        async with daemon_at(sup, address):
            assert len(await pool.list_agents(n)) == 1
        with pytest.raises(DaemonUnreachableError):
            await pool.list_agents(n)
        assert pool.targets() == []
        async with daemon_at(sup, address):
            assert len(await pool.list_agents(n)) == 1
            assert pool.targets() == [address]
        stats = pool.statistics()
        assert (stats.opened, stats.evictions, stats.unreachable) == (2, 1, 1)


async def test_mutual_tls_with_the_managers_certificate(tmp_path: Path) -> None:
    """A daemon requiring client certificates answers a pool that presents the Manager's;
    without one, with a stranger's, or in plaintext the daemon is unreachable."""
    pki = make_pki(tmp_path / "pki")
    ca = pki.ca.read_bytes()
    server = ServerTls(pki.server_cert.read_bytes(), pki.server_key.read_bytes(), client_ca=ca)
    manager = ClientTls(
        server_ca=ca,
        cert_chain=pki.client_cert.read_bytes(),
        private_key=pki.client_key.read_bytes(),
    )
    refused: list[ClientTls | None] = [
        ClientTls(server_ca=ca),
        ClientTls(
            server_ca=ca,
            cert_chain=pki.stranger_cert.read_bytes(),
            private_key=pki.stranger_key.read_bytes(),
        ),
        None,
    ]
    async with (
        supervised(tmp_path, [shell_agent("a1", SLEEPER, tmp_path)]) as sup,
        daemon_at(sup, "127.0.0.1:0", server) as address,
    ):
        async with running(DaemonPool(manager)) as pool:
            assert [a.id for a in await pool.list_agents(node(address))] == ["a1"]
        for tls in refused:
            async with running(DaemonPool(tls, timeout_s=10)) as pool:
                with pytest.raises(DaemonUnreachableError):
                    await pool.list_agents(node(address))


async def test_calls_outside_run_and_a_call_in_flight_when_it_stops(
    tmp_path: Path, sock_dir: Path
) -> None:
    """Before run and after it: ManagerError. A call still in flight when run is cancelled
    ends with ManagerError too; no channel and no task is left; a pool runs once."""
    pool = DaemonPool()
    agents = [shell_agent("s", SLOW_STOP, tmp_path)]
    async with serving(tmp_path, sock_dir, agents) as s:
        n = node(s.addresses[0])
        with pytest.raises(ManagerError, match="not running"):
            await pool.list_agents(n)
        await trapping(s.supervisor)
        errors: list[BaseException] = []

        async def stop() -> None:
            try:
                await pool.operate(n, "s", Operation.STOP)
            except ManagerError as exc:
                errors.append(exc)

        async with trio.open_nursery() as calls:
            async with trio.open_nursery() as owner:
                await owner.start(pool.run)
                assert len(await pool.list_agents(n)) == 1
                calls.start_soon(stop)
                await wait_until(lambda: s.supervisor.status("s").status is AgentState.STOPPING)
                owner.cancel_scope.cancel()
            assert pool.statistics().open_channels == 0
            assert not owner.child_tasks
        assert [type(e) for e in errors] == [ManagerError], errors
        assert "stopped" in str(errors[0])
        with pytest.raises(ManagerError, match="not running"):
            await pool.list_agents(n)
        with pytest.raises(RuntimeError):
            await pool.run()


@pytest.fixture
def clock() -> trio.testing.MockClock:
    """Trio's clock at the real rate, that a test may move ahead."""
    return trio.testing.MockClock(rate=1.0)


async def test_idle_channels_close(
    tmp_path: Path, sock_dir: Path, clock: trio.testing.MockClock
) -> None:
    """A channel unused for idle_s is closed; the next call opens another."""
    agents = [shell_agent("a1", SLEEPER, tmp_path)]
    async with serving(tmp_path, sock_dir, agents) as s, running(DaemonPool(idle_s=5)) as pool:
        n = node(s.addresses[0])
        await pool.list_agents(n)
        clock.jump(4)
        await trio.testing.wait_all_tasks_blocked()
        assert pool.targets() == [s.addresses[0]]
        clock.jump(2)
        await wait_until(lambda: pool.statistics().open_channels == 0)
        assert pool.targets() == [] and pool.statistics().idle_closes == 1
        await pool.list_agents(n)
        assert pool.statistics().opened == 2
