"""Third-party collectors, found through the ``hostvisor.collectors`` entry-point group.

Theory of operation
-------------------
A plugin distribution declares, in its ``pyproject.toml``::

    [project.entry-points."hostvisor.collectors"]
    gpu = "hostvisor_gpu:GpuCollector"

and the daemon's configuration enables it by that name (``collectors.plugins.gpu``). The
entry point must load to a factory (a class or a function) that is called as
``factory(interval_s=<seconds>, options=<mapping from the config>)`` and returns a
:class:`~collectors.Collector` named like the entry point, with that interval.

Loading happens once, when the manager is built. Everything that can go wrong (no such
entry point, two distributions claiming the name, the import raising, the factory raising,
a result that is not a collector) becomes a :class:`~collectors.PluginLoadError` for that
plugin alone: :func:`load_plugins` logs it and returns it beside the collectors that did
load, and the manager shows it in ``statistics().plugin_errors``. Errors raised later by a
plugin's ``collect()`` are the manager's business, handled like any collector's.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from importlib.metadata import EntryPoint, entry_points

from ._collector import Collector
from ._config import PluginConfig
from ._errors import PluginLoadError

__all__ = ["ENTRY_POINT_GROUP", "available_plugins", "load_plugin", "load_plugins"]

ENTRY_POINT_GROUP = "hostvisor.collectors"
"""The entry-point group in which plugin distributions register collector factories."""

_log = logging.getLogger("collectors.plugins")


def _group(candidates: Iterable[EntryPoint] | None) -> list[EntryPoint]:
    if candidates is None:
        return list(entry_points(group=ENTRY_POINT_GROUP))
    return [ep for ep in candidates if ep.group == ENTRY_POINT_GROUP]


def available_plugins(candidates: Iterable[EntryPoint] | None = None) -> dict[str, str]:
    """The plugins installed in this environment.

    Args:
        candidates: Entry points to look through instead of the installed ones (tests).

    Returns:
        Each plugin name mapped to its entry point's ``module:attribute`` value.
    """
    return {ep.name: ep.value for ep in _group(candidates)}


def load_plugin(
    config: PluginConfig, *, candidates: Iterable[EntryPoint] | None = None
) -> Collector:
    """Find, import and construct one plugin collector.

    Args:
        config: The plugin's configuration (name, interval, options).
        candidates: Entry points to search instead of the installed ones.

    Returns:
        The plugin's collector.

    Raises:
        PluginLoadError: The plugin is missing or ambiguous, its import or factory raised,
            or it returned something that is not a collector with the configured name and
            interval. ``__cause__`` holds the plugin's own exception, if any.
    """
    found = {ep.value: ep for ep in _group(candidates) if ep.name == config.name}
    if not found:
        raise PluginLoadError(
            config.name, f"no entry point named {config.name!r} in group {ENTRY_POINT_GROUP!r}"
        )
    if len(found) > 1:
        raise PluginLoadError(
            config.name, f"ambiguous: several entry points claim it ({', '.join(sorted(found))})"
        )
    (entry_point,) = found.values()
    try:
        factory = entry_point.load()
    except Exception as exc:
        raise PluginLoadError(
            config.name, f"importing {entry_point.value!r} failed: {exc!r}"
        ) from exc
    if not callable(factory):
        raise PluginLoadError(config.name, f"{entry_point.value!r} is not callable")
    try:
        collector = factory(interval_s=config.interval_s, options=config.options)
    except Exception as exc:
        raise PluginLoadError(
            config.name, f"calling {entry_point.value!r} failed: {exc!r}"
        ) from exc
    return _check(config, collector)


def _check(config: PluginConfig, collector: object) -> Collector:
    if not isinstance(collector, Collector):
        raise PluginLoadError(
            config.name,
            f"the factory returned {collector!r}, which lacks name, interval_s or collect()",
        )
    if collector.name != config.name:
        raise PluginLoadError(
            config.name, f"the collector is named {collector.name!r}, not {config.name!r}"
        )
    interval = collector.interval_s
    if not isinstance(interval, int | float) or not math.isclose(interval, config.interval_s):
        raise PluginLoadError(
            config.name,
            f"the collector's interval_s is {interval!r}, not the configured {config.interval_s}",
        )
    return collector


def load_plugins(
    configs: Iterable[PluginConfig], *, candidates: Iterable[EntryPoint] | None = None
) -> tuple[list[Collector], dict[str, PluginLoadError]]:
    """Load every enabled plugin, isolating failures.

    Args:
        configs: The plugins from the configuration; disabled ones are skipped.
        candidates: Entry points to search instead of the installed ones.

    Returns:
        The collectors that loaded, and each failed plugin's name mapped to its error
        (also logged as a warning).
    """
    pool = _group(candidates)
    collectors: list[Collector] = []
    errors: dict[str, PluginLoadError] = {}
    for config in configs:
        if not config.enabled:
            continue
        try:
            collectors.append(load_plugin(config, candidates=pool))
        except PluginLoadError as exc:
            _log.warning("collector plugin not loaded: %s", exc)
            errors[config.name] = exc
    return collectors, errors
