"""Host metrics for the hostvisor daemon, and for anyone who imports them.

The seed's collectors (CPU, memory, disk, network), a Trio manager that runs them on their
intervals, plugins from the ``hostvisor.collectors`` entry-point group, and a lossless
conversion to the Manager contract's ``MetricData``. The package stands alone: it imports
neither ``supervisor`` nor ``updater`` nor ``transport``.

Quick start::

    import trio, collectors

    async def main():
        manager = collectors.CollectorManager.from_config(collectors.CollectorsConfig())
        async with trio.open_nursery() as nursery:
            await nursery.start(manager.run)
            with manager.subscribe() as results:
                async for metrics in results:
                    print(collectors.to_metric_data(metrics))

Layout: pure code (``_rates``, ``_schedule``, ``_build``, ``_metric_data``, ``_config``)
takes time as an argument and does no IO; ``_probe`` is the only module that imports
psutil; ``_builtin`` and ``_manager`` are the Trio shell around them.
"""

from ._build import PSEUDO_FSTYPES as PSEUDO_FSTYPES
from ._builtin import (
    CpuCollector as CpuCollector,
    DiskCollector as DiskCollector,
    MemoryCollector as MemoryCollector,
    NetworkCollector as NetworkCollector,
    builtin_collectors as builtin_collectors,
)
from ._collector import Collector as Collector
from ._config import (
    CollectorsConfig as CollectorsConfig,
    CpuConfig as CpuConfig,
    DiskConfig as DiskConfig,
    MemoryConfig as MemoryConfig,
    NetworkConfig as NetworkConfig,
    PluginConfig as PluginConfig,
    parse_collectors_config as parse_collectors_config,
)
from ._duration import parse_duration as parse_duration
from ._errors import (
    CollectorConfigError as CollectorConfigError,
    CollectorError as CollectorError,
    DuplicateCollectorError as DuplicateCollectorError,
    MetricsError as MetricsError,
    PluginLoadError as PluginLoadError,
    ProbeUnavailableError as ProbeUnavailableError,
)
from ._manager import (
    CollectorManager as CollectorManager,
    CollectorStatistics as CollectorStatistics,
    ManagerStatistics as ManagerStatistics,
)
from ._metric_data import (
    TIMESTAMP_KEY as TIMESTAMP_KEY,
    MetricData as MetricData,
    from_metric_data as from_metric_data,
    to_metric_data as to_metric_data,
)
from ._metrics import (
    Metrics as Metrics,
    Record as Record,
    Scalar as Scalar,
    Table as Table,
    Value as Value,
)
from ._plugins import (
    ENTRY_POINT_GROUP as ENTRY_POINT_GROUP,
    available_plugins as available_plugins,
    load_plugin as load_plugin,
    load_plugins as load_plugins,
)
from ._probe import PsutilProbe as PsutilProbe
from ._rates import (
    CpuPercent as CpuPercent,
    RateTracker as RateTracker,
    counter_delta as counter_delta,
    counter_rate as counter_rate,
    cpu_percent as cpu_percent,
)
from ._sample import (
    CpuInfo as CpuInfo,
    CpuTimes as CpuTimes,
    DiskIo as DiskIo,
    DiskUsage as DiskUsage,
    MemorySample as MemorySample,
    NetIo as NetIo,
    Partition as Partition,
    Probe as Probe,
)

__all__ = [
    # The seed's interface and its results
    "Collector",
    "Metrics",
    "Table",
    "Scalar",
    "Record",
    "Value",
    # The Manager contract
    "MetricData",
    "to_metric_data",
    "from_metric_data",
    "TIMESTAMP_KEY",
    # Built-in collectors
    "CpuCollector",
    "MemoryCollector",
    "DiskCollector",
    "NetworkCollector",
    "builtin_collectors",
    "PSEUDO_FSTYPES",
    # Running them
    "CollectorManager",
    "CollectorStatistics",
    "ManagerStatistics",
    # Configuration
    "CollectorsConfig",
    "CpuConfig",
    "MemoryConfig",
    "DiskConfig",
    "NetworkConfig",
    "PluginConfig",
    "parse_collectors_config",
    "parse_duration",
    # Plugins
    "ENTRY_POINT_GROUP",
    "available_plugins",
    "load_plugin",
    "load_plugins",
    # Probes and readings
    "Probe",
    "PsutilProbe",
    "CpuTimes",
    "CpuInfo",
    "MemorySample",
    "Partition",
    "DiskUsage",
    "DiskIo",
    "NetIo",
    # Pure helpers for counters
    "counter_delta",
    "counter_rate",
    "cpu_percent",
    "CpuPercent",
    "RateTracker",
    # Errors
    "CollectorError",
    "CollectorConfigError",
    "MetricsError",
    "DuplicateCollectorError",
    "PluginLoadError",
    "ProbeUnavailableError",
]
