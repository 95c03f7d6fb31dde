"""The package's public surface and the seams its design depends on."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import collectors

PACKAGE = Path(collectors.__file__).parent
MODULES = sorted(PACKAGE.glob("*.py"))

EXPECTED = {
    "Collector", "Metrics", "Table", "Scalar", "Record", "Value",
    "MetricData", "to_metric_data", "from_metric_data", "TIMESTAMP_KEY",
    "CpuCollector", "MemoryCollector", "DiskCollector", "NetworkCollector",
    "builtin_collectors", "PSEUDO_FSTYPES",
    "CollectorManager", "CollectorStatistics", "ManagerStatistics",
    "CollectorsConfig", "CpuConfig", "MemoryConfig", "DiskConfig", "NetworkConfig",
    "PluginConfig", "parse_collectors_config", "parse_duration",
    "ENTRY_POINT_GROUP", "available_plugins", "load_plugin", "load_plugins",
    "Probe", "PsutilProbe", "CpuTimes", "CpuInfo", "MemorySample", "Partition",
    "DiskUsage", "DiskIo", "NetIo",
    "counter_delta", "counter_rate", "cpu_percent", "CpuPercent", "RateTracker",
    "CollectorError", "CollectorConfigError", "MetricsError", "DuplicateCollectorError",
    "PluginLoadError", "ProbeUnavailableError",
}  # fmt: skip


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_exports_are_pinned() -> None:
    """__all__ lists exactly the public API, and every name in it exists."""
    assert set(collectors.__all__) == EXPECTED
    assert len(collectors.__all__) == len(EXPECTED)
    for name in collectors.__all__:
        assert hasattr(collectors, name), name


def test_public_objects_are_documented() -> None:
    """Every exported class and function has a docstring; modules explain themselves."""
    for name in collectors.__all__:
        obj = getattr(collectors, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), name
    for path in MODULES:
        assert ast.get_docstring(ast.parse(path.read_text())), path.name


def test_errors_share_one_root() -> None:
    """Every exported exception derives from CollectorError."""
    for name in collectors.__all__:
        obj = getattr(collectors, name)
        if inspect.isclass(obj) and issubclass(obj, BaseException):
            assert issubclass(obj, collectors.CollectorError), name


def test_psutil_is_imported_in_one_module() -> None:
    """Only _probe.py imports psutil."""
    users = {path.name for path in MODULES if "psutil" in _imports(path)}
    assert users == {"_probe.py"}


def test_the_wall_clock_is_read_in_one_place() -> None:
    """time.time() appears only in _collector.wall_time; everything else uses Trio's clock."""
    users = {
        path.name
        for path in MODULES
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute)
        and node.attr in {"time", "sleep", "monotonic"}
        and isinstance(node.value, ast.Name)
        and node.value.id == "time"
    }
    assert users == {"_collector.py"}


def test_pure_modules_do_no_io() -> None:
    """The pure modules import neither trio, psutil nor os."""
    for name in ("_rates.py", "_schedule.py", "_build.py", "_metric_data.py", "_metrics.py"):
        assert not _imports(PACKAGE / name) & {"trio", "psutil", "os"}, name


def test_the_package_stands_alone() -> None:
    """Importing collectors pulls in none of its sibling packages."""
    code = (
        "import sys, collectors; "
        "print(sorted(m for m in sys.modules "
        "if m.split('.')[0] in {'supervisor', 'updater', 'transport'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"
    for path in MODULES:
        assert not {m.split(".")[0] for m in _imports(path)} & {
            "supervisor",
            "updater",
            "transport",
        }, path.name


def test_modules_stay_small() -> None:
    """No module grows past about 600 lines."""
    for path in MODULES:
        assert len(path.read_text().splitlines()) <= 600, path.name


def test_typed_marker_ships() -> None:
    """The package says it is typed."""
    assert (PACKAGE / "py.typed").exists()
