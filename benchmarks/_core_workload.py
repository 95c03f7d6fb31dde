"""The workload of ``bench_core.py``, shared with its in-process helper.

Standard library only: the in-process helper (``_core_inproc.py``) imports this module
and ``supervisor`` and nothing else, so that its RSS is the supervision core's.

Every agent is the same tiny shell child::

    bash -c 'echo "$$ $EPOCHREALTIME" >> STARTS/aI; exec -a MARKER sleep 100000'

It appends its PID and start time (bash's ``$EPOCHREALTIME``: no fork) to its own
"starts" file, then becomes ``sleep`` with ``argv[0]`` set to the run's unique marker, so
every process of a run can be found by its command line (the marker is the name of the
run's temporary directory, which also appears in the command line before the ``exec``).
"""

from __future__ import annotations

from typing import Any

BASH = "/usr/bin/bash"

#: Timings shared by both supervisors' configurations.
START_SECONDS = 1  # ours: start_seconds; supervisord: startsecs
STOP_TIMEOUT = 5  # ours: stop_timeout; supervisord: stopwaitsecs
RESET_AFTER = 2  # ours: restart.reset_after (supervisord has no equivalent)


def agent_ids(n: int) -> list[str]:
    """The ids of the ``n`` agents: a0, a1, ..."""
    return [f"a{i}" for i in range(n)]


def child_script(starts_dir: str, agent_id: str, marker: str) -> str:
    """The ``bash -c`` script of one agent (no quote characters in the paths)."""
    return f'echo "$$ $EPOCHREALTIME" >> {starts_dir}/{agent_id}; exec -a {marker} sleep 100000'


def ours_document(work_dir: str, starts_dir: str, n: int, marker: str) -> dict[str, Any]:
    """Our daemon's configuration document (written as YAML, or given to parse_config)."""
    return {
        "daemon": {
            "work_dir": work_dir,
            "stop_agents_on_exit": True,
            "log_level": "info",
            # The supervision core's figures: no gRPC listener, no control socket (grpc and
            # trio-asyncio are then never imported).
            "grpc_port": 0,
            "control_socket": False,
        },
        "agent_defaults": {
            "start_seconds": f"{START_SECONDS}s",
            "stop_timeout": f"{STOP_TIMEOUT}s",
            "health_check": {"heartbeat_timeout": "0s", "cpu_threshold": 0, "memory_threshold": 0},
            "restart": {
                "policy": "always",
                "max_retries": -1,
                "backoff_base": "1s",
                "backoff_max": "10s",
                "reset_after": f"{RESET_AFTER}s",
            },
            "log": {"max_bytes": "1MiB", "backups": 1},
        },
        "agents": [
            {
                "id": agent,
                "binary_path": BASH,
                "args": ["-c", child_script(starts_dir, agent, marker)],
            }
            for agent in agent_ids(n)
        ],
    }


def supervisord_config(root: str, starts_dir: str, n: int, marker: str) -> str:
    """supervisord's configuration (INI), equivalent to :func:`ours_document`.

    supervisord splits ``command`` with shlex, so the single-quoted script reaches bash
    unchanged; it expands ``%(...)s``, so the script must not contain ``%``.
    """
    lines = [
        "[unix_http_server]",
        f"file={root}/supervisor.sock",
        "",
        "[supervisord]",
        f"logfile={root}/supervisord.log",
        f"pidfile={root}/supervisord.pid",
        f"childlogdir={root}/logs",
        "logfile_maxbytes=1MB",
        "logfile_backups=1",
        "loglevel=info",
        "nodaemon=true",
        "minfds=4096",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl=unix://{root}/supervisor.sock",
        "",
        # One group: supervisord stops its groups one per turn of its 1 s main loop (300
        # programs in their own groups take ~300 s to stop), the processes of a group
        # all at once. Grouping changes nothing else (start, restart, memory).
        "[group:agents]",
        f"programs={','.join(agent_ids(n))}",
        "",
    ]
    for agent in agent_ids(n):
        script = child_script(starts_dir, agent, marker)
        assert "%" not in script, script  # supervisord would expand it
        assert "'" not in script, script  # it is single-quoted below
        lines += [
            f"[program:{agent}]",
            f"command={BASH} -c '{script}'",
            "autostart=true",
            "autorestart=true",
            f"startsecs={START_SECONDS}",
            "startretries=1000000",
            "stopsignal=TERM",
            f"stopwaitsecs={STOP_TIMEOUT}",
            "stopasgroup=true",
            "killasgroup=true",
            f"stdout_logfile={root}/logs/{agent}.log",
            "stdout_logfile_maxbytes=1MB",
            "stdout_logfile_backups=1",
            "redirect_stderr=true",
            "",
        ]
    return "\n".join(lines)


def circus_config(root: str, starts_dir: str, n: int, marker: str) -> str:
    """Circus's configuration (INI), as close to :func:`ours_document` as Circus allows.

    One watcher per agent, one process each, respawned for ever (``max_retry = -1``),
    stopped with SIGTERM, then SIGKILL after 5 s (``graceful_timeout``), children too
    (``stop_children``). Circus has no start confirmation and no backoff; it notices
    deaths and respawns on its periodic check (``check_delay``, 1 s, its default): it
    does not handle SIGCHLD. Output goes to a rotated file (1 MiB x 1) through Circus's
    own pipes (stdout and stderr to two files: two streams on one file would rotate it
    twice). No statistics process, no HTTP interface, no plugins.
    """
    lines = [
        "[circus]",
        "check_delay = 1",
        f"endpoint = ipc://{root}/circus-endpoint.sock",
        f"pubsub_endpoint = ipc://{root}/circus-pubsub.sock",
        "statsd = False",
        "httpd = False",
        f"logoutput = {root}/circus.log",
        "loglevel = INFO",
        "",
    ]
    for agent in agent_ids(n):
        script = child_script(starts_dir, agent, marker)
        assert "'" not in script, script  # it is single-quoted below
        lines += [
            f"[watcher:{agent}]",
            f"cmd = {BASH}",
            f"args = -c '{script}'",
            "numprocesses = 1",
            "copy_env = True",
            "respawn = True",
            "max_retry = -1",
            "stop_signal = TERM",
            f"graceful_timeout = {STOP_TIMEOUT}",
            "stop_children = True",
            "use_sockets = False",
            "stdout_stream.class = FileStream",
            f"stdout_stream.filename = {root}/logs/{agent}.log",
            "stdout_stream.max_bytes = 1048576",
            "stdout_stream.backup_count = 1",
            "stderr_stream.class = FileStream",
            f"stderr_stream.filename = {root}/logs/{agent}.err.log",
            "stderr_stream.max_bytes = 1048576",
            "stderr_stream.backup_count = 1",
            "",
        ]
    return "\n".join(lines)


def read_vmrss(pid: int | str = "self") -> int:
    """The resident set size of a process in bytes, from /proc/PID/status (VmRSS)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")
