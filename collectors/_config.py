"""The ``collectors`` block of ``daemon.yaml``, parsed into frozen values.

The seed's block (section 5.1)::

    collectors:
      cpu:     {enabled: true, interval: 60s}
      memory:  {enabled: true, interval: 60s}
      disk:    {enabled: true, interval: 60s, mount_points: []}   # empty: all
      network: {enabled: true, interval: 60s, interfaces: []}     # empty: all

We add ``plugins``, which enables third-party collectors by their entry-point name::

      plugins:
        gpu: {enabled: true, interval: 30s, options: {device: 0}}

Every key is optional and defaults as in the seed (enabled, every 60 s, everything). Unknown
keys are errors, since a misspelt ``intervall`` silently ignored is a bug in production.
:func:`parse_collectors_config` reports every problem at once, each with its path.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TypeVar

from ._duration import parse_duration
from ._errors import CollectorConfigError

__all__ = [
    "BUILTIN_NAMES",
    "CollectorsConfig",
    "CpuConfig",
    "DiskConfig",
    "MemoryConfig",
    "NetworkConfig",
    "PluginConfig",
    "parse_collectors_config",
]

BUILTIN_NAMES = frozenset({"cpu", "memory", "disk", "network"})
"""The names of the built-in collectors; plugins cannot take them."""

DEFAULT_INTERVAL_S = 60.0


def check_interval(owner: str, interval_s: float, field: str = "interval_s") -> None:
    """Raise CollectorConfigError naming ``owner.field`` unless the value is a positive
    finite number of seconds."""
    if (
        isinstance(interval_s, bool)
        or not isinstance(interval_s, int | float)
        or not math.isfinite(interval_s)
        or interval_s <= 0
    ):
        raise CollectorConfigError(
            [(f"{owner}.{field}", f"expected a positive number of seconds; got {interval_s!r}")]
        )


def _check_names(owner: str, attribute: str, names: tuple[str, ...]) -> None:
    if not isinstance(names, tuple) or not all(isinstance(n, str) and n for n in names):
        raise CollectorConfigError(
            [(f"{owner}.{attribute}", f"expected a tuple of non-empty strings; got {names!r}")]
        )


@dataclass(frozen=True, slots=True)
class CpuConfig:
    """The CPU collector's settings.

    Raises:
        CollectorConfigError: ``interval_s`` is not a positive finite number.
    """

    enabled: bool = True
    interval_s: float = DEFAULT_INTERVAL_S

    def __post_init__(self) -> None:
        check_interval("CpuConfig", self.interval_s)
        object.__setattr__(self, "interval_s", float(self.interval_s))


@dataclass(frozen=True, slots=True)
class MemoryConfig:
    """The memory collector's settings.

    Raises:
        CollectorConfigError: ``interval_s`` is not a positive finite number.
    """

    enabled: bool = True
    interval_s: float = DEFAULT_INTERVAL_S

    def __post_init__(self) -> None:
        check_interval("MemoryConfig", self.interval_s)
        object.__setattr__(self, "interval_s", float(self.interval_s))


@dataclass(frozen=True, slots=True)
class DiskConfig:
    """The disk collector's settings.

    Attributes:
        mount_points: Report only these mount points (even pseudo file systems); empty
            means every real file system.

    Raises:
        CollectorConfigError: ``interval_s`` is not a positive finite number, or a mount
            point is not a non-empty string.
    """

    enabled: bool = True
    interval_s: float = DEFAULT_INTERVAL_S
    mount_points: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_interval("DiskConfig", self.interval_s)
        object.__setattr__(self, "interval_s", float(self.interval_s))
        _check_names("DiskConfig", "mount_points", self.mount_points)


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    """The network collector's settings.

    Attributes:
        interfaces: Report only these interfaces; empty means all of them.

    Raises:
        CollectorConfigError: ``interval_s`` is not a positive finite number, or an
            interface is not a non-empty string.
    """

    enabled: bool = True
    interval_s: float = DEFAULT_INTERVAL_S
    interfaces: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_interval("NetworkConfig", self.interval_s)
        object.__setattr__(self, "interval_s", float(self.interval_s))
        _check_names("NetworkConfig", "interfaces", self.interfaces)


@dataclass(frozen=True, slots=True)
class PluginConfig:
    """A plugin collector enabled by its entry-point name.

    Attributes:
        name: The entry-point name in the ``hostvisor.collectors`` group; also the name
            of the collector and of its ``MetricData.type``.
        options: Free-form settings passed to the plugin's factory.

    Raises:
        CollectorConfigError: The name is empty or a built-in's, or ``interval_s`` is not a
            positive finite number.
    """

    name: str
    enabled: bool = True
    interval_s: float = DEFAULT_INTERVAL_S
    options: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or self.name in BUILTIN_NAMES:
            raise CollectorConfigError(
                [
                    (
                        "PluginConfig.name",
                        f"expected a plugin name (not a built-in); got {self.name!r}",
                    )
                ]
            )
        check_interval(f"PluginConfig({self.name!r})", self.interval_s)
        object.__setattr__(self, "interval_s", float(self.interval_s))
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))


@dataclass(frozen=True, slots=True)
class CollectorsConfig:
    """The whole ``collectors`` block. The defaults are the seed's."""

    cpu: CpuConfig = CpuConfig()
    memory: MemoryConfig = MemoryConfig()
    disk: DiskConfig = DiskConfig()
    network: NetworkConfig = NetworkConfig()
    plugins: tuple[PluginConfig, ...] = ()


