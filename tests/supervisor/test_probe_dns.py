"""Name resolution inside a probe round's deadline, with Trio's custom resolver hook.

Every test runs under virtual time (``autojump_clock``): a resolver that sleeps for a
name is a slow DNS server, and the round's duration is asserted exactly. The probed
ports are real listening sockets on 127.0.0.1 (the kernel completes a loopback connect
at once, so no real time is waited for).
"""

from __future__ import annotations

import math
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import trio
import trio.testing

from supervisor._health._probes import Probe, probe_many


class SlowResolver(trio.abc.HostnameResolver):
    """Resolves every name to 127.0.0.1 after the name's delay (``inf``: never answers).

    Names in ``failing`` fail at once as unknown names. Each lookup's start time is kept.
    """

    def __init__(self, delays: dict[str, float], failing: frozenset[str] = frozenset()) -> None:
        self.delays = delays
        self.failing = failing
        self.asked: list[tuple[str, float]] = []

    async def getaddrinfo(
        self,
        host: bytes | None,
        port: bytes | str | int | None,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> Any:
        name = (host or b"").decode()
        self.asked.append((name, trio.current_time()))
        if name in self.failing:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        delay = self.delays.get(name, 0.0)
        if math.isinf(delay):
            await trio.sleep_forever()
        await trio.sleep(delay)
        return socket.getaddrinfo("127.0.0.1", port, family, type, proto, flags)

    async def getnameinfo(
        self, sockaddr: tuple[str, int] | tuple[str, int, int, int], flags: int
    ) -> Any:
        raise NotImplementedError


@pytest.fixture
def port() -> Iterator[int]:
    """A listening TCP port on 127.0.0.1; connections wait in its backlog."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield listener.getsockname()[1]


def use(resolver: SlowResolver) -> SlowResolver:
    trio.socket.set_custom_hostname_resolver(resolver)  # for this trio.run only
    return resolver


async def timed_round(probes: list[Probe]) -> tuple[list[str | None], float]:
    """The verdicts of one round and its duration in virtual seconds."""
    start = trio.current_time()
    with trio.fail_after(600):  # a stalled round fails the test instead of hanging it
        verdicts = await probe_many(probes)
    return verdicts, trio.current_time() - start


async def test_a_slow_name_fails_only_the_probes_that_need_it(
    autojump_clock: trio.testing.MockClock, port: int
) -> None:
    """Probes of other names and of IP literals succeed; the round ends at its last deadline."""
    resolver = use(SlowResolver({"slow.test": 10.0}))
    verdicts, took = await timed_round(
        [
            Probe(endpoint=("slow.test", port), timeout_s=2),
            Probe(endpoint=("127.0.0.1", port), timeout_s=2),
            Probe(endpoint=("fast.test", port), timeout_s=2),
            Probe(url=f"http://slow.test:{port}/", timeout_s=3),
        ]
    )
    assert verdicts == [
        "DNS: resolution timed out after 2s (slow.test)",
        None,
        None,
        "DNS: resolution timed out after 3s (slow.test)",
    ]
    assert took == 3.0
    # Each distinct name and port is asked once (the http and TCP probes of slow.test
    # share one lookup), and every name at the start of the round.
    assert sorted(resolver.asked) == [("fast.test", 0.0), ("slow.test", 0.0)]


async def test_a_name_resolved_in_time_is_probed(
    autojump_clock: trio.testing.MockClock, port: int
) -> None:
    """A slow answer within the deadline still counts; probes with a shorter one fail."""
    use(SlowResolver({"slow.test": 4.0}))
    verdicts, took = await timed_round(
        [
            Probe(endpoint=("slow.test", port), timeout_s=3),
            Probe(endpoint=("slow.test", port), timeout_s=5),
        ]
    )
    assert verdicts == ["DNS: resolution timed out after 3s (slow.test)", None]
    assert took == 4.0


async def test_names_are_resolved_side_by_side(
    autojump_clock: trio.testing.MockClock, port: int
) -> None:
    """Regression: three names of 3 s each fit a 5 s deadline (one after another took 9 s)."""
    resolver = use(SlowResolver({"a.test": 3.0, "b.test": 3.0, "c.test": 3.0}))
    verdicts, took = await timed_round(
        [Probe(endpoint=(name, port), timeout_s=5) for name in ("a.test", "b.test", "c.test")]
    )
    assert verdicts == [None, None, None]
    assert took == 3.0
    assert [at for _, at in resolver.asked] == [0.0, 0.0, 0.0]


async def test_a_resolver_that_never_answers_cannot_stall_the_round(
    autojump_clock: trio.testing.MockClock, port: int
) -> None:
    """Regression: resolution used to run before any deadline applied, so this never ended."""
    use(SlowResolver({"hung.test": math.inf}))
    verdicts, took = await timed_round(
        [
            Probe(endpoint=("hung.test", port), timeout_s=1),
            Probe(url=f"http://hung.test:{port}/", timeout_s=1),
            Probe(endpoint=("127.0.0.1", port), timeout_s=1),
        ]
    )
    assert verdicts == [
        "DNS: resolution timed out after 1s (hung.test)",
        "DNS: resolution timed out after 1s (hung.test)",
        None,
    ]
    assert took == 1.0


async def test_https_probes_include_resolution_in_their_deadline(
    autojump_clock: trio.testing.MockClock, port: int
) -> None:
    """An https probe (its own task in the round) is bounded the same way."""
    use(SlowResolver({"hung.test": math.inf}))
    verdicts, took = await timed_round(
        [
            Probe(url="https://hung.test/", timeout_s=2),
            Probe(endpoint=("127.0.0.1", port), timeout_s=1),
        ]
    )
    assert verdicts == ["timeout after 2s", None]
    assert took == 2.0


async def test_an_unknown_name_fails_at_once(
    autojump_clock: trio.testing.MockClock, port: int
) -> None:
    """A resolver's refusal is reported as such, without waiting for the deadline."""
    use(SlowResolver({}, failing=frozenset({"nosuch.test"})))
    verdicts, took = await timed_round(
        [
            Probe(endpoint=("nosuch.test", port), timeout_s=5),
            Probe(endpoint=("fast.test", port), timeout_s=5),
        ]
    )
    assert verdicts == ["DNS: name or service not known (nosuch.test)", None]
    assert took == 0.0


async def test_ip_literals_never_ask_the_resolver(
    autojump_clock: trio.testing.MockClock, port: int
) -> None:
    """IPv4 and IPv6 literals are resolved in place (no thread, no resolver)."""
    resolver = use(SlowResolver({}))
    verdicts, _ = await timed_round([Probe(endpoint=("127.0.0.1", port), timeout_s=1)])
    assert verdicts == [None]
    await timed_round([Probe(endpoint=("::1", port), timeout_s=1)])
    assert resolver.asked == []
