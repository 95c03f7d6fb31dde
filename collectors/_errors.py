"""The `collectors` package's error hierarchy: one root, precise leaves.

Every error this package raises derives from :class:`CollectorError`. Where an error
carries the meaning of a built-in it subclasses that too (``ValueError`` for bad
configuration and malformed metrics), so callers can catch either. Errors from psutil and
the OS are translated at the probe boundary and keep the original as ``__cause__``.

A collector that fails while the manager runs it does not raise out of the manager: the
failure is logged, counted and shown by ``CollectorManager.statistics()``.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "CollectorConfigError",
    "CollectorError",
    "DuplicateCollectorError",
    "MetricsError",
    "PluginLoadError",
    "ProbeUnavailableError",
]


class CollectorError(Exception):
    """Root of every error raised by the `collectors` package."""


class CollectorConfigError(CollectorError, ValueError):
    """The ``collectors`` configuration block is invalid.

    Every problem found is reported at once; each names its path in the document.

    Attributes:
        issues: ``(path, message)`` pairs, e.g.
            ``("collectors.disk.interval", "expected a duration ...; got '5x'")``.
    """

    def __init__(self, issues: Sequence[tuple[str, str]]) -> None:
        self.issues: tuple[tuple[str, str], ...] = tuple(issues)
        super().__init__("\n".join(f"{path}: {message}" for path, message in self.issues))


class MetricsError(CollectorError, ValueError):
    """A ``Metrics`` value is malformed, or a ``MetricData`` cannot be decoded.

    The message names the offending field or key and its value.
    """


class DuplicateCollectorError(CollectorError, ValueError):
    """Two collectors given to one manager share a name."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"two collectors are named {name!r}; names must be unique")


class PluginLoadError(CollectorError):
    """A plugin collector could not be found, imported or constructed.

    Attributes:
        plugin: The plugin's configured name (its entry-point name).
    """

    def __init__(self, plugin: str, message: str) -> None:
        self.plugin = plugin
        super().__init__(f"plugin {plugin!r}: {message}")


class ProbeUnavailableError(CollectorError):
    """The operating system did not answer a probe (``__cause__`` says why)."""
