"""The seed's ``Metrics``: what one collection of one collector produced.

Theory of operation
-------------------
The seed's Go type is ``Metrics{Name, Timestamp, Values map[string]interface{}}``, where a
value is a number, a string (the CPU ``model``) or a list of maps (one map per disk or per
network interface). We keep that shape, with two changes that make it checkable and
lossless to convert:

* Numbers are ``float``. The Manager contract carries ``map<string, double>``, and the
  seed's client normalises every value to float64 before sending; doing it here means a
  value compares equal before and after the trip. Integers are accepted and converted.
* A list of per-device maps is a :class:`Table`: the name of the field that identifies a
  row (``mountpoint``, ``interface``) and the rows keyed by that identity. Rows are unique
  by construction, and a row's identity is never repeated inside the row.
  :meth:`Table.records` gives back the seed's list-of-maps view.

Instances are immutable (their mappings are read-only views of private copies), so one
snapshot can be handed to many readers. Everything is validated at construction and a bad
value raises :class:`~collectors.MetricsError` naming the field.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TypeAlias

from ._errors import MetricsError

__all__ = ["Metrics", "Record", "Scalar", "Table", "Value"]

Scalar: TypeAlias = float | str
"""One field's value: a number (always stored as ``float``) or a string."""

Record: TypeAlias = Mapping[str, Scalar]
"""The fields of one row of a :class:`Table`."""

# Control characters and lone surrogates cannot travel in a protobuf string.
_UNSENDABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _scalar(value: object, where: str) -> Scalar:
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MetricsError(f"{where}: expected a number or a string; got {value!r}")
    if isinstance(value, int):
        try:
            return float(value)
        except OverflowError:
            raise MetricsError(f"{where}: {value} does not fit in a double") from None
    return value


def _name(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise MetricsError(f"{what} must be a non-empty string; got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Table:
    """Per-device values: one row per disk, network interface, GPU...

    Args:
        key: The name of the field that identifies a row, e.g. ``"mountpoint"``.
        rows: Each row's identity (e.g. ``"/boot"``) mapped to its other fields. A row must
            not contain a field named like ``key``: the identity is the row's key.

    Raises:
        MetricsError: A name is empty or not a string, a row repeats its identity field,
            or a value is neither a number nor a string.
    """

    key: str
    rows: Mapping[str, Record]

    def __post_init__(self) -> None:
        _name(self.key, "a table's key")
        if not isinstance(self.rows, Mapping):
            raise MetricsError(f"table rows must be a mapping; got {self.rows!r}")
        rows: dict[str, Record] = {}
        for ident, record in self.rows.items():
            if not isinstance(ident, str):
                raise MetricsError(f"row identity must be a string; got {ident!r}")
            if not isinstance(record, Mapping):
                raise MetricsError(f"row {ident!r} must be a mapping; got {record!r}")
            fields: dict[str, Scalar] = {}
            for field, value in record.items():
                _name(field, f"a field name in row {ident!r}")
                if field == self.key:
                    raise MetricsError(
                        f"row {ident!r} repeats its identity field {field!r}; "
                        "the identity is the row's key"
                    )
                fields[field] = _scalar(value, f"row {ident!r} field {field!r}")
            rows[ident] = MappingProxyType(fields)
        object.__setattr__(self, "rows", MappingProxyType(rows))

    def records(self) -> tuple[dict[str, Scalar], ...]:
        """The seed's list-of-maps view: each row with its identity field put back.

        Returns:
            One new dict per row, in row order, e.g.
            ``{"mountpoint": "/", "fstype": "ext4", "used_percent": 41.5, ...}``.
        """
        return tuple({self.key: ident, **record} for ident, record in self.rows.items())


Value: TypeAlias = Scalar | Table
"""A top-level value of :class:`Metrics`: a number, a string or a table of rows."""


@dataclass(frozen=True, slots=True)
class Metrics:
    """One collector's result, as the seed defines it: name, timestamp and values.

    Args:
        name: The collector's name (``"cpu"``, ``"disk"``, a plugin's name). It becomes the
            Manager's ``MetricData.type``, so it must be non-empty and sendable (no control
            characters or lone surrogates).
        timestamp: When the values were read, as Unix time in seconds (wall clock: the
            Manager correlates hosts by it). Must be finite.
        values: Field names mapped to numbers, strings or :class:`Table` values. Integers
            are stored as floats.

    Raises:
        MetricsError: A field is invalid; the message names it.
    """

    name: str
    timestamp: float
    values: Mapping[str, Value]

    def __post_init__(self) -> None:
        _name(self.name, "a metrics name")
        if _UNSENDABLE.search(self.name):
            raise MetricsError(f"metrics name {self.name!r} contains unsendable characters")
        timestamp = self.timestamp
        if isinstance(timestamp, int | float) and not isinstance(timestamp, bool):
            try:
                timestamp = float(timestamp)
            except OverflowError:
                timestamp = math.inf
        if not isinstance(timestamp, float) or not math.isfinite(timestamp):
            raise MetricsError(
                f"{self.name}: timestamp must be a finite number; got {self.timestamp!r}"
            )
        object.__setattr__(self, "timestamp", timestamp)
        if not isinstance(self.values, Mapping):
            raise MetricsError(f"{self.name}: values must be a mapping; got {self.values!r}")
        values: dict[str, Value] = {}
        for field, value in self.values.items():
            _name(field, f"{self.name}: a field name")
            values[field] = (
                value if isinstance(value, Table) else _scalar(value, f"{self.name}.{field}")
            )
        object.__setattr__(self, "values", MappingProxyType(values))

    def number(self, field: str) -> float:
        """A top-level numeric field.

        Args:
            field: The field's name, e.g. ``"usage_percent"``.

        Returns:
            Its value.

        Raises:
            MetricsError: The field is missing or is not a number.
        """
        value = self.values.get(field)
        if not isinstance(value, float):
            raise MetricsError(f"{self.name}.{field}: expected a number; got {value!r}")
        return value

    def table(self, field: str) -> Table:
        """A top-level table field.

        Args:
            field: The table's name, e.g. ``"disks"``.

        Returns:
            The table.

        Raises:
            MetricsError: The field is missing or is not a table.
        """
        value = self.values.get(field)
        if not isinstance(value, Table):
            raise MetricsError(f"{self.name}.{field}: expected a table; got {value!r}")
        return value