# --- parsing ----------------------------------------------------------------------------

_T = TypeVar("_T")


class _Reader:
    """Reads one mapping of the document, collecting issues instead of stopping at one."""

    def __init__(self, issues: list[tuple[str, str]], path: str, data: object) -> None:
        self.issues = issues
        self.path = path
        self.data: Mapping[object, object] = {}
        if data is None:
            return
        if not isinstance(data, Mapping):
            issues.append((path, f"expected a mapping; got {data!r}"))
            return
        self.data = data

    def unknown(self, allowed: tuple[str, ...]) -> None:
        for key in self.data:
            if key not in allowed:
                self.issues.append(
                    (f"{self.path}.{key}", f"unknown key; expected one of {', '.join(allowed)}")
                )

    def get(self, key: str, convert: Callable[[object], _T], default: _T) -> _T:
        if key not in self.data or self.data[key] is None:
            return default
        try:
            return convert(self.data[key])
        except (ValueError, TypeError) as exc:
            self.issues.append((f"{self.path}.{key}", str(exc)))
            return default


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false; got {value!r}")
    return value


def _interval(value: object) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"expected a positive duration; got {value!r}")
    return seconds


def _names(value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ValueError(f"expected a list of names; got {value!r}")
    for item in value:
        if not isinstance(item, str) or not item:
            raise ValueError(f"expected a list of non-empty strings; got {item!r} in {value!r}")
    return tuple(dict.fromkeys(value))  # drop repeats, keep order


def _options(value: object) -> Mapping[str, object]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ValueError(f"expected a mapping with string keys; got {value!r}")
    return dict(value)


_COMMON = ("enabled", "interval")
_NO_NAMES: tuple[str, ...] = ()


def parse_collectors_config(block: object, *, path: str = "collectors") -> CollectorsConfig:
    """Parse the ``collectors`` block of the daemon's configuration.

    Args:
        block: The block as loaded from YAML or TOML (a mapping), or None for defaults.
        path: Where the block sits in the document, for error messages.

    Returns:
        The validated configuration.

    Raises:
        CollectorConfigError: Something is wrong; every issue is listed with its path,
            e.g. ``collectors.disk.interval: expected a duration such as 60s, 5m or
            1h30m, or a number of seconds; got '5x'``.
    """
    issues: list[tuple[str, str]] = []
    top = _Reader(issues, path, block)
    top.unknown((*sorted(BUILTIN_NAMES), "plugins"))

    def common(name: str, extra: tuple[str, ...] = ()) -> tuple[_Reader, bool, float]:
        reader = _Reader(issues, f"{path}.{name}", top.data.get(name))
        reader.unknown((*_COMMON, *extra))
        enabled = reader.get("enabled", _bool, True)
        interval_s = reader.get("interval", _interval, DEFAULT_INTERVAL_S)
        return reader, enabled, interval_s

    _, cpu_enabled, cpu_interval = common("cpu")
    _, memory_enabled, memory_interval = common("memory")
    disk, disk_enabled, disk_interval = common("disk", ("mount_points",))
    mount_points = disk.get("mount_points", _names, _NO_NAMES)
    network, network_enabled, network_interval = common("network", ("interfaces",))
    interfaces = network.get("interfaces", _names, _NO_NAMES)

    plugins: list[PluginConfig] = []
    plugin_block = _Reader(issues, f"{path}.plugins", top.data.get("plugins"))
    for name, settings in plugin_block.data.items():
        where = f"{path}.plugins.{name}"
        if not isinstance(name, str) or not name:
            issues.append((where, "a plugin name must be a non-empty string"))
            continue
        if name in BUILTIN_NAMES:
            issues.append((where, f"{name!r} is a built-in collector, not a plugin"))
            continue
        reader = _Reader(issues, where, settings)
        reader.unknown((*_COMMON, "options"))
        plugins.append(
            PluginConfig(
                name=name,
                enabled=reader.get("enabled", _bool, True),
                interval_s=reader.get("interval", _interval, DEFAULT_INTERVAL_S),
                options=reader.get("options", _options, {}),
            )
        )

    if issues:
        raise CollectorConfigError(issues)
    return CollectorsConfig(
        cpu=CpuConfig(enabled=cpu_enabled, interval_s=cpu_interval),
        memory=MemoryConfig(enabled=memory_enabled, interval_s=memory_interval),
        disk=DiskConfig(enabled=disk_enabled, interval_s=disk_interval, mount_points=mount_points),
        network=NetworkConfig(
            enabled=network_enabled, interval_s=network_interval, interfaces=interfaces
        ),
        plugins=tuple(plugins),
    )
