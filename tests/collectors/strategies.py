"""Hypothesis strategies shared by the collectors tests."""

from __future__ import annotations

from hypothesis import strategies as st

from collectors import CpuTimes, Metrics, Table

# Every separator of the MetricData naming, a control character and a lone surrogate, so
# that short examples exercise the escaping; plus any code point at all.
_TRICKY = st.sampled_from(["%", ".", "=", "[", "]", "@", "/", " ", "\x00", "\ud800", "é", "a"])
chars = st.one_of(_TRICKY, st.characters(exclude_categories=()))
texts = st.text(chars, max_size=12)
names = st.text(chars, min_size=1, max_size=12)

numbers = st.one_of(
    st.floats(allow_nan=False),
    st.integers(min_value=-(2**53), max_value=2**53),
)
scalars = st.one_of(numbers, texts)
records = st.dictionaries(names, scalars, max_size=4)


@st.composite
def tables(draw: st.DrawFn) -> Table:
    key = draw(names)
    rows = draw(
        st.dictionaries(
            texts, records.map(lambda r: {k: v for k, v in r.items() if k != key}), max_size=4
        )
    )
    return Table(key=key, rows=rows)


sendable_names = st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=12)
timestamps = st.one_of(
    st.floats(min_value=-1e12, max_value=1e12, allow_nan=False),
    st.integers(min_value=0, max_value=2**40),
)
metrics = st.builds(
    Metrics,
    name=sendable_names,
    timestamp=timestamps,
    values=st.dictionaries(names, st.one_of(scalars, tables()), max_size=6),
)

# CPU seconds: whole numbers (as /proc/stat's ticks are), so sums and differences are exact
# and properties can compare percentages closely.
cpu_seconds = st.integers(min_value=0, max_value=2**40).map(float)
cpu_times = st.builds(
    CpuTimes,
    user=cpu_seconds,
    nice=cpu_seconds,
    system=cpu_seconds,
    idle=cpu_seconds,
    iowait=cpu_seconds,
    irq=cpu_seconds,
    softirq=cpu_seconds,
    steal=cpu_seconds,
)
