"""The control commands end to end: `hostvisor run` as a real process, and `hostvisor
status|start|stop|restart|logs|metrics|config` as real processes talking to it over its
control socket (and over TCP with mutual TLS)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.supervisor.helpers import free_port
from tests.transport.daemon.daemon_helpers import HOSTVISOR, SLEEPER, Host, agent, cli
from tests.transport.daemon.grpc_helpers import Pki, make_pki
from tests.transport.daemon.test_cli import wait_until
from transport.daemon._server import control_socket_path


def status_json(host: Host, *agents: str) -> dict[str, dict[str, Any]]:
    done = host.ctl("status", "--json", *agents)
    assert done.returncode == 0, done.stderr
    return {doc["id"]: doc for doc in json.loads(done.stdout)}


def test_status_start_stop_restart_logs_metrics_config(host: Host) -> None:
    """Every control command against one running daemon, with its output and exit code."""
    flag = host.tmp / "may-run"
    host.write(
        [
            agent("web", 'i=0; while :; do i=$((i+1)); echo "tick $i"; sleep 0.05; done'),
            agent("db", SLEEPER, type="custom"),
            agent("off", SLEEPER, enabled=False),
            agent("flaky", f"test -e {flag} || exit 3; {SLEEPER}", restart={"policy": "never"}),
        ],
        stop_agents_on_exit=True,
    )
    host.start()
    host.wait_serving()
    wait_until(lambda: status_json(host)["flaky"]["status"] == "failed", "flaky to fail")
    wait_until(lambda: status_json(host)["web"]["status"] == "running", "web to run")

    table = host.ctl("status")
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split() == [
        "ID",
        "TYPE",
        "STATE",
        "PID",
        "UPTIME",
        "RESTARTS",
        "HEALTH",
        "LAST",
        "ERROR",
    ]
    cells = {row.split()[0]: row.split() for row in rows}
    assert list(cells) == ["web", "db", "off", "flaky"]
    assert cells["web"][1:3] == ["custom", "running"] and cells["web"][3].isdigit()
    assert cells["off"][2:5] == ["disabled", "-", "-"]
    assert cells["flaky"][2] == "failed" and "exit" in " ".join(cells["flaky"][7:])

    docs = status_json(host, "db")
    assert list(docs) == ["db"] and docs["db"]["pid"] > 0 and docs["db"]["uptime_s"] >= 0

    unknown = host.ctl("status", "nope")
    assert unknown.returncode == 8 and "unknown agent 'nope'" in unknown.stderr
    assert unknown.stderr.count("\n") == 1, "one line, no traceback"

    stop = host.ctl("stop", "db", "web")
    assert stop.returncode == 0, stop.stderr
    assert stop.stdout.splitlines() == [
        "db: stop done (stopped, pid 0)",
        "web: stop done (stopped, pid 0)",
    ]
    flag.touch()
    start = host.ctl("start", "--all")  # enabled ones: the failed one is cleared
    assert start.returncode == 0, start.stderr
    assert [line.split(":")[0] for line in start.stdout.splitlines()] == ["web", "db", "flaky"]
    assert status_json(host)["flaky"]["status"] in ("starting", "running")
    assert status_json(host)["off"]["status"] == "stopped"
    old = status_json(host)["db"]["pid"]
    restart = host.ctl("restart", "db")
    assert restart.returncode == 0 and restart.stdout.startswith("db: restart done (")
    assert status_json(host)["db"]["pid"] not in (0, old)

    bad = host.ctl("stop", "db", "nope")
    assert bad.returncode == 8 and "nope" in bad.stderr and bad.stdout == ""
    assert host.ctl("stop").returncode == 2  # neither agents nor --all

    logs = host.ctl("logs", "web", "-n", "3")
    assert logs.returncode == 0
    numbers = [int(line.split()[1]) for line in logs.stdout.splitlines()]
    assert len(numbers) == 3 and numbers == sorted(numbers)
    assert host.ctl("logs", "web", "-n", "0").returncode == 2

    wait_until(lambda: len(json.loads(metrics_json(host))) >= 2, "two resource samples of web")
    points = json.loads(metrics_json(host))
    assert set(points[0]) == {
        "timestamp",
        "cpu",
        "memory_rss",
        "memory_vms",
        "disk_read_bytes",
        "disk_write_bytes",
        "open_files",
    }
    assert all(p["memory_rss"] > 0 for p in points)
    table = host.ctl("metrics", "web", "--since", "10m")
    assert table.returncode == 0 and table.stdout.split()[:7] == [
        "TIME",
        "CPU%",
        "RSS",
        "VMS",
        "READ",
        "WRITTEN",
        "FILES",
    ]
    assert host.ctl("metrics", "web", "--since", "soon").returncode == 2

    config = host.ctl("config")
    assert config.returncode == 0
    document = json.loads(config.stdout)
    assert document["daemon"]["grpc_port"] == host.port
    assert [a["id"] for a in document["agents"]] == ["web", "db", "off", "flaky"]
    only = json.loads(host.ctl("config", "agent").stdout)
    assert list(only) == ["agents"]


def metrics_json(host: Host) -> str:
    done = host.ctl("metrics", "web", "--json")
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_logs_follow_prints_new_lines_until_interrupted(host: Host) -> None:
    """`logs -f` prints the last lines, then new ones as they come; Ctrl-C ends it with 0."""
    host.write([agent("web", 'i=0; while :; do i=$((i+1)); echo "tick $i"; sleep 0.05; done')])
    host.start()
    host.wait_serving()
    follow = subprocess.Popen(
        [*HOSTVISOR, "logs", "web", "-f", "-n", "2", "--config", str(host.config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert follow.stdout is not None
        numbers = [int(follow.stdout.readline().split()[1]) for _ in range(40)]
        assert numbers == list(range(numbers[0], numbers[0] + 40)), "in order, none lost"
        follow.send_signal(signal.SIGINT)
        _, err = follow.communicate(timeout=30)
    finally:
        follow.kill()
    assert follow.returncode == 0, err
    assert "Traceback" not in err


def test_no_daemon_bad_config_and_usage(tmp_path: Path, work: Path) -> None:
    """A daemon that is not running is one line and exit 5; an invalid configuration 3; a
    bad combination of options 2."""
    config = tmp_path / "daemon.yaml"
    config.write_text(yaml.safe_dump({"daemon": {"work_dir": str(work)}, "agents": []}))
    done = cli("status", "--config", str(config))
    assert done.returncode == 5
    assert done.stderr == f"hostvisor status: no daemon is running for {work}\n"
    assert cli("status", "--work-dir", str(work)).returncode == 5
    config.write_text("daemon: {grpc_port: many}\nagents: []\n")
    done = cli("stop", "--all", "--config", str(config))
    assert done.returncode == 3 and "daemon.grpc_port" in done.stderr
    assert cli("status", "--config", str(tmp_path / "missing.yaml")).returncode == 3
    done = cli("status", "--tls-ca", "x.pem")
    assert done.returncode == 2 and "--address" in done.stderr
    done = cli("status", "--address", "nowhere")
    assert done.returncode == 2 and "HOST:PORT" in done.stderr
    port = free_port()
    done = cli("status", "--address", f"127.0.0.1:{port}")
    assert done.returncode == 5 and f"cannot reach 127.0.0.1:{port}" in done.stderr


def test_control_socket_is_private_and_tcp_port_survives_being_busy(host: Host) -> None:
    """The socket is 0600 in a 0700 directory (made so if it was not). A TCP port that is
    taken does not stop the daemon: the control socket serves, the error is logged, and the
    port is bound once free."""
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", host.port))
    blocker.listen()
    (host.work / "control").mkdir()
    (host.work / "control").chmod(0o755)  # left open by someone: tightened, not trusted
    host.write([agent("a", SLEEPER)])
    daemon = host.start()
    try:
        host.wait_serving()
        path = Path(control_socket_path(str(host.work)))
        assert path.parent == host.work / "control"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        wait_until(lambda: "tries again in 1 s" in daemon.text(), "the bind error")
        assert host.ctl("status").returncode == 0
        assert f"cannot listen on '127.0.0.1:{host.port}'" in daemon.text()
    finally:
        blocker.close()
    wait_until(lambda: f"gRPC: serving on 127.0.0.1:{host.port}" in daemon.text(), "the retry")
    done = cli("status", "--json", "--address", f"127.0.0.1:{host.port}")
    assert done.returncode == 0 and json.loads(done.stdout)[0]["id"] == "a"
    assert daemon.stop() == 0
    assert not path.exists()


def test_long_work_dir_puts_the_socket_under_tmp(host: Host, tmp_path: Path) -> None:
    """A work directory too deep for a Unix socket path: the socket goes to a private
    directory under /tmp, and the command line finds it there."""
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    host.work = deep
    host.write([agent("a", SLEEPER)])
    daemon = host.start()
    path = Path(control_socket_path(str(deep)))
    try:
        host.wait_serving()
        assert str(path).startswith(f"/tmp/hostvisor-{os.geteuid()}-")
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        done = host.ctl("status", "--json")
        assert done.returncode == 0 and json.loads(done.stdout)[0]["id"] == "a"
        assert cli("status", "--work-dir", str(deep)).returncode == 0
    finally:
        daemon.stop()
        shutil.rmtree(path.parent, ignore_errors=True)


def tls_config(pki: Pki) -> dict[str, str]:
    return {
        "cert_file": str(pki.server_cert),
        "key_file": str(pki.server_key),
        "ca_file": str(pki.ca),
    }


def test_remote_with_mutual_tls(host: Host, tmp_path: Path) -> None:
    """Over TCP with daemon.tls: a client with a certificate of the CA is served; one with
    none, or with another CA's, is refused; plaintext too."""
    pki = make_pki(tmp_path / "pki")
    host.write([agent("a", SLEEPER)], tls=tls_config(pki), grpc_host="0.0.0.0")
    daemon = host.start()
    wait_until(lambda: "(mutual TLS)" in daemon.text(), "the TLS listener")
    address = f"127.0.0.1:{host.port}"
    base = ("--address", address, "--tls-ca", str(pki.ca), "--tls-server-name", "localhost")
    good = cli(
        "status",
        "--json",
        *base,
        "--tls-cert",
        str(pki.client_cert),
        "--tls-key",
        str(pki.client_key),
    )
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)[0]["id"] == "a"
    stranger = ("--tls-cert", str(pki.stranger_cert), "--tls-key", str(pki.stranger_key))
    for refused in (cli("status", *base), cli("status", *base, *stranger)):
        assert refused.returncode == 5, refused.stderr
        assert refused.stderr.startswith("hostvisor status: ") and refused.stderr.count("\n") == 1
        assert "refused our TLS certificate" in refused.stderr
    plain = cli("status", "--address", address)
    assert plain.returncode == 5
    assert cli("status", *base, "--tls-cert", str(pki.client_cert)).returncode == 2
    assert host.ctl("status").returncode == 0  # the control socket has no TLS


