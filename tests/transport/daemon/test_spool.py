"""The report spool's files on disk: what a full spool drops, and what it says."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from transport.daemon._spool import ReportSpool
from transport.daemon._spool_policy import EntryKind, SpoolLimits

NOW = 1_700_000_000.0


def spool(tmp_path: Path, max_bytes: int) -> ReportSpool:
    opened = ReportSpool(str(tmp_path / "spool"), SpoolLimits(max_bytes, 3600.0))
    opened.open(now=NOW)
    return opened


def files(tmp_path: Path) -> list[str]:
    return sorted(os.listdir(tmp_path / "spool"))


def test_a_full_spool_drops_its_oldest_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = spool(tmp_path, 250)
    for seq in (1, 2):
        assert s.append(seq, EntryKind.METRICS, b"x" * 100, created=NOW + seq)
    with caplog.at_level(logging.WARNING):
        assert s.append(3, EntryKind.METRICS, b"y" * 100, created=NOW + 3)
    assert [entry.split("-")[0] for entry in files(tmp_path)] == [f"{2:016d}", f"{3:016d}"]
    assert s.statistics().evicted == 1
    assert [r.getMessage() for r in caplog.records] == [
        "D2003 the report spool is full (250 bytes): dropped 1 oldest report(s)"
    ]


def test_a_report_larger_than_the_spool_is_the_one_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = spool(tmp_path, 250)
    assert s.append(1, EntryKind.METRICS, b"x" * 100, created=NOW)
    with caplog.at_level(logging.WARNING):
        assert not s.append(2, EntryKind.METRICS, b"z" * 300, created=NOW + 1)
    assert len(files(tmp_path)) == 1 and len(s) == 1  # what was spooled stays
    assert [r.getMessage() for r in caplog.records] == [
        "D2003 a new report (300 bytes) does not fit the report spool (250 bytes): dropped it"
    ]
