"""Hypothesis strategies for configuration documents: valid ones, faulty ones, any JSON.

Valid documents are built so that every combination of ``agent_defaults`` and agent
values stays valid: backoff bases are drawn below the built-in ``backoff_max`` (60 s)
and caps above the built-in ``backoff_base`` (10 s), so merging never orders them wrongly.
"""

from __future__ import annotations

import copy
import shutil
from typing import Any

from hypothesis import strategies as st

from supervisor._duration import format_duration, parse_duration

# Printable text that YAML and TOML both carry unchanged.
TEXT = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.sampled_from("éü→日"),
    max_size=12,
)
IDS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True)
_NAME = st.from_regex(r"[a-z0-9_][a-z0-9_.-]{0,7}", fullmatch=True).filter(
    lambda name: name not in (".", "..")
)
ABSOLUTE_PATHS = st.lists(_NAME, min_size=1, max_size=3).map(lambda parts: "/" + "/".join(parts))
RELATIVE_PATHS = st.lists(_NAME | st.just(".."), min_size=1, max_size=3).map("/".join)
PATHS = ABSOLUTE_PATHS | RELATIVE_PATHS
# A binary_path with a "/" is a path; a bare name is looked up on PATH.
BINARIES = ABSOLUTE_PATHS | RELATIVE_PATHS.map(lambda path: f"./{path}")
if shutil.which("sh"):
    BINARIES = BINARIES | st.just("sh")


def durations(min_s: float = 0, max_s: float = 10 * 86400) -> st.SearchStrategy[Any]:
    """Durations in every accepted spelling: numbers and Go-style strings."""
    seconds = st.floats(min_value=min_s, max_value=max_s, allow_nan=False)
    return st.one_of(
        st.integers(min_value=int(min_s + 0.999), max_value=int(max_s)),
        seconds,
        seconds.map(format_duration),
        st.sampled_from(
            ["30s", "5m", "1h30m", "500ms", "1.5s", "0s", "2h", "1d", "1h30m10s"]
        ).filter(lambda text: min_s <= parse_duration(text) <= max_s),
    )


SIZES = st.integers(min_value=0, max_value=2**40) | st.sampled_from(
    ["500MB", "512KiB", "1GiB", "10B", "1.5KB", "0"]
)
SIGNALS = st.sampled_from(
    ["TERM", "SIGTERM", "INT", "hup", "KILL", "QUIT", "USR1", "SIGUSR2", 15, 9, "2"]
)
ENV = st.dictionaries(
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True),
    TEXT | st.integers(-(10**6), 10**6) | st.floats(allow_nan=False, allow_infinity=False),
    max_size=3,
)
URLS = st.sampled_from(
    ["", "http://localhost:9100/metrics", "https://example.com", "http://127.0.0.1:8080/health"]
)


def _optional(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=fields)


HEALTH_CHECKS = _optional(
    interval=durations(min_s=0.001),
    heartbeat_timeout=durations(),
    cpu_threshold=st.floats(min_value=0, max_value=6400) | st.integers(0, 6400),
    memory_threshold=SIZES,
    threshold_duration=durations(),
    http_endpoint=URLS,
    tcp_endpoint=st.sampled_from(["", "127.0.0.1:9100", "localhost:22", "[::1]:8080"]),
    heartbeat_required=st.booleans(),
    timeout=durations(min_s=0.001),
    failures=st.integers(min_value=1, max_value=100),
)
RESTARTS = _optional(
    policy=st.sampled_from(["always", "on-failure", "never"]),
    max_retries=st.integers(min_value=-1, max_value=1000),
    backoff_base=durations(max_s=10),
    backoff_max=durations(min_s=60, max_s=86400),
    reset_after=durations(),
)
LOGS = _optional(file=PATHS | st.just(""), max_bytes=SIZES, backups=st.integers(0, 100))

