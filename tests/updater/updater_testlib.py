"""Test helpers for the updater tests: keys, keyrings and signed statements."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from hypothesis import HealthCheck, settings

from updater import DownloadLimits, _crypto
from updater._envelope import Keyring, Statement, TrustedKey
from updater.sign import sign_statement

PROPS = settings(
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
PLATFORM = "linux-x86_64"
#: Limits for end-to-end tests on 127.0.0.1: small artifacts, generous timeouts.
TEST_LIMITS = DownloadLimits(
    connect_timeout_s=5,
    deadline_s=20,
    min_rate_bps=1,
    rate_window_s=5,
    max_bytes=1 << 20,
    disk_reserve_bytes=0,
)
NOW = 1_900_000_000  # 2030-03-17: a fixed "now" for pure tests
FAR = NOW + 10 * 365 * 86400


@dataclass
class Signer:
    """Private keys by name, their keyring records, and the keyring trusting them."""

    pems: dict[str, bytes]
    records: dict[str, TrustedKey]
    keyring: Keyring
    extra: dict[str, object] = field(default_factory=dict)

    def envelope(self, statement: Statement, *names: str) -> bytes:
        return sign_statement(statement, [self.pems[n] for n in (names or ("release",))])

    def statement(self, data: bytes, **overrides: object) -> Statement:
        base = Statement(
            component="agent",
            platform=PLATFORM,
            version="1.1.0",
            counter=11,
            sha256=hashlib.sha256(data).hexdigest(),
            length=len(data),
            expires=FAR,
        )
        return replace(base, **overrides)  # type: ignore[arg-type]


def _record(name: str, alg: str, pem: bytes, components: set[str]) -> TrustedKey:
    return _crypto.public_key_record(
        alg, _crypto.public_der_of(pem), frozenset(components), legacy=alg.endswith("v15-sha256")
    )


_CACHE: dict[str, Signer] = {}


def make_signer() -> Signer:
    """Keys: ``root`` (keyring role), ``release`` (ed25519, agent+daemon), ``ecdsa``,
    ``rsapss`` (agent), ``agentonly`` (agent), ``legacy`` (RSA, agent); ``stranger`` is
    not in the keyring. Generated once per process (RSA generation is slow)."""
    if "s" in _CACHE:
        return _CACHE["s"]
    specs = {
        "root": ("ed25519", {"keyring"}),
        "release": ("ed25519", {"agent", "daemon"}),
        "ecdsa": ("ecdsa-p256-sha256", {"agent", "daemon"}),
        "rsapss": ("rsa-pss-sha256", {"agent"}),
        "agentonly": ("ed25519", {"agent"}),
        "legacy": ("rsa-pkcs1v15-sha256", {"agent"}),
        "stranger": ("ed25519", {"agent", "daemon"}),
    }
    pems = {name: _crypto.generate_private_key(alg) for name, (alg, _) in specs.items()}
    records = {name: _record(name, alg, pems[name], comps) for name, (alg, comps) in specs.items()}
    trusted = [rec for name, rec in records.items() if name != "stranger"]
    signer = Signer(pems, records, Keyring.of(trusted, version=1, expires=FAR))
    _CACHE["s"] = signer
    return signer


def random_bytes(n: int) -> bytes:
    return os.urandom(n)


# --- a real-process AgentControl -------------------------------------------------------

import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402

import trio  # noqa: E402


def agent_script(
    version: str,
    *,
    ready: bool = True,
    exit_code: int | None = None,
    reports: str | None = None,
    version_check: str = "ok",
    busy: bool = False,
) -> bytes:
    """A tiny agent: prints its version, then READY (unless told not to), then runs; or
    fails at once with ``exit_code``.

    With ``--version`` it prints ``agent version <reports or version>`` and exits 0; a
    ``version_check`` of ``hang``, ``fail`` (exit 3), ``spew`` (endless output) or
    ``orphan`` (leaves a background child holding its stdout) misbehaves instead.
    ``busy`` makes it burn a CPU instead of sleeping once ready.
    """
    answer = {
        "ok": f'echo "agent version {reports or version}"; exit 0',
        "hang": "exec sleep 600",
        "fail": 'echo "unknown flag --version" >&2; exit 3',
        "spew": "exec yes 'agent version'",
        "orphan": f'sleep 600 & echo "agent version {reports or version}"; exit 0',
    }[version_check]
    lines = ["#!/bin/sh", f'if [ "$1" = "--version" ]; then {answer}; fi']
    lines.append(f'echo "agent {version} starting"')
    if exit_code is not None:
        lines += [f'echo "agent {version}: fatal: bad config key" >&2', f"exit {exit_code}"]
    else:
        if ready:
            lines.append("echo READY")
        lines.append("while :; do :; done" if busy else "exec sleep 600")
    return ("\n".join(lines) + "\n").encode()


class _Run:
    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.ready = trio.Event()
        self.exited = trio.Event()
        self.status: int | None = None


class UnmarkedProcessControl:
    """:class:`updater.AgentControl` over real child processes (one per agent id), without
    the optional :class:`updater.AgentLogMarks` (see :class:`ProcessControl`).

    An agent is ready when it prints a line ``READY``; its stdout and stderr are kept as its
    log. Reader tasks live in the nursery given at construction. Like a supervisor, it knows
    only the process of each agent's latest start; ``live`` also finds earlier ones still
    running (duplicates a correct updater and daemon never leave).
    """

    def __init__(self, nursery: trio.Nursery, binaries: dict[str, Path]) -> None:
        self.nursery = nursery
        self.binaries = binaries
        self.runs: dict[str, _Run] = {}
        self.every_run: dict[str, list[_Run]] = {agent: [] for agent in binaries}
        self.logs: dict[str, list[str]] = {agent: [] for agent in binaries}
        self.problems: dict[str, str] = {}
        self.calls: list[str] = []
        self.held: set[str] = set()

    @contextlib.contextmanager
    def hold(self, agent_id: str) -> Iterator[None]:
        """Record the hold; this control never restarts anything by itself anyway."""
        self.calls.append(f"hold {agent_id}")
        self.held.add(agent_id)
        try:
            yield
        finally:
            self.held.discard(agent_id)
            self.calls.append(f"release {agent_id}")

    async def start_agent(self, agent_id: str) -> None:
        self.calls.append(f"start {agent_id}")
        process = await trio.lowlevel.open_process(
            [str(self.binaries[agent_id])], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        run = _Run(process)
        self.runs[agent_id] = run
        self.every_run[agent_id].append(run)
        self.nursery.start_soon(self._read, agent_id, run)

    async def _read(self, agent_id: str, run: _Run) -> None:
        assert run.process.stdout is not None
        buffer = b""
        while data := await run.process.stdout.receive_some(4096):
            buffer += data
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                text = line.decode(errors="replace")
                self.logs[agent_id].append(text)
                if text == "READY":
                    run.ready.set()
        run.status = await run.process.wait()
        await run.process.stdout.aclose()
        run.exited.set()

    async def stop_agent(self, agent_id: str) -> None:
        self.calls.append(f"stop {agent_id}")
        run = self.runs.get(agent_id)
        if run is not None:
            await self._stop(run)

    @staticmethod
    async def _stop(run: _Run) -> None:
        if run.exited.is_set():
            return
        run.process.terminate()
        with trio.move_on_after(5):
            await run.exited.wait()
            return
        run.process.kill()
        await run.exited.wait()

    def live(self, agent_id: str) -> list[_Run]:
        """Every process of the agent still running, whichever start made it."""
        return [run for run in self.every_run[agent_id] if not run.exited.is_set()]

    async def stop_every(self, agent_id: str) -> None:
        """Stop every live process of the agent (a daemon that must not adopt any)."""
        for run in self.live(agent_id):
            await self._stop(run)

    async def wait_ready(self, agent_id: str) -> None:
        await self.runs[agent_id].ready.wait()

    async def wait_exit(self, agent_id: str) -> int | None:
        run = self.runs[agent_id]
        await run.exited.wait()
        return run.status

    def health_problem(self, agent_id: str) -> str | None:
        return self.problems.get(agent_id)

    def tail(self, agent_id: str, lines: int) -> list[str]:
        return self.logs[agent_id][-lines:]

    def running(self, agent_id: str) -> bool:
        run = self.runs.get(agent_id)
        return run is not None and not run.exited.is_set()

    async def running_version(self, agent_id: str) -> str:
        """Wait until the agent is ready and return the version its last start printed."""
        with trio.fail_after(5):
            await self.wait_ready(agent_id)
        starts = [line for line in self.logs[agent_id] if line.endswith(" starting")]
        return starts[-1].split()[1]

    async def stop_all(self) -> None:
        for agent_id in self.every_run:
            await self.stop_every(agent_id)


class ProcessControl(UnmarkedProcessControl):
    """:class:`UnmarkedProcessControl` with :class:`updater.AgentLogMarks`: a mark is the
    number of log lines so far."""

    def log_mark(self, agent_id: str) -> int:
        return len(self.logs[agent_id])

    def tail_since(self, agent_id: str, mark: int, lines: int) -> list[str]:
        return self.logs[agent_id][mark:][-lines:]
