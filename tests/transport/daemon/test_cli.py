"""The command line: check-config, and the daemon (adoption, reload, exit behaviour)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.supervisor.helpers import alive, kill_all
from transport.daemon._cli import EXIT_CODES, example_config_path, main


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll a condition on real processes and files; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


def agent(agent_id: str, starts: Path) -> dict[str, object]:
    return {
        "id": agent_id,
        "binary_path": "/bin/sh",
        "args": ["-c", f'echo "$$" >> {starts / agent_id}; exec sleep 1000'],
        "start_seconds": "0s",
        "stop_timeout": "5s",
        "health_check": {"heartbeat_timeout": 0},
    }


def write_config(path: Path, work: Path, agents: list[dict[str, object]], **daemon: object) -> None:
    document = {"daemon": {"work_dir": str(work), **daemon}, "agents": agents}
    path.write_text(yaml.safe_dump(document))


def test_check_config_ok_and_example(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """check-config accepts the bundled example and says how many agents it has."""
    assert main(["check-config", example_config_path(), "--work-dir", str(tmp_path)]) == 0
    assert "OK (3 agent(s), 3 enabled)" in capsys.readouterr().out


def test_check_config_reports_every_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """check-config prints every error with its path and exits 3."""
    config = tmp_path / "daemon.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "daemon": {"work_dir": str(tmp_path)},
                "agnets": [],
                "agents": [
                    {"id": "a", "binary_path": "/bin/sh", "restart": {"policy": "sometimes"}},
                    {"id": "a", "binary_path": "/nonexistent/agent", "stop_timeout": "30x"},
                ],
            }
        )
    )
    assert main(["check-config", str(config)]) == 3
    err = capsys.readouterr().err
    assert "agnets: unknown key (did you mean 'agents'?)" in err
    assert (
        "agents[0].restart.policy: expected one of always, on-failure, never; got 'sometimes'"
    ) in err
    assert "agents[1].id: duplicate id 'a' (first at agents[0])" in err
    assert "agents[1].stop_timeout: expected a duration" in err
    assert "agents[1].binary_path" in err and "/nonexistent/agent" in err


def test_check_config_unreadable_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A missing or unparsable file exits 3 with the reason."""
    assert main(["check-config", str(tmp_path / "missing.yaml")]) == 3
    broken = tmp_path / "broken.yaml"
    broken.write_text("agents: [\n")
    assert main(["check-config", str(broken)]) == 3
    assert "D1001" in capsys.readouterr().err


def test_usage_errors_exit_2() -> None:
    """A bad command line exits 2, as documented."""
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2
    assert EXIT_CODES[2] == "bad command line"
    with pytest.raises(SystemExit) as info:
        main(["update", "request.json"])  # --config is required
    assert info.value.code == 2


def test_exit_codes_are_documented() -> None:
    """Every exit code is in the module docstring's table and in --help's epilog."""
    import transport.daemon._cli as cli

    assert set(EXIT_CODES) == {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 75}
    for code in EXIT_CODES:
        assert f"\n{code} " in (cli.__doc__ or ""), code


class Daemon:
    """``hostvisor run`` as a real process."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log = log
        with log.open("ab") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "transport.daemon", "run", "--config", str(config)],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )

    def text(self) -> str:
        return self.log.read_text()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=60)


@pytest.fixture
def pids_to_clean() -> Iterator[list[int]]:
    pids: list[int] = []
    yield pids
    kill_all(pids)


def test_daemon_adopts_after_sigkill_reloads_and_leaves_agents(
    tmp_path: Path, pids_to_clean: list[int]
) -> None:
    """Kill -9 the daemon: agents live on; the next daemon adopts them, reloads on SIGHUP,
    and on SIGTERM leaves them running."""
    work, starts = tmp_path / "work", tmp_path / "starts"
    starts.mkdir()
    config = tmp_path / "daemon.yaml"
    write_config(config, work, [agent("a", starts), agent("b", starts)])

    first = Daemon(config, tmp_path / "daemon1.log")
    wait_until(
        lambda: len(lines(starts / "a")) == 1 and len(lines(starts / "b")) == 1,
        "both agents to start",
    )
    pid_a, pid_b = int(lines(starts / "a")[0]), int(lines(starts / "b")[0])
    pids_to_clean += [pid_a, pid_b]
    wait_until(
        lambda: (work / "state.json").exists() and str(pid_b) in (work / "state.json").read_text(),
        "state to be persisted",
    )
    first.stop(signal.SIGKILL)
    assert alive(pid_a) and alive(pid_b)

    # Meanwhile the config changes: b gets new args, c is added.
    b2 = agent("b", starts)
    b2["args"] = ["-c", f'echo "$$" >> {starts / "b"}; echo v2; exec sleep 1000']
    write_config(config, work, [agent("a", starts), b2, agent("c", starts)])
    second = Daemon(config, tmp_path / "daemon2.log")
    try:
        wait_until(
            lambda: len(lines(starts / "c")) == 1 and len(lines(starts / "b")) == 2,
            "c to start and b to be restarted with its new spec",
        )
        pids_to_clean += [int(lines(starts / "b")[1]), int(lines(starts / "c")[0])]
        assert lines(starts / "a") == [str(pid_a)]  # adopted, never started twice
        assert f"adopted running pid {pid_a}" in second.text()
        assert not alive(pid_b)  # the old b was stopped, not duplicated

        # SIGHUP: c is removed from the file, a is unchanged.
        write_config(config, work, [agent("a", starts), b2])
        second.proc.send_signal(signal.SIGHUP)
        pid_c = int(lines(starts / "c")[0])
        wait_until(lambda: not alive(pid_c), "c to be stopped by the reload")
        wait_until(lambda: "1 removed" in second.text(), "the reload summary")
        assert "2 unchanged" in second.text() and alive(pid_a)

        # A second daemon on the same work dir is refused with exit code 4.
        third = Daemon(config, tmp_path / "daemon3.log")
        assert third.proc.wait(timeout=60) == 4
        assert "daemon.lock" in third.text()
    finally:
        code = second.stop(signal.SIGTERM)
    assert code == 0
    assert alive(pid_a)  # daemon mode: the exit leaves agents running
    state = json.loads((work / "state.json").read_text())
    assert state["agents"]["a"]["process"]["pid"] == pid_a


def test_daemon_stops_agents_on_exit_when_configured(
    tmp_path: Path, pids_to_clean: list[int]
) -> None:
    """With daemon.stop_agents_on_exit, SIGTERM stops every agent before the daemon exits."""
    work, starts = tmp_path / "work", tmp_path / "starts"
    starts.mkdir()
    config = tmp_path / "daemon.yaml"
    log_file = tmp_path / "var" / "daemon-own.log"
    write_config(
        config, work, [agent("a", starts)], stop_agents_on_exit=True, log_file=str(log_file)
    )
    daemon = Daemon(config, tmp_path / "daemon.log")
    wait_until(lambda: len(lines(starts / "a")) == 1, "the agent to start")
    pid = int(lines(starts / "a")[0])
    pids_to_clean.append(pid)
    # SIGUSR1 (what `update` sends) is harmless to a daemon without an update block.
    daemon.proc.send_signal(signal.SIGUSR1)
    assert daemon.stop(signal.SIGTERM) == 0
    assert not alive(pid)
    assert "received SIGTERM; exiting" in log_file.read_text()  # daemon.log_file is used


def test_example_runs_from_a_fresh_directory(tmp_path: Path) -> None:
    """`run --example` works with nothing but this package, and SIGINT ends it cleanly."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "transport.daemon", "run", "--example"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    logs = tmp_path / ".hostvisor-example" / "logs"
    try:
        wait_until(lambda: "tick 1" in "".join(lines(logs / "ticker.log")), "the ticker agent")
    finally:
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "received SIGINT; exiting" in err
    assert os.path.exists(tmp_path / ".hostvisor-example" / "state.json")


