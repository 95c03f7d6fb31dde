"""Conversion between :class:`Metrics` and the Manager contract's ``MetricData``.

Theory of operation
-------------------
The Manager contract (``manager.proto``) defines::

    message MetricData {
      string type = 1;               // "cpu", "memory", "disk", "network", a plugin's name
      int64 timestamp = 2;           // Unix time in seconds
      map<string, double> values = 3;
    }

A :class:`Metrics` holds numbers, strings and tables of per-device rows; a ``MetricData``
holds only doubles under string keys. :func:`to_metric_data` flattens one into the other
with the naming below, and :func:`from_metric_data` undoes it exactly:
``from_metric_data(to_metric_data(m)) == m`` for every valid ``m`` (NaN values round-trip
bit for bit, though NaN never compares equal).

Keys (``N`` is an escaped name, ``I`` an escaped row identity, ``T`` an escaped text):

==========================  ======  ==============================================
key                         value   meaning
==========================  ======  ==============================================
``N``                       number  a numeric field: ``usage_percent`` -> 12.5
``N=T``                     1.0     a string field: ``model=AMD EPYC``
``N[K=I].N``                number  a numeric field of a row:
                                    ``disks[mountpoint=/boot].used_percent`` -> 41.5
``N[K=I].N=T``              1.0     a string field of a row:
                                    ``disks[mountpoint=/boot].fstype=ext4``
``N[K=I]``                  1.0     a row with no fields (only its identity)
``N[K]``                    0.0     an empty table (``K`` is its key field)
``@timestamp``              number  the exact Unix time, present only when it has a
                                    fractional part (``timestamp`` is its floor)
==========================  ======  ==============================================

String values live in the key, Prometheus-"info"-style, because a double cannot hold them.

Escaping makes the scheme unambiguous for every name, including mount points and interface
names that contain the separators. A character is written as ``%XX`` (upper-case hex of
each of its UTF-8 bytes) when it is ``%``, a control character or a lone surrogate (so
every key is valid UTF-8, as protobuf requires), and also

* in names (``N``, ``K``): ``.``, ``=``, ``[``, ``]`` and ``@``;
* in row identities (``I``): ``]``;
* in string values (``T``): nothing else, since they run to the end of the key.

So ``/mnt/a.b`` stays readable while a row named ``x]y`` becomes ``x%5Dy``. Decoding is
strict: a key that the encoder could not have produced (a bad or needless escape, a string
field whose value is not 1.0, conflicting keys) raises :class:`~collectors.MetricsError`
naming the key, which makes the two functions inverse bijections on valid inputs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from ._errors import MetricsError
from ._metrics import Metrics, Scalar, Table, Value

__all__ = ["TIMESTAMP_KEY", "MetricData", "from_metric_data", "to_metric_data"]

TIMESTAMP_KEY = "@timestamp"
"""The key carrying the exact timestamp when it is not a whole number of seconds."""

_INT64 = 2**63
_UNSAFE = "\x00-\x1f\x7f-\x9f\ud800-\udfff"
_NAME_ESCAPES = re.compile(f"[%.=\\[\\]@{_UNSAFE}]")
_IDENT_ESCAPES = re.compile(f"[%\\]{_UNSAFE}]")
_TEXT_ESCAPES = re.compile(f"[%{_UNSAFE}]")
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")


@dataclass(frozen=True, slots=True)
class MetricData:
    """The Manager contract's ``MetricData`` message, as a plain immutable value.

    Args:
        type: The metric type (the collector's name).
        timestamp: Unix time in whole seconds (the proto's ``int64``).
        values: Flat keys (see the module documentation) mapped to doubles.

    Raises:
        MetricsError: A field has the wrong type or the timestamp does not fit in int64.
    """

    type: str
    timestamp: int
    values: Mapping[str, float]

    def __post_init__(self) -> None:
        if not isinstance(self.type, str):
            raise MetricsError(f"MetricData.type must be a string; got {self.type!r}")
        if (
            isinstance(self.timestamp, bool)
            or not isinstance(self.timestamp, int)
            or not -_INT64 <= self.timestamp < _INT64
        ):
            raise MetricsError(
                f"MetricData.timestamp must be an int64 of Unix seconds; got {self.timestamp!r}"
            )
        values: dict[str, float] = {}
        for key, value in self.values.items():
            if not isinstance(key, str):
                raise MetricsError(f"MetricData key must be a string; got {key!r}")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise MetricsError(f"MetricData value of {key!r} must be a number; got {value!r}")
            values[key] = float(value)
        object.__setattr__(self, "values", MappingProxyType(values))


# --- escaping ---------------------------------------------------------------------------


def _percent(match: re.Match[str]) -> str:
    return "".join(f"%{byte:02X}" for byte in match.group().encode("utf-8", "surrogatepass"))


def _escape(text: str, escapes: re.Pattern[str]) -> str:
    return escapes.sub(_percent, text) if escapes.search(text) else text


def _unescape(text: str, escapes: re.Pattern[str], key: str) -> str:
    """Invert :func:`_escape`, refusing anything the encoder would not have written."""
    if "%" in text:
        raw = bytearray()
        position = 0
        for match in _PERCENT.finditer(text):
            raw += text[position : match.start()].encode("utf-8", "surrogatepass")
            raw.append(int(match.group(1), 16))
            position = match.end()
        raw += text[position:].encode("utf-8", "surrogatepass")
        try:
            decoded = raw.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            raise MetricsError(f"key {key!r}: escapes in {text!r} are not UTF-8") from None
    else:
        decoded = text
    if _escape(decoded, escapes) != text:
        raise MetricsError(
            f"key {key!r}: {text!r} is not canonically escaped "
            f"(expected {_escape(decoded, escapes)!r})"
        )
    return decoded


def _name(text: str) -> str:
    return _escape(text, _NAME_ESCAPES)


def _field_key(prefix: str, name: str, value: Scalar) -> tuple[str, float]:
    if isinstance(value, str):
        return f"{prefix}{_name(name)}={_escape(value, _TEXT_ESCAPES)}", 1.0
    return f"{prefix}{_name(name)}", value


# --- Metrics -> MetricData ---------------------------------------------------------------


def to_metric_data(metrics: Metrics) -> MetricData:
    """Flatten one collector's result into the Manager contract's ``MetricData``.

    Args:
        metrics: The result to convert.

    Returns:
        A ``MetricData`` whose ``type`` is ``metrics.name``, whose ``timestamp`` is the
        whole seconds of ``metrics.timestamp`` and whose values follow the naming in the
        module documentation.

    Raises:
        MetricsError: The timestamp does not fit in the proto's int64.
    """
    values: dict[str, float] = {}
    for name, value in metrics.values.items():
        if isinstance(value, Table):
            table = _name(name)
            key = _name(value.key)
            if not value.rows:
                values[f"{table}[{key}]"] = 0.0
            for ident, record in value.rows.items():
                row = f"{table}[{key}={_escape(ident, _IDENT_ESCAPES)}]"
                if not record:
                    values[row] = 1.0
                for field, scalar in record.items():
                    flat, number = _field_key(f"{row}.", field, scalar)
                    values[flat] = number
        else:
            flat, number = _field_key("", name, value)
            values[flat] = number
    seconds = math.floor(metrics.timestamp)
    if not -_INT64 <= seconds < _INT64:
        raise MetricsError(f"{metrics.name}: timestamp {metrics.timestamp!r} does not fit int64")
    if seconds != metrics.timestamp:
        values[TIMESTAMP_KEY] = metrics.timestamp
    return MetricData(type=metrics.name, timestamp=seconds, values=values)


# --- MetricData -> Metrics ---------------------------------------------------------------


class _TableBuilder:
    def __init__(self, key: str) -> None:
        self.key = key
        self.empty_marker = False
        self.rows: dict[str, dict[str, Scalar]] = {}


def _split_field(text: str, key: str) -> tuple[str, Scalar | None]:
    """Split ``N`` or ``N=T`` into a field name and its string value (None if numeric)."""
    name, equals, rest = text.partition("=")
    if not name:
        raise MetricsError(f"key {key!r}: empty field name")
    field = _unescape(name, _NAME_ESCAPES, key)
    return field, (_unescape(rest, _TEXT_ESCAPES, key) if equals else None)


def _expect(value: float, wanted: float, key: str, what: str) -> None:
    if value != wanted:
        raise MetricsError(f"key {key!r}: {what} must have the value {wanted}; got {value!r}")


def _set(fields: dict[str, Scalar], name: str, value: Scalar, key: str) -> None:
    if name in fields:
        raise MetricsError(f"key {key!r}: field {name!r} appears more than once")
    fields[name] = value


def _decode_table_key(
    key: str, value: float, bracket: int, tables: dict[str, _TableBuilder], plain: set[str]
) -> None:
    table_name = _unescape(key[:bracket], _NAME_ESCAPES, key)
    if not table_name:
        raise MetricsError(f"key {key!r}: empty table name")
    if table_name in plain:
        raise MetricsError(f"key {key!r}: {table_name!r} is both a field and a table")
    rest = key[bracket + 1 :]
    end = re.search(r"[=\]]", rest)
    if end is None:
        raise MetricsError(f"key {key!r}: unterminated '['")
    row_key = _unescape(rest[: end.start()], _NAME_ESCAPES, key)
    if not row_key:
        raise MetricsError(f"key {key!r}: empty row key")
    builder = tables.setdefault(table_name, _TableBuilder(row_key))
    if builder.key != row_key:
        raise MetricsError(
            f"key {key!r}: table {table_name!r} is keyed by both {builder.key!r} and {row_key!r}"
        )
    if end.group() == "]":  # "N[K]": the empty-table marker
        if rest[end.end() :]:
            raise MetricsError(f"key {key!r}: unexpected text after ']'")
        _expect(value, 0.0, key, "an empty-table marker")
        builder.empty_marker = True
        return
    after = rest[end.end() :]
    close = after.find("]")
    if close < 0:
        raise MetricsError(f"key {key!r}: unterminated '['")
    ident = _unescape(after[:close], _IDENT_ESCAPES, key)
    tail = after[close + 1 :]
    if not tail:  # "N[K=I]": a row with no fields
        _expect(value, 1.0, key, "an empty-row marker")
        if ident in builder.rows:
            raise MetricsError(f"key {key!r}: row {ident!r} appears more than once")
        builder.rows[ident] = {}
        return
    if not tail.startswith("."):
        raise MetricsError(f"key {key!r}: expected '.' after ']'")
    field, text = _split_field(tail[1:], key)
    if field == row_key:
        raise MetricsError(f"key {key!r}: a row cannot repeat its key field {row_key!r}")
    fields = builder.rows.setdefault(ident, {})
    if text is not None:
        _expect(value, 1.0, key, "a string field")
        _set(fields, field, text, key)
    else:
        _set(fields, field, value, key)


def from_metric_data(data: MetricData) -> Metrics:
    """Rebuild the :class:`Metrics` that :func:`to_metric_data` flattened.

    Args:
        data: A ``MetricData`` following the naming in the module documentation.

    Returns:
        The original ``Metrics``: ``from_metric_data(to_metric_data(m)) == m``.

    Raises:
        MetricsError: A key is malformed or not canonical, two keys conflict, a marker or
            string field does not have its fixed value, or ``@timestamp`` disagrees with
            ``timestamp``. The message names the key.
    """
    plain: dict[str, Scalar] = {}
    tables: dict[str, _TableBuilder] = {}
    timestamp: float = data.timestamp
    for key, value in data.values.items():
        if key.startswith("@"):
            if key != TIMESTAMP_KEY:
                raise MetricsError(f"key {key!r}: unknown reserved key")
            if not math.isfinite(value) or math.floor(value) != data.timestamp:
                raise MetricsError(
                    f"key {key!r}: {value!r} is not within the second {data.timestamp}"
                )
            if value == data.timestamp:
                raise MetricsError(f"key {key!r}: present although the timestamp is whole")
            timestamp = value
            continue
        separator = re.search(r"[=\[]", key)
        if separator is not None and separator.group() == "[":
            _decode_table_key(key, value, separator.start(), tables, set(plain))
            continue
        field, text = _split_field(key, key)
        if field in tables:
            raise MetricsError(f"key {key!r}: {field!r} is both a field and a table")
        if text is not None:
            _expect(value, 1.0, key, "a string field")
            _set(plain, field, text, key)
        else:
            _set(plain, field, value, key)
    values: dict[str, Value] = dict(plain)
    for name, builder in tables.items():
        if builder.empty_marker and builder.rows:
            raise MetricsError(f"table {name!r} is marked empty but has rows")
        values[name] = Table(key=builder.key, rows=builder.rows)
    if not data.type:
        raise MetricsError("MetricData.type is empty")
    return Metrics(name=data.type, timestamp=timestamp, values=values)