_AGENT_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "type": st.sampled_from(["filebeat", "telegraf", "node_exporter", "custom"]),
    "name": TEXT,
    "config_file": PATHS | st.just(""),
    "work_dir": PATHS,
    "socket_path": PATHS | st.just(""),
    "enabled": st.booleans(),
    "args": st.lists(TEXT, max_size=4),
    "env": ENV,
    "stop_signal": SIGNALS,
    "stop_timeout": durations(),
    "start_seconds": durations(),
    "health_check": HEALTH_CHECKS,
    "restart": RESTARTS,
    "log": LOGS,
}
AGENT_DEFAULTS = _optional(binary_path=BINARIES, **_AGENT_FIELDS)
DAEMONS = _optional(
    id=TEXT,
    log_level=st.sampled_from(["debug", "info", "warning", "warn", "error", "INFO"]),
    log_file=PATHS | st.just(""),
    pid_file=PATHS | st.just(""),
    work_dir=PATHS,
    stop_agents_on_exit=st.booleans(),
)
# What sibling packages keep in their sections: JSON-like, minus what TOML cannot hold.
VERBATIM = st.dictionaries(
    st.text(max_size=8),
    st.recursive(
        st.booleans() | st.integers(-(2**63), 2**63 - 1) | TEXT,
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(st.text(max_size=5), children, max_size=3)
        ),
        max_leaves=8,
    ),
    max_size=3,
)


def agents(agent_id: str) -> st.SearchStrategy[dict[str, Any]]:
    """One valid agent entry with this id (binary_path always set)."""
    return st.fixed_dictionaries(
        {"id": st.just(agent_id), "binary_path": BINARIES}, optional=_AGENT_FIELDS
    )


@st.composite
def valid_documents(draw: st.DrawFn, min_agents: int = 0) -> dict[str, Any]:
    """A valid configuration document (valid for parse_config; paths need not exist)."""
    ids = draw(st.lists(IDS, min_size=min_agents, max_size=4, unique=True))
    document: dict[str, Any] = draw(
        _optional(
            daemon=DAEMONS,
            agent_defaults=AGENT_DEFAULTS,
            # The manager section is validated by the Manager client's schema.
            manager=st.fixed_dictionaries(
                {"address": st.sampled_from(["m:9090", "manager.example.org", "[::1]:9090"])}
            ),
            collectors=VERBATIM,
            update=VERBATIM,
        )
    )
    with_agents: bool = draw(st.booleans())
    if ids or with_agents:
        document["agents"] = [draw(agents(agent_id)) for agent_id in ids]
    return document


# Faults: each is a function of (document, draw) that damages a copy in place and returns
# the path of the damage.

AGENT_KEYS = ["id", "binary_path", *_AGENT_FIELDS]
TOP_LEVEL_KEYS = ["daemon", "manager", "agents", "agent_defaults", "collectors", "update", "agent"]

_BAD_TYPES: list[tuple[str, object]] = [
    ("enabled", "yes"),
    ("stop_timeout", [1]),
    ("args", "--verbose"),
    ("args", ["-c", 9100]),
    ("env", ["A=1"]),
    ("name", 5),
    ("binary_path", 5),
    ("stop_signal", [15]),
    ("health_check", 5),
    ("health_check.cpu_threshold", "high"),
    ("health_check.memory_threshold", {"mb": 5}),
    ("health_check.tcp_endpoint", "localhost"),
    ("health_check.tcp_endpoint", "[::1:80"),
    ("health_check.failures", 0),
    ("health_check.heartbeat_required", "maybe"),
    ("restart.max_retries", "ten"),
    ("restart.max_retries", True),
    ("log.backups", 1.5),
    ("log.file", 7),
]
_BAD_ENUMS: list[tuple[str, object]] = [
    ("type", "apache"),
    ("restart.policy", "sometimes"),
    ("stop_signal", "SIGNOPE"),
]
_DURATION_KEYS = [
    "stop_timeout",
    "start_seconds",
    "health_check.interval",
    "health_check.heartbeat_timeout",
    "health_check.threshold_duration",
    "health_check.timeout",
    "restart.backoff_base",
    "restart.backoff_max",
    "restart.reset_after",
]