def test_a_refused_second_daemon_leaves_the_first_ones_pid_file(
    tmp_path: Path, pids_to_clean: list[int]
) -> None:
    """Exit 4 for the second daemon, and the running daemon's pid_file stays (defect 2)."""
    work, starts = tmp_path / "work", tmp_path / "starts"
    starts.mkdir()
    config = tmp_path / "daemon.yaml"
    pid_file = tmp_path / "run" / "hostvisor.pid"
    write_config(config, work, [agent("a", starts)], pid_file=str(pid_file))
    first = Daemon(config, tmp_path / "daemon1.log")
    try:
        wait_until(lambda: len(lines(starts / "a")) == 1, "the agent to start")
        pids_to_clean.append(int(lines(starts / "a")[0]))
        assert pid_file.read_text() == f"{first.proc.pid}\n"
        second = Daemon(config, tmp_path / "daemon2.log")
        assert second.proc.wait(timeout=60) == 4
        assert pid_file.read_text() == f"{first.proc.pid}\n"
    finally:
        assert first.stop() == 0
    assert not pid_file.exists()  # the daemon that wrote it removes it


def test_sighup_applies_daemon_settings_it_can_and_names_the_others(
    tmp_path: Path, pids_to_clean: list[int]
) -> None:
    """stop_agents_on_exit applies on SIGHUP; work_dir is named as needing a restart
    (defect 5); start-up, spawn and stop are logged when they happen (defect 6)."""
    work, starts = tmp_path / "work", tmp_path / "starts"
    starts.mkdir()
    config = tmp_path / "daemon.yaml"
    write_config(config, work, [agent("a", starts)])
    daemon = Daemon(config, tmp_path / "daemon.log")
    try:
        wait_until(lambda: len(lines(starts / "a")) == 1, "the agent to start")
        pid = int(lines(starts / "a")[0])
        pids_to_clean.append(pid)
        # The spawned PID is logged (the child may write its line before the daemon logs).
        wait_until(lambda: f"pid {pid}" in daemon.text(), "the spawned PID in the log")
        text = daemon.text()
        assert f"work dir {work}" in text and f"configuration {config}" in text
        document = yaml.safe_load(config.read_text())
        document["daemon"]["stop_agents_on_exit"] = True
        document["daemon"]["pid_file"] = str(tmp_path / "new.pid")
        config.write_text(yaml.safe_dump(document))
        daemon.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "stop_agents_on_exit is now true" in daemon.text(), "the reload")
        assert "daemon.pid_file changed; it takes effect at the next start" in daemon.text()
    finally:
        assert daemon.stop() == 0
    assert not alive(pid)  # the reloaded setting was applied at exit
    text = daemon.text()
    assert text.index("running -> stopping") < text.index("stopping -> stopped")


def test_version_and_help_name_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    """--version exists; --help names hostvisor, not python -m supervisor (defect 8)."""
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("hostvisor ")
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: hostvisor") and "python -m supervisor" not in out


@pytest.mark.parametrize("timeout", ["-5", "0", "nan", "inf", "soon"])
def test_update_refuses_a_nonsense_timeout(
    capsys: pytest.CaptureFixture[str], timeout: str
) -> None:
    """``update --timeout -5`` is a usage error with a reason, not a silent wait (defect 7)."""
    with pytest.raises(SystemExit) as info:
        main(["update", "--config", "x.yaml", "--timeout", timeout, "r.json"])
    assert info.value.code == 2
    assert "--timeout" in capsys.readouterr().err
