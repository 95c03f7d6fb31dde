"""The ``collectors`` configuration block and its durations."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, strategies as st

from collectors import (
    CollectorConfigError,
    CollectorError,
    CollectorsConfig,
    CpuConfig,
    DiskConfig,
    NetworkConfig,
    PluginConfig,
    parse_collectors_config,
    parse_duration,
)

SEED_BLOCK = {
    "cpu": {"enabled": True, "interval": "60s"},
    "memory": {"enabled": True, "interval": "60s"},
    "disk": {"enabled": True, "interval": "60s", "mount_points": []},
    "network": {"enabled": True, "interval": "60s", "interfaces": []},
}


def test_the_seed_block_gives_the_defaults() -> None:
    """The block in the seed's daemon.yaml is exactly the default configuration."""
    assert parse_collectors_config(SEED_BLOCK) == CollectorsConfig()
    assert parse_collectors_config(None) == CollectorsConfig()
    assert parse_collectors_config({}) == CollectorsConfig()


def test_a_full_block() -> None:
    """Every setting is read, plugins included."""
    config = parse_collectors_config(
        {
            "cpu": {"interval": "1h30m"},
            "memory": {"enabled": False},
            "disk": {"interval": 90, "mount_points": ["/", "/data", "/"]},
            "network": {"interval": "500ms", "interfaces": ["eth0"]},
            "plugins": {
                "gpu": {"interval": "30s", "options": {"device": 0}},
                "off": {"enabled": False},
                "bare": None,
            },
        }
    )
    assert config.cpu == CpuConfig(interval_s=5400.0)
    assert not config.memory.enabled
    assert config.disk == DiskConfig(interval_s=90.0, mount_points=("/", "/data"))
    assert config.network == NetworkConfig(interval_s=0.5, interfaces=("eth0",))
    assert config.plugins == (
        PluginConfig(name="gpu", interval_s=30.0, options={"device": 0}),
        PluginConfig(name="off", enabled=False),
        PluginConfig(name="bare"),
    )


def test_errors_name_their_path() -> None:
    """A bad value is reported with its path and the offending value."""
    with pytest.raises(CollectorConfigError) as caught:
        parse_collectors_config({"disk": {"interval": "5x"}})
    assert str(caught.value) == (
        "collectors.disk.interval: expected a duration such as 60s, 5m or 1h30m, "
        "or a number of seconds; got '5x'"
    )
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, CollectorError)


def test_every_problem_is_reported_at_once() -> None:
    """Unknown keys, wrong types and bad plugins all appear in one error."""
    with pytest.raises(CollectorConfigError) as caught:
        parse_collectors_config(
            {
                "cpu": {"intervall": "60s"},
                "memory": {"enabled": "yes"},
                "disk": {"mount_points": "/"},
                "network": {"interval": 0, "interfaces": [""]},
                "plugins": {"cpu": {}, "gpu": {"colour": "red", "options": [1]}},
                "gpus": {},
            },
            path="daemon.collectors",
        )
    paths = [path for path, _ in caught.value.issues]
    assert paths == [
        "daemon.collectors.gpus",
        "daemon.collectors.cpu.intervall",
        "daemon.collectors.memory.enabled",
        "daemon.collectors.disk.mount_points",
        "daemon.collectors.network.interval",
        "daemon.collectors.network.interfaces",
        "daemon.collectors.plugins.cpu",
        "daemon.collectors.plugins.gpu.colour",
        "daemon.collectors.plugins.gpu.options",
    ]
    message = str(caught.value)
    assert "unknown key; expected one of enabled, interval" in message
    assert "expected true or false; got 'yes'" in message
    assert "expected a positive duration; got 0" in message
    assert "'cpu' is a built-in collector" in message


def test_a_block_that_is_not_a_mapping() -> None:
    """The block itself must be a mapping."""
    with pytest.raises(CollectorConfigError, match=r"^collectors: expected a mapping; got \[\]"):
        parse_collectors_config([])


def test_direct_construction_is_validated() -> None:
    """The config classes check their values when built in code, too."""
    with pytest.raises(CollectorConfigError, match=r"DiskConfig\.interval_s"):
        DiskConfig(interval_s=-1)
    with pytest.raises(CollectorConfigError, match=r"NetworkConfig\.interfaces"):
        NetworkConfig(interfaces=["eth0"])  # type: ignore[arg-type]
    with pytest.raises(CollectorConfigError, match="not a built-in"):
        PluginConfig(name="disk")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("60s", 60.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("1.5s", 1.5),
        ("500ms", 0.5),
        ("1d", 86400.0),
        (" 2m ", 120.0),
        (".5s", 0.5),
        (90, 90.0),
        (0.25, 0.25),
        ("0s", 0.0),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    """Go-style durations and plain seconds are read exactly."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "bad", ["5x", "", "m", "-5s", "1h 30m", "90", "inf", True, None, math.inf, -1, [60]]
)
def test_bad_durations(bad: object) -> None:
    """Anything else raises ValueError showing the value; a string of bare digits too, as
    under ``agents:`` (the grammar is the supervisor's, see tests/test_duration_grammar.py)."""
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration(bad)


@given(
    st.integers(0, 8_000),
    st.integers(0, 59),
    st.integers(0, 59),
    st.integers(0, 999),
)
def test_components_add_up(hours: int, minutes: int, seconds: int, millis: int) -> None:
    """A duration written in components equals the sum of its parts."""
    text = f"{hours}h{minutes}m{seconds}s{millis}ms"
    expected = hours * 3600 + minutes * 60 + seconds + millis / 1000
    assert parse_duration(text) == pytest.approx(expected, rel=1e-15, abs=1e-12)
