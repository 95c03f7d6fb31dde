"""Metrics <-> MetricData: the documented naming, and that it loses nothing."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, strategies as st

from collectors import (
    TIMESTAMP_KEY,
    MetricData,
    Metrics,
    MetricsError,
    Table,
    from_metric_data,
    to_metric_data,
)
from tests.collectors.strategies import metrics, names


@given(metrics)
def test_round_trip(m: Metrics) -> None:
    """Converting to MetricData and back gives the original Metrics."""
    assert from_metric_data(to_metric_data(m)) == m


@given(metrics)
def test_every_key_is_valid_utf8(m: Metrics) -> None:
    """Every key and the type can be sent as a protobuf string (strict UTF-8)."""
    data = to_metric_data(m)
    data.type.encode("utf-8")
    for key in data.values:
        key.encode("utf-8")


@given(metrics)
def test_timestamp_is_whole_seconds(m: Metrics) -> None:
    """MetricData.timestamp is the floor of the timestamp; the fraction travels apart."""
    data = to_metric_data(m)
    assert data.timestamp == math.floor(m.timestamp)
    assert (TIMESTAMP_KEY in data.values) == (m.timestamp != data.timestamp)


@given(
    st.dictionaries(
        st.text(st.sampled_from("ab%.=[]@2E5D1"), max_size=10),
        st.sampled_from([0.0, 1.0, 2.5]),
        max_size=5,
    )
)
def test_decoding_is_canonical(values: dict[str, float]) -> None:
    """Any MetricData is either rejected or exactly what encoding its decoding gives."""
    data = MetricData(type="x", timestamp=7, values=values)
    try:
        decoded = from_metric_data(data)
    except MetricsError:
        return
    assert to_metric_data(decoded) == data


@given(names, names)
def test_names_with_separators_stay_distinct(a: str, b: str) -> None:
    """Two different field names never produce the same key."""
    if a == b:
        return
    data = to_metric_data(Metrics(name="t", timestamp=0, values={a: 1.0, b: 2.0}))
    assert len(data.values) == 2


def test_scalar_naming() -> None:
    """Numbers keep their name; strings go in the key with the value 1.0."""
    m = Metrics(
        name="cpu",
        timestamp=1700000000,
        values={"usage_percent": 12.5, "cores": 8, "model": "Xeon(R) CPU @ 2.20GHz"},
    )
    data = to_metric_data(m)
    assert data == MetricData(
        type="cpu",
        timestamp=1700000000,
        values={"usage_percent": 12.5, "cores": 8.0, "model=Xeon(R) CPU @ 2.20GHz": 1.0},
    )


def test_table_naming() -> None:
    """Rows are named table[key=identity].field; separators in names are escaped."""
    disks = Table(
        key="mountpoint",
        rows={
            "/": {"fstype": "ext4", "used_percent": 41.5},
            "/mnt/a.b=c[d]": {"used": 3},
            "/empty": {},
        },
    )
    m = Metrics(name="disk", timestamp=1700000000.25, values={"disks": disks})
    assert dict(to_metric_data(m).values) == {
        "disks[mountpoint=/].fstype=ext4": 1.0,
        "disks[mountpoint=/].used_percent": 41.5,
        "disks[mountpoint=/mnt/a.b=c[d%5D].used": 3.0,
        "disks[mountpoint=/empty]": 1.0,
        TIMESTAMP_KEY: 1700000000.25,
    }


def test_empty_table_and_escaped_names() -> None:
    """An empty table keeps its key; reserved characters in names are %-escaped."""
    m = Metrics(
        name="n",
        timestamp=5,
        values={"t": Table(key="k", rows={}), "a.b": 1.0, "@x": "p%q\n"},
    )
    assert dict(to_metric_data(m).values) == {"t[k]": 0.0, "a%2Eb": 1.0, "%40x=p%25q%0A": 1.0}


def test_nan_survives() -> None:
    """NaN values cross bit for bit, although NaN never compares equal."""
    back = from_metric_data(to_metric_data(Metrics(name="n", timestamp=0, values={"v": math.nan})))
    assert math.isnan(back.number("v"))


def test_metrics_normalises_numbers() -> None:
    """Integers become floats, as the seed's client normalises them for the wire."""
    m = Metrics(name="n", timestamp=3, values={"v": 2})
    assert type(m.values["v"]) is float
    assert type(m.timestamp) is float


def test_records_give_back_the_seed_shape() -> None:
    """Table.records() is the seed's list of maps, identity field included."""
    table = Table(key="interface", rows={"eth0": {"bytes_sent": 1}})
    assert table.records() == ({"interface": "eth0", "bytes_sent": 1.0},)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"a%2": 1.0}, "not canonically escaped"),
        ({"a%41": 1.0}, "not canonically escaped"),
        ({"a%FF": 1.0}, "not UTF-8"),
        ({"a.b": 1.0}, "not canonically escaped"),
        ({"model=x": 2.0}, "string field must have the value 1.0"),
        ({"model=x": 1.0, "model=y": 1.0}, "appears more than once"),
        ({"t[k]": 0.0, "t[k=a]": 1.0}, "marked empty but has rows"),
        ({"t[k=a]": 1.0, "t[j=b]": 1.0}, "keyed by both"),
        ({"t[k=a].x": 1.0, "t": 1.0}, "both a field and a table"),
        ({"t[k=a]x": 1.0}, "expected '.' after ']'"),
        ({"t[k=a": 1.0}, "unterminated"),
        ({"t[k=a].k": 1.0}, "cannot repeat its key field"),
        ({"@other": 1.0}, "unknown reserved key"),
        ({TIMESTAMP_KEY: 9.5}, "not within the second"),
        ({"": 1.0}, "empty field name"),
    ],
)
def test_malformed_metric_data_is_rejected(values: dict[str, float], message: str) -> None:
    """Keys the encoder cannot produce raise MetricsError naming the problem."""
    with pytest.raises(MetricsError, match=message):
        from_metric_data(MetricData(type="x", timestamp=7, values=values))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "", "timestamp": 0, "values": {}}, "non-empty"),
        ({"name": "a\x00", "timestamp": 0, "values": {}}, "unsendable"),
        ({"name": "a", "timestamp": math.inf, "values": {}}, "finite"),
        ({"name": "a", "timestamp": 0, "values": {"v": True}}, "a.v: expected a number"),
        ({"name": "a", "timestamp": 0, "values": {"v": 10**400}}, "does not fit"),
        ({"name": "a", "timestamp": 0, "values": {"": 1}}, "non-empty"),
    ],
)
def test_invalid_metrics_are_rejected(kwargs: dict[str, object], message: str) -> None:
    """Metrics validates its fields at construction and names the bad one."""
    with pytest.raises(MetricsError, match=message):
        Metrics(**kwargs)  # type: ignore[arg-type]


def test_table_rejects_repeated_identity() -> None:
    """A row may not repeat the table's key field: the identity is the row's key."""
    with pytest.raises(MetricsError, match="repeats its identity field"):
        Table(key="mountpoint", rows={"/": {"mountpoint": "/"}})


def test_timestamp_outside_int64_is_rejected() -> None:
    """The proto's int64 bounds the timestamp."""
    with pytest.raises(MetricsError, match="int64"):
        to_metric_data(Metrics(name="a", timestamp=1e300, values={}))
