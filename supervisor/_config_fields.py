"""The schema of agent entries: one table per section, and the code that walks it.

Each section (an agent, its ``health_check``, ``restart`` and ``log``
blocks) is a table from document key to :class:`Field` (a spec attribute and the
:class:`Kind` of value it holds) or :class:`Block` (a nested section). The same tables
drive reading (:func:`read_block`, which converts every key it can and records an issue
for every one it cannot) and writing (:func:`write_block`, the inverse), so the two stay
in step by construction.

Reading produces a *layer*: a plain dict holding only the keys the document set, with
converted values and nested dicts for blocks. Layers from ``agent_defaults`` and from an
agent are merged before the spec is built, which is how an error in ``agent_defaults``
is reported once, at its own path, rather than once per agent.

A key whose value is null is treated as absent (YAML writes ``key:`` for null), so the
default applies; an empty string for an optional path is an explicit "none".
"""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from ._duration import format_duration, parse_duration, parse_size, show
from ._errors import ConfigIssue
from ._health import parse_endpoint
from ._spec import AgentType, RestartPolicy

__all__ = [
    "AGENT",
    "AGENT_DEFAULTS",
    "HEALTH_CHECK",
    "LOG",
    "RESTART",
    "BOOLEAN",
    "DURATION",
    "LOG_LEVEL",
    "PATH",
    "STRING",
    "Block",
    "Invalid",
    "Field",
    "Issues",
    "Kind",
    "join",
    "merge_layers",
    "read_block",
    "unknown_key",
    "write_block",
]


class Invalid(Exception):
    """A value cannot be converted; carries ``(suffix, message)`` pairs.

    The suffix is appended to the key's path, so a converter can point inside a
    value (``args[1]``, ``env.PATH``).
    """

    def __init__(self, message: str, at: str = "") -> None:
        super().__init__(message)
        self.problems: list[tuple[str, str]] = [(at, message)]

    @classmethod
    def many(cls, problems: Iterable[tuple[str, str]]) -> Invalid:
        """One error for several problems inside a value."""
        error = cls("")
        error.problems[:] = problems
        return error


class Issues:
    """The problems found so far, in document order."""

    def __init__(self) -> None:
        self.items: list[ConfigIssue] = []

    def add(self, path: str, message: str) -> None:
        """Record one problem at ``path``."""
        self.items.append(ConfigIssue(path, message))

    def has(self, path: str) -> bool:
        """Whether a problem was recorded at exactly ``path``."""
        return any(issue.path == path for issue in self.items)


def join(path: str, key: object) -> str:
    """The path of ``key`` inside the section at ``path``."""
    return f"{path}.{key}" if path else str(key)


def unknown_key(key: object, known: Iterable[str]) -> str:
    """The message for an unknown key, with a suggestion when one is close."""
    import difflib  # here: only an unknown key pays for it

    close = difflib.get_close_matches(str(key), list(known), n=1)
    return f"unknown key (did you mean {close[0]!r}?)" if close else "unknown key"


# Kinds of values. `read` gets the raw value and the directory relative paths are
# resolved against, and raises Invalid; `write` gives back what `read` accepts.


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True, slots=True)
class Kind:
    """How one kind of value is read from a document and written back."""

    read: Callable[[object, str], Any]
    write: Callable[[Any], Any] = _same


@dataclass(frozen=True, slots=True)
class Field:
    """A document key holding a value of one :class:`Kind`, stored as ``attr``."""

    attr: str
    kind: Kind


@dataclass(frozen=True, slots=True)
class Block:
    """A document key holding a nested section, stored as ``attr``."""

    attr: str
    fields: Mapping[str, Field | Block]


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise Invalid(f"expected a string; got {show(value)}")
    if "\0" in value:
        raise Invalid(f"must not contain a NUL character; got {show(value)}")
    return value


def _boolean(value: object, base: str) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"expected a boolean; got {show(value)}")
    return value


def _string(value: object, base: str) -> str:
    return _text(value)


_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _agent_id(value: object, base: str) -> str:
    text = _text(value)
    if not _ID.fullmatch(text):
        raise Invalid(
            "expected an id of 1 to 64 ASCII letters, digits, '.', '_' or '-', starting with "
            f"a letter or digit; got {show(value)}"
        )
    return text


def _choice(options: Iterable[str]) -> str:
    return f"expected one of {', '.join(options)}"


def _agent_type(value: object, base: str) -> AgentType:
    try:
        return AgentType(value)
    except ValueError:
        raise Invalid(f"{_choice(t.value for t in AgentType)}; got {show(value)}") from None


