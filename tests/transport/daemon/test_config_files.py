"""Loading configuration files: filesystem checks, YAML and TOML, dump, the example."""

from __future__ import annotations

import dataclasses
import os
import textwrap
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import tomli_w
import yaml

from supervisor import (
    AgentType,
    ConfigError,
    ConfigLoadError,
    RestartPolicy,
    RestartSpec,
)
from tests.transport.daemon.config_helpers import SEED_YAML, agent
from transport.daemon._config import (
    DaemonConfig as Config,
    check_paths,
    dump_config,
    load_config,
    parse_config,
)

# check_paths.


def paths_config(tmp_path: Path, *entries: dict[str, Any], **document: Any) -> Config:
    """A config whose daemon work dir is under ``tmp_path``."""
    return parse_config(
        {"daemon": {"work_dir": str(tmp_path / "state")}, "agents": list(entries), **document}
    )


def test_check_paths_accepts_a_sound_config(tmp_path: Path, binary: str) -> None:
    config_file = tmp_path / "agent.yml"
    config_file.write_text("")
    entry = agent(binary_path=binary, config_file=str(config_file), work_dir=str(tmp_path))
    assert check_paths(paths_config(tmp_path, entry, agent(id="b", binary_path=binary))) == []


def test_check_paths_binary(tmp_path: Path, binary: str) -> None:
    plain = tmp_path / "plain"
    plain.write_text("data")
    plain.chmod(0o644)
    entries = [
        agent(id="a", binary_path=binary),
        agent(id="b", binary_path=str(tmp_path / "missing")),
        agent(id="c", binary_path=str(plain)),
        agent(id="d", binary_path=str(tmp_path)),
        agent(id="e", binary_path=f"{plain}/sub"),
    ]
    assert [str(issue) for issue in check_paths(paths_config(tmp_path, *entries))] == [
        f"agents[1].binary_path: not found: '{tmp_path}/missing'",
        f"agents[2].binary_path: not executable: '{plain}'",
        f"agents[3].binary_path: not a regular file: '{tmp_path}'",
        f"agents[4].binary_path: cannot be accessed: '{plain}/sub' (Not a directory)",
    ]


def test_check_paths_config_file(tmp_path: Path, binary: str) -> None:
    entry = agent(binary_path=binary, config_file=str(tmp_path / "nope.yml"))
    assert [str(issue) for issue in check_paths(paths_config(tmp_path, entry))] == [
        f"agents[0].config_file: not found: '{tmp_path}/nope.yml'"
    ]


def test_check_paths_work_dir(tmp_path: Path, binary: str) -> None:
    afile = tmp_path / "afile"
    afile.write_text("")
    entries = [
        agent(id="a", binary_path=binary, work_dir=str(tmp_path / "new" / "deeper")),
        agent(id="b", binary_path=binary, work_dir=str(afile)),
        agent(id="c", binary_path=binary, work_dir=str(afile / "sub" / "dir")),
    ]
    assert [str(issue) for issue in check_paths(paths_config(tmp_path, *entries))] == [
        f"agents[1].work_dir: not a directory: '{afile}'",
        f"agents[2].work_dir: cannot be created: '{afile}' is not a directory",
    ]
    assert not (tmp_path / "new").exists()  # nothing is created


