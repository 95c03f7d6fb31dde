"""Property tests of configuration parsing, dumping and duration formatting."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest
import tomli_w
import yaml
from hypothesis import given, settings, strategies as st

from supervisor import ConfigError
from supervisor._duration import format_duration, parse_duration
from tests.transport.daemon import config_strategies as cs
from transport.daemon._config import DaemonConfig as Config, dump_config, parse_config

BASE_DIR = "/srv/hostvisor-base"


@settings(deadline=None)
@given(cs.valid_documents())
def test_valid_documents_parse_and_round_trip(document: dict[str, Any]) -> None:
    """A valid document parses, and parsing its dump gives an equal configuration."""
    config = parse_config(document, base_dir=BASE_DIR)
    assert parse_config(dump_config(config), base_dir="/elsewhere") == config


@settings(deadline=None, max_examples=50)
@given(cs.valid_documents())
def test_dump_survives_toml_and_yaml(document: dict[str, Any]) -> None:
    """A dumped configuration written as TOML or YAML and read back parses to the same one."""
    config = parse_config(document, base_dir=BASE_DIR)
    dumped = dump_config(config)
    assert parse_config(tomllib.loads(tomli_w.dumps(dumped))) == config
    assert parse_config(yaml.safe_load(yaml.safe_dump(dumped))) == config


@settings(deadline=None)
@given(cs.valid_documents())
def test_parsed_paths_are_absolute_and_agents_complete(document: dict[str, Any]) -> None:
    """Every path of a parsed configuration is absolute and every agent has its own work dir."""
    config = parse_config(document, base_dir=BASE_DIR)
    assert config.daemon.work_dir.startswith("/")
    for spec in config.agents:
        paths = [spec.binary_path, spec.work_dir, spec.config_file, spec.socket_path, spec.log.file]
        assert all(path.startswith("/") for path in paths if path is not None)
        assert spec.restart.backoff_max_s >= spec.restart.backoff_base_s
    assert len({spec.id for spec in config.agents}) == len(config.agents)


@settings(deadline=None)
@given(cs.faulty_documents())
def test_injected_fault_is_reported_at_its_path(case: tuple[dict[str, Any], str]) -> None:
    """A valid document with one fault injected is rejected with an issue at the fault's path."""
    document, path = case
    with pytest.raises(ConfigError) as info:
        parse_config(document, base_dir=BASE_DIR)
    assert path in [issue.path for issue in info.value.issues], info.value


@settings(deadline=None)
@given(cs.JSON_DOCUMENTS)
def test_arbitrary_input_raises_only_config_error(document: Any) -> None:
    """parse_config on any JSON-like input returns a Config or raises ConfigError, nothing else."""
    try:
        config = parse_config(document, base_dir=BASE_DIR)
    except ConfigError as error:
        issues = error.issues
    else:
        assert isinstance(config, Config)
        return
    assert issues
    assert all(str(issue) for issue in issues)


@settings(deadline=None)
@given(st.floats(min_value=0, max_value=366 * 86400) | st.integers(0, 366 * 86400))
def test_format_duration_round_trips(seconds: float) -> None:
    """format_duration writes a string that parse_duration reads back as the same number."""
    text = format_duration(seconds)
    assert parse_duration(text) == seconds
    assert "e" not in text


@settings(deadline=None)
@given(cs.durations())
def test_parse_duration_is_a_fixed_point_of_formatting(value: object) -> None:
    """Any accepted duration, formatted and parsed again, keeps its value."""
    seconds = parse_duration(value)
    assert parse_duration(format_duration(seconds)) == seconds