def _restart_policy(value: object, base: str) -> RestartPolicy:
    try:
        return RestartPolicy(value)
    except ValueError:
        raise Invalid(f"{_choice(p.value for p in RestartPolicy)}; got {show(value)}") from None


_LOG_LEVELS = {
    "debug": "debug",
    "info": "info",
    "warning": "warning",
    "warn": "warning",
    "error": "error",
}


def _log_level(value: object, base: str) -> str:
    level = _LOG_LEVELS.get(value.lower()) if isinstance(value, str) else None
    if level is None:
        raise Invalid(f"{_choice(['debug', 'info', 'warning', 'error'])}; got {show(value)}")
    return level


def _signal(value: object, base: str) -> signal.Signals:
    try:
        if isinstance(value, int) and not isinstance(value, bool):
            return signal.Signals(value)
        if isinstance(value, str):
            name = value.strip().upper()
            if name.isdigit():
                return signal.Signals(int(name))
            return signal.Signals[name if name.startswith("SIG") else f"SIG{name}"]
    except (KeyError, ValueError):
        pass
    raise Invalid(
        f"expected a signal name such as TERM, INT or HUP, or a number; got {show(value)}"
    )


def _write_signal(value: signal.Signals) -> str:
    return value.name.removeprefix("SIG")


def _duration(value: object, base: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise Invalid(str(exc)) from None


def _interval(value: object, base: str) -> float:
    seconds = _duration(value, base)
    if seconds == 0:
        raise Invalid(f"must be longer than 0s; got {show(value)}")
    return seconds


def _size(value: object, base: str) -> int:
    try:
        return parse_size(value)
    except ValueError as exc:
        raise Invalid(str(exc)) from None


def _integer(minimum: int) -> Callable[[object, str], int]:
    def read(value: object, base: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise Invalid(f"expected an integer >= {minimum}; got {show(value)}")
        return value

    return read


def _percent(value: object, base: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        # float() of a huge int overflows: not a sensible percentage either.
        number = float(value) if abs(value) < 1e300 else math.inf
        if math.isfinite(number) and number >= 0:
            return number
    raise Invalid(f"expected a number >= 0; got {show(value)}")


def _string_list(value: object, base: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise Invalid(f"expected a list of strings; got {show(value)}")
    problems: list[tuple[str, str]] = []
    for index, item in enumerate(value):
        try:
            _text(item)
        except Invalid as exc:
            problems.extend((f"[{index}]{at}", message) for at, message in exc.problems)
    if problems:
        raise Invalid.many(problems)
    return tuple(value)


def _env(value: object, base: str) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise Invalid(f"expected a mapping; got {show(value)}")
    env: dict[str, str] = {}
    problems: list[tuple[str, str]] = []
    for key, item in value.items():
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            message = "expected a variable name: non-empty, without '=' or NUL"
            problems.append((f".{key}", f"{message}; got {show(key)}"))
        elif isinstance(item, int | float) and not isinstance(item, bool):
            env[key] = str(item)
        elif isinstance(item, str) and "\0" not in item:
            env[key] = item
        else:
            message = "expected a string or a number, without NUL"
            problems.append((f".{key}", f"{message}; got {show(item)}"))
    if problems:
        raise Invalid.many(problems)
    return env


def _resolve(path: str, base: str) -> str:
    return os.path.normpath(os.path.join(base, path))


def _path(value: object, base: str) -> str | None:
    """A path resolved against ``base``; the empty string means none."""
    text = _text(value)
    return _resolve(text, base) if text else None


def _binary(value: object, base: str) -> str:
    text = _text(value)
    if not text:
        raise Invalid("expected a path or a command name; got ''")
    if "/" in text:
        return _resolve(text, base)
    found = shutil.which(text)
    if found is None:
        raise Invalid(f"{show(text)} not found on PATH")
    return os.path.normpath(os.path.abspath(found))


def _url(value: object, base: str) -> str | None:
    text = _text(value)
    if not text:
        return None
    try:
        parts = urlsplit(text)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        valid = False
    if not valid:
        raise Invalid(f"expected an http:// or https:// URL with a host; got {show(value)}")
    return text


def _endpoint(value: object, base: str) -> str | None:
    text = _text(value)
    if not text:
        return None
    try:
        parse_endpoint(text)
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    return text


BOOLEAN = Kind(_boolean)
STRING = Kind(_string)
PATH = Kind(_path)
DURATION = Kind(_duration, format_duration)

LOG_LEVEL = Kind(_log_level)

HEALTH_CHECK: Mapping[str, Field | Block] = {
    "interval": Field("interval_s", Kind(_interval, format_duration)),
    "heartbeat_timeout": Field("heartbeat_timeout_s", DURATION),
    "cpu_threshold": Field("cpu_threshold", Kind(_percent)),
    "memory_threshold": Field("memory_threshold", Kind(_size)),
    "threshold_duration": Field("threshold_duration_s", DURATION),
    "http_endpoint": Field("http_endpoint", Kind(_url)),
    "tcp_endpoint": Field("tcp_endpoint", Kind(_endpoint)),
    "heartbeat_required": Field("heartbeat_required", BOOLEAN),
    "timeout": Field("timeout_s", Kind(_interval, format_duration)),
    "failures": Field("failures", Kind(_integer(1))),
}

RESTART: Mapping[str, Field | Block] = {
    "policy": Field("policy", Kind(_restart_policy, lambda policy: policy.value)),
    "max_retries": Field("max_retries", Kind(_integer(-1))),
    "backoff_base": Field("backoff_base_s", DURATION),
    "backoff_max": Field("backoff_max_s", DURATION),
    "reset_after": Field("reset_after_s", DURATION),
}

LOG: Mapping[str, Field | Block] = {
    "file": Field("file", PATH),
    "max_bytes": Field("max_bytes", Kind(_size)),
    "backups": Field("backups", Kind(_integer(0))),
}

AGENT_DEFAULTS: Mapping[str, Field | Block] = {
    "type": Field("type", Kind(_agent_type, lambda agent_type: agent_type.value)),
    "name": Field("name", STRING),
    "binary_path": Field("binary_path", Kind(_binary)),
    "config_file": Field("config_file", PATH),
    "work_dir": Field("work_dir", PATH),
    "socket_path": Field("socket_path", PATH),
    "enabled": Field("enabled", BOOLEAN),
    "args": Field("args", Kind(_string_list, list)),
    "env": Field("env", Kind(_env, dict)),
    "stop_signal": Field("stop_signal", Kind(_signal, _write_signal)),
    "stop_timeout": Field("stop_timeout_s", DURATION),
    "start_seconds": Field("start_seconds_s", DURATION),
    "health_check": Block("health_check", HEALTH_CHECK),
    "restart": Block("restart", RESTART),
    "log": Block("log", LOG),
}

AGENT: Mapping[str, Field | Block] = {"id": Field("id", Kind(_agent_id)), **AGENT_DEFAULTS}


def read_block(
    raw: object,
    path: str,
    fields: Mapping[str, Field | Block],
    base: str,
    issues: Issues,
    *,
    refused: Mapping[str, str] = MappingProxyType({}),
) -> dict[str, Any]:
    """Convert one section of a document into a layer, recording every problem.

    Args:
        raw: The section as found in the document (None counts as empty).
        path: Where the section is, for messages.
        fields: The section's table.
        base: The directory relative paths are resolved against.
        issues: Where problems are recorded.
        refused: Keys that are not allowed here, with the message to give.

    Returns:
        The keys that were set and valid, converted; nested sections as nested dicts.
    """
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        issues.add(path, f"expected a mapping; got {show(raw)}")
        return {}
    layer: dict[str, Any] = {}
    for key, value in raw.items():
        here = join(path, key)
        entry = fields.get(key) if isinstance(key, str) else None
        if isinstance(key, str) and key in refused:
            issues.add(here, refused[key])
        elif entry is None:
            issues.add(here, unknown_key(key, fields))
        elif value is None:
            continue
        elif isinstance(entry, Block):
            layer[key] = read_block(value, here, entry.fields, base, issues)
        else:
            try:
                layer[key] = entry.kind.read(value, base)
            except Invalid as exc:
                for at, message in exc.problems:
                    issues.add(f"{here}{at}", message)
    return layer


def merge_layers(under: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Merge two layers: nested sections and ``env`` key by key, anything else replaced."""
    merged = dict(under)
    for key, value in over.items():
        below = merged.get(key)
        if isinstance(below, dict) and isinstance(value, dict):
            merged[key] = merge_layers(below, value)
        else:
            merged[key] = value
    return merged


def write_block(spec: object, fields: Mapping[str, Field | Block]) -> dict[str, Any]:
    """Write a spec back as a document section that :func:`read_block` reads as equal.

    Args:
        spec: A frozen spec whose attributes the table names.
        fields: The section's table.

    Returns:
        A plain dict; attributes that are None are left out (absent means none).
    """
    section: dict[str, Any] = {}
    for key, entry in fields.items():
        value = getattr(spec, entry.attr)
        if isinstance(entry, Block):
            section[key] = write_block(value, entry.fields)
        elif value is not None:
            section[key] = entry.kind.write(value)
    return section
