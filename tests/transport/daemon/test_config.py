"""Unit tests of the configuration loader and validator (supervisor._config)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest
import yaml

from supervisor import (
    AgentSpec,
    AgentType,
    ConfigError,
    HealthCheckSpec,
    LogSpec,
    RestartPolicy,
    RestartSpec,
)
from tests.transport.daemon.config_helpers import SEED_YAML, agent, issues_of, only_issue
from transport.daemon._config import (
    LEGACY_IGNORED_WARNING,
    LEGACY_WARNING,
    DaemonConfig as Config,
    DaemonSpec,
    parse_config,
)

# Defaults.


def test_empty_document_is_a_daemon_with_nothing_to_supervise() -> None:
    config = parse_config({})
    assert config == Config()
    assert config.daemon == DaemonSpec(work_dir="/var/lib/daemon")


def test_minimal_agent_gets_every_default() -> None:
    (spec,) = parse_config({"agents": [agent()]}).agents
    assert spec == AgentSpec(
        id="web",
        binary_path="/usr/bin/web",
        type=AgentType.CUSTOM,
        args=(),
        name="web",
        config_file=None,
        work_dir="/var/lib/daemon/agents/web",
        socket_path=None,
        enabled=True,
        env={},
        stop_signal=signal.SIGTERM,
        stop_timeout_s=30.0,
        start_seconds_s=1.0,
        restart=RestartSpec(RestartPolicy.ALWAYS, 10, 10.0, 60.0, 300.0),
        health_check=HealthCheckSpec(30.0, 90.0, 50.0, 524_288_000, 60.0, None),
        log=LogSpec(None, 50 * 1024 * 1024, 10),
    )


def test_agent_work_dir_defaults_under_the_daemon_work_dir() -> None:
    config = parse_config({"daemon": {"work_dir": "/srv/d"}, "agents": [agent()]})
    assert config.agents[0].work_dir == "/srv/d/agents/web"


def test_daemon_section() -> None:
    daemon = {
        "id": "node-1",
        "log_level": "debug",
        "log_file": "/var/log/d.log",
        "pid_file": "/run/d.pid",
        "work_dir": "/srv/d/",
        "stop_agents_on_exit": True,
    }
    assert parse_config({"daemon": daemon}).daemon == DaemonSpec(
        "node-1", "debug", "/var/log/d.log", "/run/d.pid", "/srv/d", True
    )


@pytest.mark.parametrize(
    ("written", "level"), [("warn", "warning"), ("WARNING", "warning"), ("Info", "info")]
)
def test_log_level_is_normalised(written: str, level: str) -> None:
    assert parse_config({"daemon": {"log_level": written}}).daemon.log_level == level


def test_seed_example_parses() -> None:
    config = parse_config(yaml.safe_load(SEED_YAML))
    filebeat, exporter = config.agents
    assert filebeat.type is AgentType.FILEBEAT
    assert filebeat.name == "Filebeat Log Collector"
    assert filebeat.socket_path is None
    assert filebeat.args[:2] == ("-c", "/etc/filebeat/filebeat.yml")
    assert exporter.config_file is None
    assert exporter.health_check.heartbeat_timeout_s == 0
    assert exporter.health_check.http_endpoint == "http://localhost:9100/metrics"
    assert exporter.health_check.memory_threshold == 104_857_600
    # node_exporter has no args in this copy: the seed's defaults are generated.
    assert exporter.args == (
        "--web.listen-address=:9100",
        "--path.procfs=/proc",
        "--path.sysfs=/sys",
    )
    assert config.manager["tls"]["cert_file"] == "/etc/daemon/certs/client.crt"
    assert config.collectors == {"cpu": {"enabled": True, "interval": "60s"}}
    assert config.update["max_backups"] == 5


@pytest.mark.parametrize(
    ("agent_type", "config_file", "args"),
    [
        ("filebeat", "/etc/fb.yml", ("-c", "/etc/fb.yml", "-path.home", "/w")),
        ("filebeat", None, ("-path.home", "/w")),
        ("telegraf", "/etc/t.conf", ("-config", "/etc/t.conf")),
        ("custom", "/etc/c.conf", ()),
    ],
)
def test_args_default_from_the_type(
    agent_type: str, config_file: str | None, args: tuple[str, ...]
) -> None:
    entry = agent(type=agent_type, work_dir="/w", config_file=config_file)
    assert parse_config({"agents": [entry]}).agents[0].args == args


def test_explicit_args_replace_the_default_ones() -> None:
    entry = agent(type="telegraf", config_file="/etc/t.conf", args=["--once"])
    assert parse_config({"agents": [entry]}).agents[0].args == ("--once",)
    entry["args"] = []
    assert parse_config({"agents": [entry]}).agents[0].args == ()


def test_empty_strings_for_optional_paths_mean_none() -> None:
    entry = agent(config_file="", socket_path="", work_dir="", log={"file": ""})
    entry["health_check"] = {"http_endpoint": ""}
    (spec,) = parse_config({"agents": [entry], "daemon": {"log_file": "", "pid_file": ""}}).agents
    assert (spec.config_file, spec.socket_path, spec.log.file) == (None, None, None)
    assert spec.health_check.http_endpoint is None
    assert spec.work_dir == "/var/lib/daemon/agents/web"


def test_null_values_mean_the_default() -> None:
    text = "daemon:\nagents:\n  - id: web\n    binary_path: /bin/web\n    restart:\n"
    document = yaml.safe_load(text + "    stop_timeout:\n")
    (spec,) = parse_config(document).agents
    assert spec.restart == RestartSpec()
    assert spec.stop_timeout_s == 30.0


def test_agents_may_be_empty() -> None:
    assert parse_config({"agents": []}).agents == ()
    assert parse_config({"agents": None}).agents == ()


# Each field.


def test_durations_sizes_and_numbers() -> None:
    entry = agent(
        stop_timeout="1m30s",
        start_seconds=2,
        health_check={
            "interval": "500ms",
            "heartbeat_timeout": 0,
            "cpu_threshold": 150,
            "memory_threshold": "512MiB",
            "threshold_duration": "1.5s",
        },
        restart={"max_retries": -1, "backoff_base": "1s", "backoff_max": "1h", "reset_after": "1d"},
        log={"max_bytes": "10MB", "backups": 0},
    )
    (spec,) = parse_config({"agents": [entry]}).agents
    assert (spec.stop_timeout_s, spec.start_seconds_s) == (90.0, 2.0)
    assert spec.health_check == HealthCheckSpec(0.5, 0.0, 150.0, 512 * 1024**2, 1.5, None)
    assert spec.restart == RestartSpec(RestartPolicy.ALWAYS, -1, 1.0, 3600.0, 86400.0)
    assert spec.log == LogSpec(None, 10_000_000, 0)


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("TERM", signal.SIGTERM),
        ("SIGTERM", signal.SIGTERM),
        ("int", signal.SIGINT),
        ("HUP", signal.SIGHUP),
        ("KILL", signal.SIGKILL),
        ("QUIT", signal.SIGQUIT),
        ("USR1", signal.SIGUSR1),
        (9, signal.SIGKILL),
        ("2", signal.SIGINT),
    ],
)
def test_stop_signal(written: object, expected: signal.Signals) -> None:
    (spec,) = parse_config({"agents": [agent(stop_signal=written)]}).agents
    assert spec.stop_signal is expected


@pytest.mark.parametrize("written", ["NOPE", 9999, True, [15], ""])
def test_bad_stop_signal(written: object) -> None:
    message = only_issue({"agents": [agent(stop_signal=written)]})
    assert message.startswith(
        "agents[0].stop_signal: expected a signal name such as TERM, INT or HUP, or a number; got "
    )


def test_env_values_are_strings_and_numbers() -> None:
    entry = agent(env={"A": "x", "PORT": 9100, "RATIO": 0.5})
    (spec,) = parse_config({"agents": [entry]}).agents
    assert dict(spec.env) == {"A": "x", "PORT": "9100", "RATIO": "0.5"}


def test_bad_env_reports_each_variable() -> None:
    entry = agent(env={"OK": "1", "FLAG": True, "LIST": [1], "A=B": "x"})
    assert issues_of({"agents": [entry]}) == [
        "agents[0].env.FLAG: expected a string or a number, without NUL; got True",
        "agents[0].env.LIST: expected a string or a number, without NUL; got [1]",
        "agents[0].env.A=B: expected a variable name: non-empty, without '=' or NUL; got 'A=B'",
    ]


def test_env_must_be_a_mapping() -> None:
    assert only_issue({"agents": [agent(env=["A=1"])]}) == (
        "agents[0].env: expected a mapping; got ['A=1']"
    )


@pytest.mark.parametrize(
    "endpoint", ["http://localhost:9100/metrics", "https://example.com", "http://[::1]:80/x"]
)
def test_http_endpoint(endpoint: str) -> None:
    (spec,) = parse_config({"agents": [agent(health_check={"http_endpoint": endpoint})]}).agents
    assert spec.health_check.http_endpoint == endpoint


@pytest.mark.parametrize("endpoint", ["ftp://x", "http://", "localhost:9100", "http://h:99999", 5])
def test_bad_http_endpoint(endpoint: object) -> None:
    message = only_issue({"agents": [agent(health_check={"http_endpoint": endpoint})]})
    assert "expected" in message
    assert message.startswith("agents[0].health_check.http_endpoint: expected ")


@pytest.mark.parametrize("agent_id", ["a", "web-1", "Web_2.prod", "9", "x" * 64])
def test_valid_ids(agent_id: str) -> None:
    assert parse_config({"agents": [agent(id=agent_id)]}).agents[0].id == agent_id


@pytest.mark.parametrize("agent_id", ["", "-web", ".hidden", "a b", "a/b", "x1" * 33, "é"])
def test_bad_ids(agent_id: str) -> None:
    assert only_issue({"agents": [agent(id=agent_id)]}).startswith(
        "agents[0].id: expected an id of 1 to 64 ASCII letters, digits, '.', '_' or '-', "
        f"starting with a letter or digit; got {agent_id!r}"[:150]
    )


# Message formats.


def test_bad_enum_message() -> None:
    document = {"agents": [agent(id="a"), agent(id="b", restart={"policy": "sometimes"})]}
    assert only_issue(document) == (
        "agents[1].restart.policy: expected one of always, on-failure, never; got 'sometimes'"
    )


def test_bad_type_enum_message() -> None:
    assert only_issue({"agents": [agent(type="apache")]}) == (
        "agents[0].type: expected one of filebeat, telegraf, node_exporter, custom; got 'apache'"
    )


def test_bad_duration_message() -> None:
    assert only_issue({"agents": [agent(stop_timeout="30x")]}) == (
        "agents[0].stop_timeout: expected a duration such as 30s, 5m or 1h30m, or seconds; "
        "got '30x'"
    )


def test_negative_duration_message() -> None:
    assert only_issue({"agents": [agent(restart={"reset_after": -5})]}) == (
        "agents[0].restart.reset_after: expected a duration such as 30s, 5m or 1h30m, "
        "or seconds; got -5"
    )


def test_zero_health_check_interval_is_refused() -> None:
    assert only_issue({"agents": [agent(health_check={"interval": "0s"})]}) == (
        "agents[0].health_check.interval: must be longer than 0s; got '0s'"
    )


def test_duplicate_id_message() -> None:
    entries = [agent(id="db"), agent(id="web"), agent(id="cache"), agent(id="web")]
    assert only_issue({"agents": entries}) == (
        "agents[3].id: duplicate id 'web' (first at agents[1])"
    )


def test_unknown_key_with_suggestion() -> None:
    assert only_issue({"agents": [agent(health_check={"intervall": "5s"})]}) == (
        "agents[0].health_check.intervall: unknown key (did you mean 'interval'?)"
    )


def test_unknown_key_without_suggestion() -> None:
    assert only_issue({"agents": [agent(colour="blue")]}) == "agents[0].colour: unknown key"


def test_unknown_top_level_key() -> None:
    assert only_issue({"agnets": []}) == "agnets: unknown key (did you mean 'agents'?)"
    assert issues_of({"zzz": 1, 3: 4}) == ["zzz: unknown key", "3: unknown key"]


def test_unknown_daemon_key() -> None:
    assert only_issue({"daemon": {"workdir": "/x"}}) == (
        "daemon.workdir: unknown key (did you mean 'work_dir'?)"
    )


@pytest.mark.parametrize("value", ["yes", "true", 1, 0, "no"])
def test_booleans_must_be_booleans(value: object) -> None:
    assert only_issue({"agents": [agent(enabled=value)]}) == (
        f"agents[0].enabled: expected a boolean; got {value!r}"
    )


def test_args_must_be_a_list_of_strings() -> None:
    assert only_issue({"agents": [agent(args="-c /etc/x")]}) == (
        "agents[0].args: expected a list of strings; got '-c /etc/x'"
    )
    assert issues_of({"agents": [agent(args=["--port", 9100, "-v", None])]}) == [
        "agents[0].args[1]: expected a string; got 9100",
        "agents[0].args[3]: expected a string; got None",
    ]


def test_nul_characters_are_refused() -> None:
    assert only_issue({"agents": [agent(args=["a\0b"])]}) == (
        "agents[0].args[0]: must not contain a NUL character; got 'a\\x00b'"
    )


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"daemon": ["x"]}, "daemon: expected a mapping; got ['x']"),
        ({"agents": [agent(health_check=5)]}, "agents[0].health_check: expected a mapping; got 5"),
        ({"agents": {"web": {}}}, "agents: expected a list of agents; got {'web': {}}"),
        ({"agents": ["web"]}, "agents[0]: expected a mapping; got 'web'"),
        ({"manager": "m:9090"}, "manager: expected a mapping; got 'm:9090'"),
        ({"collectors": []}, "collectors: expected a mapping; got []"),
        ({"agent_defaults": 1}, "agent_defaults: expected a mapping; got 1"),
    ],
)
def test_mappings_must_be_mappings(document: dict[str, Any], message: str) -> None:
    assert only_issue(document) == message


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("restart", {"max_retries": -2}, "restart.max_retries: expected an integer >= -1; got -2"),
        (
            "restart",
            {"max_retries": 1.5},
            "restart.max_retries: expected an integer >= -1; got 1.5",
        ),
        (
            "restart",
            {"max_retries": True},
            "restart.max_retries: expected an integer >= -1; got True",
        ),
        ("log", {"backups": -1}, "log.backups: expected an integer >= 0; got -1"),
        (
            "health_check",
            {"cpu_threshold": -1},
            "health_check.cpu_threshold: expected a number >= 0; got -1",
        ),
        (
            "health_check",
            {"cpu_threshold": float("nan")},
            "health_check.cpu_threshold: expected a number >= 0; got nan",
        ),
        ("name", 5, "name: expected a string; got 5"),
    ],
)
def test_numbers_and_strings(field: str, value: object, message: str) -> None:
    assert only_issue({"agents": [agent(**{field: value})]}) == f"agents[0].{message}"


def test_bad_size_message() -> None:
    assert only_issue({"agents": [agent(log={"max_bytes": "5XB"})]}) == (
        "agents[0].log.max_bytes: expected a size such as 500MB, 512KiB or 1GiB, or bytes; "
        "got '5XB'"
    )


def test_required_fields() -> None:
    assert issues_of({"agents": [{"type": "custom"}]}) == [
        "agents[0].id: required field is missing",
        "agents[0].binary_path: required field is missing",
    ]


def test_invalid_required_field_is_not_also_missing() -> None:
    assert issues_of({"agents": [{"id": "-x", "binary_path": 5}]}) == [
        "agents[0].id: expected an id of 1 to 64 ASCII letters, digits, '.', '_' or '-', "
        "starting with a letter or digit; got '-x'",
        "agents[0].binary_path: expected a string; got 5",
    ]


def test_backoff_max_below_base() -> None:
    entry = agent(restart={"backoff_base": "30s", "backoff_max": "10s"})
    assert only_issue({"agents": [entry]}) == (
        "agents[0].restart.backoff_max: must be at least backoff_base (30s); got 10s"
    )


def test_backoff_base_above_the_default_max() -> None:
    assert only_issue({"agents": [agent(restart={"backoff_base": "2m"})]}) == (
        "agents[0].restart.backoff_base: must be at most backoff_max (1m); got 2m"
    )


def test_backoff_checked_against_inherited_values() -> None:
    document = {
        "agent_defaults": {"restart": {"backoff_base": "30s"}},
        "agents": [agent(id="a"), agent(id="b", restart={"backoff_max": "20s"})],
    }
    assert only_issue(document) == (
        "agents[1].restart.backoff_max: must be at least backoff_base (30s); got 20s"
    )


def test_backoff_error_in_defaults_reported_once() -> None:
    document = {
        "agent_defaults": {"restart": {"backoff_base": "5m"}},
        "agents": [agent(id="a"), agent(id="b"), agent(id="c")],
    }
    assert only_issue(document) == (
        "agent_defaults.restart.backoff_base: must be at most backoff_max (1m); got 5m"
    )


def test_every_problem_is_reported_together() -> None:
    document = {
        "agnets": [],
        "daemon": {"log_level": "loud"},
        "agents": [
            agent(id="a", stop_timeout="30x", restart={"policy": "sometimes"}),
            agent(id="a", enabled="yes"),
        ],
    }
    with pytest.raises(ConfigError) as info:
        parse_config(document, source="daemon.yaml")
    assert [issue.path for issue in info.value.issues] == [
        "agnets",
        "daemon.log_level",
        "agents[0].stop_timeout",
        "agents[0].restart.policy",
        "agents[1].enabled",
        "agents[1].id",
    ]
    assert str(info.value).startswith(
        "invalid configuration in daemon.yaml (6 error(s)):\n  agnets: "
    )
    assert isinstance(info.value, ValueError)


def test_five_different_errors_give_five_issues() -> None:
    document = {
        "daemon": {"stop_agents_on_exit": "yes"},
        "agents": [
            agent(id="a", restart={"policy": "sometimes"}),
            agent(id="b", health_check={"intervall": "5s"}),
            agent(id="a"),
            {"id": "c"},
        ],
    }
    assert issues_of(document) == [
        "daemon.stop_agents_on_exit: expected a boolean; got 'yes'",
        "agents[0].restart.policy: expected one of always, on-failure, never; got 'sometimes'",
        "agents[1].health_check.intervall: unknown key (did you mean 'interval'?)",
        "agents[2].id: duplicate id 'a' (first at agents[0])",
        "agents[3].binary_path: required field is missing",
    ]


def test_document_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(["agents"])  # type: ignore[arg-type]
    assert [str(issue) for issue in info.value.issues] == ["expected a mapping; got ['agents']"]


# agent_defaults.


def test_defaults_are_deep_merged_under_each_agent() -> None:
    document = {
        "agent_defaults": {
            "binary_path": "/usr/bin/default",
            "stop_timeout": "5s",
            "args": ["--default"],
            "env": {"A": "1", "B": "2"},
            "health_check": {"interval": "10s", "cpu_threshold": 20},
            "restart": {"policy": "on-failure", "max_retries": 3},
        },
        "agents": [
            agent(
                id="a", args=["--own"], env={"B": "x", "C": "3"}, health_check={"cpu_threshold": 80}
            ),
            {"id": "b", "restart": {"max_retries": 7}},
        ],
    }
    first, second = parse_config(document).agents
    assert first.binary_path == "/usr/bin/web"
    assert first.args == ("--own",)
    assert dict(first.env) == {"A": "1", "B": "x", "C": "3"}
    assert first.stop_timeout_s == 5.0
    assert (first.health_check.interval_s, first.health_check.cpu_threshold) == (10.0, 80.0)
    assert first.restart == RestartSpec(RestartPolicy.ON_FAILURE, 3)
    assert second.binary_path == "/usr/bin/default"
    assert second.args == ("--default",)
    assert second.restart == RestartSpec(RestartPolicy.ON_FAILURE, 7)


def test_errors_in_defaults_are_reported_once() -> None:
    document = {
        "agent_defaults": {"stop_timeout": "soon", "restart": {"policy": "sometimes"}},
        "agents": [agent(id="a"), agent(id="b"), agent(id="c", stop_timeout="30x")],
    }
    assert issues_of(document) == [
        "agent_defaults.stop_timeout: expected a duration such as 30s, 5m or 1h30m, or seconds; "
        "got 'soon'",
        "agent_defaults.restart.policy: expected one of always, on-failure, never; got 'sometimes'",
        "agents[2].stop_timeout: expected a duration such as 30s, 5m or 1h30m, or seconds; "
        "got '30x'",
    ]


def test_defaults_cannot_set_an_id() -> None:
    assert only_issue({"agent_defaults": {"id": "x"}}) == (
        "agent_defaults.id: unknown key (ids cannot have a default)"
    )


def test_invalid_default_binary_is_not_also_missing() -> None:
    document = {"agent_defaults": {"binary_path": 5}, "agents": [{"id": "a"}, {"id": "b"}]}
    assert issues_of(document) == ["agent_defaults.binary_path: expected a string; got 5"]


# The legacy single-agent format.


def test_legacy_single_agent() -> None:
    config = parse_config({"agent": {"binary_path": "/usr/bin/x", "type": "telegraf"}})
    (spec,) = config.agents
    assert (spec.id, spec.type) == ("agent", AgentType.TELEGRAF)
    assert config.warnings == (LEGACY_WARNING,)
    assert LEGACY_WARNING == "the single-agent 'agent' section is deprecated; use 'agents'"


def test_legacy_agent_keeps_its_id_and_gets_defaults() -> None:
    document = {"agent": {"id": "solo"}, "agent_defaults": {"binary_path": "/bin/solo"}}
    (spec,) = parse_config(document).agents
    assert (spec.id, spec.binary_path) == ("solo", "/bin/solo")


def test_legacy_errors_are_reported_under_agent() -> None:
    assert issues_of({"agent": {"restart": {"policy": "often"}}}) == [
        "agent.restart.policy: expected one of always, on-failure, never; got 'often'",
        "agent.binary_path: required field is missing",
    ]


def test_agents_win_over_the_legacy_agent() -> None:
    config = parse_config({"agents": [agent()], "agent": {"nonsense": True}})
    assert [spec.id for spec in config.agents] == ["web"]
    assert config.warnings == (LEGACY_IGNORED_WARNING,)


# Paths.


def test_relative_paths_are_resolved_against_base_dir() -> None:
    document = {
        "daemon": {"work_dir": "state", "log_file": "logs/d.log", "pid_file": "../run/d.pid"},
        "agents": [
            agent(
                binary_path="bin/../bin/web",
                config_file="conf/web.yml",
                work_dir="./w",
                socket_path="run/web.sock",
                log={"file": "logs/web.log"},
            )
        ],
    }
    config = parse_config(document, base_dir="/etc/hv")
    assert config.daemon == DaemonSpec(
        "", "info", "/etc/hv/logs/d.log", "/etc/run/d.pid", "/etc/hv/state"
    )
    (spec,) = config.agents
    assert spec.binary_path == "/etc/hv/bin/web"
    assert spec.config_file == "/etc/hv/conf/web.yml"
    assert spec.work_dir == "/etc/hv/w"
    assert spec.socket_path == "/etc/hv/run/web.sock"
    assert spec.log.file == "/etc/hv/logs/web.log"


def test_base_dir_defaults_to_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (spec,) = parse_config({"agents": [agent(binary_path="./web")]}).agents
    assert spec.binary_path == str(tmp_path / "web")


def test_bare_binary_names_are_looked_up_on_path(
    binary: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", os.path.dirname(binary))
    (spec,) = parse_config({"agents": [agent(binary_path="agent")]}).agents
    assert spec.binary_path == binary


def test_bare_binary_name_not_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert only_issue({"agents": [agent(binary_path="node_exporter")]}) == (
        "agents[0].binary_path: 'node_exporter' not found on PATH"
    )


def test_empty_binary_path() -> None:
    assert only_issue({"agents": [agent(binary_path="")]}) == (
        "agents[0].binary_path: expected a path or a command name; got ''"
    )


# Verbatim sections.


def test_sibling_sections_are_kept_verbatim_and_copied() -> None:
    """The update section is the updater's: kept as written (validated by the updater)."""
    update: dict[str, Any] = {
        "download_dir": "d",
        "limits": {"deadline": "1h"},
        "anything": [1, {"x": None}],
    }
    document = {"update": update}
    config = parse_config(document)
    assert config.update == update
    update["limits"]["deadline"] = "changed"
    assert config.update["limits"] == {"deadline": "1h"}


def test_cyclic_yaml_in_a_sibling_section() -> None:
    document = yaml.safe_load("update: &m\n  self: *m\n")
    config = parse_config(document)
    assert config.update["self"]["self"] is config.update["self"]