def _set(section: dict[str, Any], dotted: str, value: object) -> None:
    *blocks, key = dotted.split(".")
    for block in blocks:
        if not isinstance(section.get(block), dict):
            section[block] = {}
        section = section[block]
    section[key] = value


FAULT_KINDS = [
    "bad_type",
    "bad_enum",
    "unknown_key",
    "negative_duration",
    "duplicate_id",
    "missing_required",
    "bad_default",
    "bad_daemon",
]


@st.composite
def faulty_documents(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """A valid document with one fault injected, and the path where the fault is."""
    document = copy.deepcopy(draw(valid_documents(min_agents=1)))
    entries: list[dict[str, Any]] = document["agents"]
    index = draw(st.integers(0, len(entries) - 1))
    entry = entries[index]
    where = f"agents[{index}]"
    kind = draw(st.sampled_from(FAULT_KINDS))
    if kind == "bad_type":
        key, value = draw(st.sampled_from(_BAD_TYPES))
        _set(entry, key, value)
        if key == "args" and isinstance(value, list):
            return document, f"{where}.args[1]"
        return document, f"{where}.{key}"
    if kind == "bad_enum":
        key, value = draw(st.sampled_from(_BAD_ENUMS))
        _set(entry, key, value)
        return document, f"{where}.{key}"
    if kind == "unknown_key":
        key = draw(st.from_regex(r"x_[a-z]{1,8}", fullmatch=True))
        block = draw(st.sampled_from(["", "agent", "health_check", "restart", "log", "daemon"]))
        if block == "":
            document[key] = 1
            return document, key
        if block == "agent":
            entry[key] = 1
            return document, f"{where}.{key}"
        if block == "daemon":
            _set(document, f"daemon.{key}", 1)
            return document, f"daemon.{key}"
        _set(entry, f"{block}.{key}", 1)
        return document, f"{where}.{block}.{key}"
    if kind == "negative_duration":
        key = draw(st.sampled_from(_DURATION_KEYS))
        _set(entry, key, draw(st.sampled_from([-1, -0.5, "-5s", "-1h30m"])))
        return document, f"{where}.{key}"
    if kind == "duplicate_id":
        # The ids are unique, so the later of the two is the first duplicate.
        later = draw(st.integers(index + 1, len(entries)))
        if later == len(entries):
            entries.append(copy.deepcopy(entry))
        entries[later]["id"] = entry["id"]
        return document, f"agents[{later}].id"
    if kind == "missing_required":
        key = draw(st.sampled_from(["id", "binary_path"]))
        del entry[key]
        if key == "binary_path" and isinstance(document.get("agent_defaults"), dict):
            document["agent_defaults"].pop("binary_path", None)
        return document, f"{where}.{key}"
    if kind == "bad_default":
        key, value = draw(st.sampled_from(_BAD_TYPES + _BAD_ENUMS))
        if key == "binary_path":
            key, value = "enabled", "no"
        defaults = document.setdefault("agent_defaults", {})
        _set(defaults, key, value)
        if key == "args" and isinstance(value, list):
            return document, "agent_defaults.args[1]"
        return document, f"agent_defaults.{key}"
    # bad_daemon
    key, value = draw(
        st.sampled_from(
            [
                ("log_level", "verbose"),
                ("stop_agents_on_exit", "yes"),
                ("work_dir", 5),
                ("id", 42),
            ]
        )
    )
    _set(document, f"daemon.{key}", value)
    return document, f"daemon.{key}"


# Arbitrary JSON-like input, shaped like a configuration often enough to reach deep code.

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=10,
)


def _keyed(keys: list[str], values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.sampled_from(keys) | st.text(max_size=6), values, max_size=6)


_BLOCK_KEYS = ["interval", "cpu_threshold", "policy", "backoff_base", "backoff_max", "file"]
_FUZZ_AGENT = _keyed(AGENT_KEYS, JSON | _keyed(_BLOCK_KEYS, JSON))
JSON_DOCUMENTS = JSON | _keyed(
    TOP_LEVEL_KEYS, JSON | _FUZZ_AGENT | st.lists(_FUZZ_AGENT | JSON, max_size=3)
)