def test_grpc_configuration_is_checked(tmp_path: Path, work: Path) -> None:
    """Without TLS a non-loopback grpc_host is refused unless grpc_allow_insecure (then a
    warning); TLS needs its three files, each readable PEM; `run` refuses what
    check-config refuses."""
    config = tmp_path / "daemon.yaml"

    def check(**daemon: Any) -> subprocess.CompletedProcess[str]:
        document = {"daemon": {"work_dir": str(work), **daemon}, "agents": []}
        config.write_text(yaml.safe_dump(document))
        return cli("check-config", str(config))

    done = check(grpc_host="0.0.0.0")
    assert done.returncode == 3
    assert "daemon.grpc_host: '0.0.0.0' is not a loopback address" in done.stderr
    done = check(grpc_host="0.0.0.0", grpc_allow_insecure=True)
    assert done.returncode == 0 and "warning: daemon.grpc_host '0.0.0.0'" in done.stderr
    assert check(grpc_host="0.0.0.0", grpc_port=0).returncode == 0  # nothing listens
    assert check(grpc_host="::1").returncode == 0
    pki = make_pki(tmp_path / "pki")
    done = check(tls={"cert_file": str(pki.server_cert)})
    assert done.returncode == 3
    assert "daemon.tls.key_file: required with daemon.tls.cert_file" in done.stderr
    assert "daemon.tls.ca_file: required" in done.stderr
    files = tls_config(pki)
    done = check(tls={**files, "key_file": str(tmp_path / "missing.key")})
    assert done.returncode == 3 and "daemon.tls.key_file: not found" in done.stderr
    done = check(tls={**files, "ca_file": str(pki.server_key)})
    assert (
        done.returncode == 3
        and "daemon.tls.ca_file: not a PEM file with a certificate" in done.stderr
    )
    assert check(tls=files, grpc_host="0.0.0.0").returncode == 0
    check(tls={**files, "cert_file": str(tmp_path / "gone.pem")})
    run = subprocess.run(
        [sys.executable, "-m", "transport.daemon", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 3 and "daemon.tls.cert_file: not found" in run.stderr


def test_a_daemon_without_grpc_never_imports_it(tmp_path: Path, work: Path) -> None:
    """grpc_port 0 and no control socket: grpc, trio-asyncio and protobuf stay unloaded."""
    config = tmp_path / "daemon.yaml"
    document = {
        "daemon": {"work_dir": str(work), "grpc_port": 0, "control_socket": False},
        "agents": [agent("a", SLEEPER)],
    }
    config.write_text(yaml.safe_dump(document))
    script = (
        "import sys, trio\n"
        "from transport.daemon import Daemon, load_config\n"
        f"config = load_config({str(config)!r})\n"
        "daemon = Daemon(config, None, 'x')\n"
        "assert daemon._grpc(None, None) is None\n"
        "heavy = ('grpc', 'trio_asyncio', 'google.protobuf')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