def test_check_paths_unwritable_work_dir(
    tmp_path: Path, binary: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # os.access is always true for root, so simulate a read-only directory.
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access

    def access(path: Any, mode: int) -> bool:
        return False if str(path) == str(locked) else real_access(path, mode)

    monkeypatch.setattr(os, "access", access)
    entries = [
        agent(id="a", binary_path=binary, work_dir=str(locked)),
        agent(id="b", binary_path=binary, work_dir=str(locked / "sub")),
    ]
    assert [str(issue) for issue in check_paths(paths_config(tmp_path, *entries))] == [
        f"agents[0].work_dir: not writable: '{locked}'",
        f"agents[1].work_dir: cannot be created: '{locked}' is not writable",
    ]


def test_check_paths_daemon_work_dir(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("")
    config = parse_config({"daemon": {"work_dir": str(afile)}})
    assert [str(issue) for issue in check_paths(config)] == [
        f"daemon.work_dir: not a directory: '{afile}'"
    ]


def test_check_paths_skips_disabled_agents(tmp_path: Path) -> None:
    entry = agent(binary_path=str(tmp_path / "missing"), enabled=False)
    assert check_paths(paths_config(tmp_path, entry)) == []


def test_check_paths_of_the_legacy_agent(tmp_path: Path) -> None:
    config = parse_config(
        {"daemon": {"work_dir": str(tmp_path)}, "agent": {"binary_path": str(tmp_path / "x")}}
    )
    assert [str(issue) for issue in check_paths(config)] == [
        f"agent.binary_path: not found: '{tmp_path}/x'"
    ]


# load_config.


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def test_load_yaml_resolves_paths_against_the_file(tmp_path: Path, binary: str) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    path = write(
        conf / "daemon.yaml",
        """\
        daemon:
          work_dir: ../state
        agents:
          - id: web
            binary_path: ../bin/agent
        """,
    )
    config = load_config(path)
    assert config.source == str(path)
    assert config.daemon.work_dir == str(tmp_path / "state")
    assert config.agents[0].binary_path == binary
    assert config.agents[0].work_dir == str(tmp_path / "state" / "agents" / "web")


def test_load_toml_equals_load_yaml(tmp_path: Path, binary: str) -> None:
    document = yaml.safe_load(SEED_YAML)
    document["daemon"]["work_dir"] = str(tmp_path / "state")
    del document["manager"]["tls"]  # its certificate files do not exist here
    for entry in document["agents"]:
        entry.update(binary_path=binary, config_file="")
    yaml_path = tmp_path / "daemon.yml"
    yaml_path.write_text(yaml.safe_dump(document))
    toml_path = tmp_path / "daemon.toml"
    toml_path.write_text(tomli_w.dumps(document))
    from_yaml, from_toml = load_config(yaml_path), load_config(toml_path)
    assert from_yaml.source != from_toml.source
    assert from_toml == dataclasses.replace(from_yaml, source=str(toml_path))


def test_load_reports_parse_and_path_issues_together(tmp_path: Path) -> None:
    path = write(
        tmp_path / "daemon.yaml",
        f"""\
        daemon:
          work_dir: {tmp_path}
        agents:
          - id: a
            binary_path: {tmp_path}/missing
            restart:
              policy: sometimes
          - id: b
            binary_path: 5
        """,
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert not isinstance(info.value, ConfigLoadError)
    assert info.value.source == str(path)
    assert [str(issue) for issue in info.value.issues] == [
        "agents[0].restart.policy: expected one of always, on-failure, never; got 'sometimes'",
        "agents[1].binary_path: expected a string; got 5",
        f"agents[0].binary_path: not found: '{tmp_path}/missing'",
    ]


def test_load_skips_path_checks_of_invalid_values(tmp_path: Path, binary: str) -> None:
    path = write(
        tmp_path / "daemon.yaml",
        f"""\
        daemon:
          work_dir: 5
        agent_defaults:
          binary_path: {binary}
        agents:
          - id: a
            binary_path: []
        """,
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert [issue.path for issue in info.value.issues] == [
        "daemon.work_dir",
        "agents[0].binary_path",
    ]


def test_load_with_work_dir_override(
    tmp_path: Path, binary: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path / "d.yaml", f"agents:\n  - id: a\n    binary_path: {binary}\n")
    config = load_config(path, work_dir="state")
    assert config.daemon.work_dir == str(tmp_path / "state")
    assert config.agents[0].work_dir == str(tmp_path / "state" / "agents" / "a")


@pytest.mark.parametrize("text", ["", "\n  \n", "# nothing yet\n", "---\n", "# a\n---\n# b\n"])
@pytest.mark.parametrize("suffix", [".yaml", ".toml"])
def test_an_empty_file_is_refused_with_a_clear_error(
    tmp_path: Path, text: str, suffix: str
) -> None:
    """An empty configuration is almost always a mistake: it says so (issue 9, defect 7)."""
    if suffix == ".toml" and "---" in text:
        return  # not TOML at all
    path = write(tmp_path / f"d{suffix}", text)
    with pytest.raises(ConfigLoadError) as caught:
        load_config(path, work_dir=str(tmp_path))
    assert "empty" in str(caught.value)
    assert "agents: []" in str(caught.value)


def test_an_explicitly_empty_agent_list_is_accepted(tmp_path: Path) -> None:
    path = write(tmp_path / "d.yaml", "agents: []\n")
    assert load_config(path, work_dir=str(tmp_path)).agents == ()


@pytest.mark.parametrize("key", ["log_file", "pid_file"])
def test_daemon_files_that_are_directories_are_refused(tmp_path: Path, key: str) -> None:
    """check-config catches what would crash run (issue 9, defect 3)."""
    (tmp_path / "adir").mkdir()
    path = write(tmp_path / "d.yaml", f"daemon:\n  {key}: adir\nagents: []\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, work_dir=str(tmp_path / "w"))
    [issue] = caught.value.issues
    assert issue.path == f"daemon.{key}"
    assert "is a directory" in issue.message


def test_a_script_whose_interpreter_is_missing_is_named(tmp_path: Path) -> None:
    """The interpreter is reported, not the script that exists (issue 9, defect 8)."""
    script = tmp_path / "agent.sh"
    script.write_text("#!/no/such/interpreter\necho hi\n")
    script.chmod(0o755)
    path = write(tmp_path / "d.yaml", f"agents:\n  - id: a\n    binary_path: {script}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, work_dir=str(tmp_path / "w"))
    [issue] = caught.value.issues
    assert issue.path == "agents[0].binary_path"
    assert "/no/such/interpreter" in issue.message


def test_load_yaml_refuses_duplicate_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path / "d.yaml",
        """\
        agents:
          - id: a
            restart: {policy: never}
            restart: {policy: always}
        """,
    )
    with pytest.raises(ConfigLoadError) as info:
        load_config(path)
    assert [str(issue) for issue in info.value.issues] == [
        "invalid YAML at line 4, column 5: duplicate key 'restart'"
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # libyaml would take "a:<tab>b" as a mapping; the pure-Python parser refuses it.
        ("agents:\t[]\n", "invalid YAML at line 1, column 8: found character '\\t' that cannot"),
        ("agents: [\n", "invalid YAML at line 2, column 1: expected the node content"),
        ("a: b: c\n", "invalid YAML at line 1, column 5: mapping values are not allowed here"),
        ('a: "x\x07"\n', "invalid YAML: unacceptable character #x0007: special characters"),
    ],
)
def test_load_yaml_errors_are_the_pure_parsers(tmp_path: Path, text: str, message: str) -> None:
    """libyaml parses the file, but what it refuses (or reads otherwise: tabs) is read by
    PyYAML's pure-Python parser, whose messages and positions users see."""
    path = tmp_path / "d.yaml"
    path.write_text(text)
    with pytest.raises(ConfigLoadError) as info:
        load_config(path)
    [issue] = info.value.issues
    assert str(issue).startswith(message)


def test_load_yaml_merge_keys_may_override(tmp_path: Path, binary: str) -> None:
    path = write(
        tmp_path / "d.yaml",
        f"""\
        agent_defaults:
          restart: &restart {{policy: never, max_retries: 3}}
        agents:
          - id: a
            binary_path: {binary}
            restart:
              <<: *restart
              policy: always
        """,
    )
    (spec,) = load_config(path, work_dir=str(tmp_path)).agents
    assert spec.restart == RestartSpec(RestartPolicy.ALWAYS, 3)


def test_load_does_not_check_work_dirs_derived_from_an_invalid_one(
    tmp_path: Path, binary: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: not mode & os.W_OK and real_access(p, mode))
    path = write(
        tmp_path / "d.yaml",
        f"daemon:\n  work_dir: [x]\nagents:\n  - {{id: a, binary_path: {binary}}}\n",
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert [issue.path for issue in info.value.issues] == ["daemon.work_dir"]
    # The same file with a valid, unwritable work dir: the agent's is reported too.
    path.write_text(path.read_text().replace("[x]", str(tmp_path)))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert [issue.path for issue in info.value.issues] == ["daemon.work_dir", "agents[0].work_dir"]


def test_work_dir_override_keeps_an_invalid_daemon_section_invalid(tmp_path: Path) -> None:
    path = write(tmp_path / "d.yaml", "daemon: [1]\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, work_dir=str(tmp_path))
    assert [str(issue) for issue in info.value.issues] == ["daemon: expected a mapping; got [1]"]


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigLoadError) as info:
        load_config(tmp_path / "absent.yaml")
    assert [str(issue) for issue in info.value.issues] == [
        "cannot read the file: No such file or directory"
    ]
    assert info.value.code == "D1001"
    assert isinstance(info.value.__cause__, FileNotFoundError)


def test_load_unsupported_suffix(tmp_path: Path) -> None:
    with pytest.raises(ConfigLoadError, match=r"unsupported file type '\.json'"):
        load_config(write(tmp_path / "d.json", "{}"))


def test_load_yaml_syntax_error_gives_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path / "d.yaml", "daemon:\n  id: x\n  log_level: [info\n")
    with pytest.raises(ConfigLoadError) as info:
        load_config(path)
    (issue,) = info.value.issues
    assert issue.message.startswith("invalid YAML at line 4, column 1: ")


def test_load_toml_syntax_error_gives_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path / "d.toml", "[daemon]\nid = \n")
    with pytest.raises(ConfigLoadError) as info:
        load_config(path)
    (issue,) = info.value.issues
    assert issue.message == "invalid TOML: Invalid value (at line 2, column 6)"


def test_load_undecodable_file(tmp_path: Path) -> None:
    path = tmp_path / "d.toml"
    path.write_bytes(b"id = '\xff'\n")
    with pytest.raises(ConfigLoadError, match="invalid TOML"):
        load_config(path)
    path = tmp_path / "d.yaml"
    path.write_bytes(b"id: '\xff'\n")
    with pytest.raises(ConfigLoadError, match="invalid YAML"):
        load_config(path)


def test_load_document_that_is_not_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path / "d.yaml", "- a\n- b\n"), work_dir=str(tmp_path))
    assert [str(issue) for issue in info.value.issues] == ["expected a mapping; got ['a', 'b']"]


# dump_config.


def test_dump_config_writes_plain_values() -> None:
    entry = agent(
        stop_signal="SIGHUP",
        restart={"policy": "on-failure", "backoff_max": 5400},
        health_check={"memory_threshold": "1KiB"},
        env={"PORT": 80},
    )
    document = dump_config(parse_config({"agents": [entry], "update": {"a": 1}}))
    (written,) = document["agents"]
    assert written["stop_signal"] == "HUP"
    assert written["type"] == "custom"
    assert written["restart"]["policy"] == "on-failure"
    assert written["restart"]["backoff_max"] == "1h30m"
    assert written["health_check"]["memory_threshold"] == 1024
    assert written["env"] == {"PORT": "80"}
    assert written["args"] == []
    assert "config_file" not in written
    assert document["update"] == {"a": 1}
    assert "collectors" not in document
    assert document["daemon"] == {
        "id": "",
        "log_level": "info",
        "work_dir": "/var/lib/daemon",
        "stop_agents_on_exit": False,
        "grpc_host": "127.0.0.1",
        "grpc_port": 9091,
        "grpc_allow_insecure": False,
        "control_socket": True,
    }


def test_dump_config_round_trips_the_seed_example() -> None:
    config = parse_config(yaml.safe_load(SEED_YAML))
    document = dump_config(config)
    assert parse_config(document) == config
    assert parse_config(yaml.safe_load(yaml.safe_dump(document))) == config


# The bundled example.


def example_path() -> Path:
    return Path(str(resources.files("transport.daemon.examples") / "daemon.yaml"))


def test_bundled_example_loads(tmp_path: Path) -> None:
    config = load_config(example_path(), work_dir=str(tmp_path))
    assert [spec.id for spec in config.agents] == ["ticker", "crasher", "graceful"]
    assert all(spec.type is AgentType.CUSTOM for spec in config.agents)
    assert all(spec.argv[:2] == ("/bin/sh", "-c") for spec in config.agents)
    ticker, crasher, graceful = config.agents
    assert crasher.restart == RestartSpec(RestartPolicy.ON_FAILURE, 5, 2.0, 10.0)
    assert graceful.stop_timeout_s == 5.0
    assert ticker.health_check.heartbeat_timeout_s == 0
    assert config.warnings == ()


@pytest.mark.skipif(
    not os.access("/var/lib", os.W_OK), reason="the default work dir needs a writable /var/lib"
)
def test_bundled_example_loads_without_override() -> None:
    assert load_config(example_path()).daemon.work_dir == "/var/lib/daemon"
