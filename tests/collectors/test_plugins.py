"""Plugins: a real distribution, pip-installed for the test session, is discovered and run.

The distribution lives in ``plugin_dist/``. The session fixture builds and installs it with
``pip install --no-index --no-build-isolation --target <tmp>`` (offline, outside the venv),
and each test puts that directory on ``sys.path``, where ``importlib.metadata`` finds its
``*.dist-info/entry_points.txt`` exactly as it would in site-packages.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from collectors import (
    ENTRY_POINT_GROUP,
    CollectorManager,
    CollectorsConfig,
    CpuConfig,
    DiskConfig,
    MemoryConfig,
    NetworkConfig,
    PluginConfig,
    PluginLoadError,
    available_plugins,
    from_metric_data,
    load_plugin,
    load_plugins,
    to_metric_data,
)

SOURCE = Path(__file__).parent / "plugin_dist"


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo plugin distribution, installed into a directory of its own."""
    source = tmp_path_factory.mktemp("plugin_src")
    shutil.copytree(
        SOURCE,
        source,
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"),
    )
    target = tmp_path_factory.mktemp("plugin_site")
    subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
            "--no-build-isolation", "--no-cache-dir", "--disable-pip-version-check",
            "--target", str(target), str(source),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )  # fmt: skip
    return target


@pytest.fixture
def installed(plugin_site: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make the installed plugin visible to importlib.metadata for one test."""
    monkeypatch.syspath_prepend(str(plugin_site))
    return plugin_site


def _only_plugins(*plugins: PluginConfig) -> CollectorsConfig:
    return CollectorsConfig(
        cpu=CpuConfig(enabled=False),
        memory=MemoryConfig(enabled=False),
        disk=DiskConfig(enabled=False),
        network=NetworkConfig(enabled=False),
        plugins=plugins,
    )


def test_installed_plugins_are_discovered(installed: Path) -> None:
    """The entry points of the installed distribution appear in the group."""
    found = available_plugins()
    assert found["loadavg"] == "hostvisor_demo_collectors:LoadAverageCollector"
    assert {"flaky", "picky", "misnamed", "missing"} <= set(found)
    assert ENTRY_POINT_GROUP == "hostvisor.collectors"


def test_plugin_is_loaded_from_the_installed_distribution(installed: Path) -> None:
    """Loading builds the collector with the configured interval and options."""
    collector = load_plugin(PluginConfig(name="loadavg", interval_s=15, options={"scale": 2}))
    assert collector.name == "loadavg"
    assert collector.interval_s == 15.0
    module = sys.modules[type(collector).__module__]
    assert Path(module.__file__ or "").parent == installed


async def test_plugins_run_beside_failing_ones(installed: Path) -> None:
    """Broken plugins are reported and isolated; working ones run, failures are counted."""
    config = _only_plugins(
        PluginConfig(name="loadavg", interval_s=30, options={"scale": 2}),
        PluginConfig(name="flaky"),
        PluginConfig(name="picky"),
        PluginConfig(name="misnamed"),
        PluginConfig(name="missing"),
        PluginConfig(name="absent"),
        PluginConfig(name="off-by-config", enabled=False),
    )
    manager = CollectorManager.from_config(config)
    assert list(manager.collectors) == ["loadavg", "flaky"]
    errors = manager.statistics().plugin_errors
    assert set(errors) == {"picky", "misnamed", "missing", "absent"}
    assert "ValueError(\"option 'token' is required\")" in errors["picky"]
    assert "named 'loadavg', not 'misnamed'" in errors["misnamed"]
    assert "importing 'hostvisor_demo_collectors_gone:Collector' failed" in errors["missing"]
    assert "no entry point named 'absent'" in errors["absent"]

    first = await manager.collect_once()
    second = await manager.collect_once()
    assert set(first) == {"loadavg"}
    assert set(second) == {"loadavg", "flaky"}
    load = second["loadavg"]
    assert all(load.number(k) >= 0 for k in ("load1", "load5", "load15"))
    assert from_metric_data(to_metric_data(load)) == load
    flaky = manager.statistics().collectors["flaky"]
    assert (flaky.runs, flaky.failures, flaky.successes) == (2, 1, 1)
    assert flaky.healthy
    assert not manager.statistics().healthy  # four plugins did not load


def test_load_errors_keep_the_cause(installed: Path) -> None:
    """A plugin's own exception is the PluginLoadError's cause."""
    with pytest.raises(PluginLoadError, match="'picky'") as caught:
        load_plugin(PluginConfig(name="picky"))
    assert isinstance(caught.value.__cause__, ValueError)
    assert caught.value.plugin == "picky"


def test_wrong_interval_is_refused(installed: Path) -> None:
    """A plugin that ignores the configured interval is not loaded."""
    collectors, errors = load_plugins([PluginConfig(name="stubborn", interval_s=60)])
    assert collectors == []
    assert "interval_s is 1.0, not the configured 60.0" in str(errors["stubborn"])
