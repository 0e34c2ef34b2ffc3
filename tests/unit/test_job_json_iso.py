"""Timestamps of the job JSON (daemon/job_json.py `iso`): remembered once
written, and never written with another value's offset."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from daemon import job_json
from daemon.job_json import iso


def test_utc_is_written_with_z() -> None:
    assert iso(datetime(2026, 12, 3, 8, 0, 1, 500, tzinfo=UTC)) == "2026-12-03T08:00:01.000500Z"
    assert iso(None) is None


def test_one_instant_in_two_zones_keeps_each_offset() -> None:
    utc = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
    paris = utc.astimezone(timezone(timedelta(hours=1)))
    assert utc == paris  # the same instant: equal, same hash
    for _ in range(2):
        assert iso(utc) == "2026-12-03T08:00:00Z"
        assert iso(paris) == "2026-12-03T09:00:00+01:00"


def test_the_two_folds_of_an_ambiguous_hour_keep_their_offsets() -> None:
    zone = ZoneInfo("Europe/Paris")
    first = datetime(2026, 10, 25, 2, 30, tzinfo=zone, fold=0)
    second = first.replace(fold=1)
    assert first == second
    for _ in range(2):
        assert iso(first) == "2026-10-25T02:30:00+02:00"
        assert iso(second) == "2026-10-25T02:30:00+01:00"


def test_the_memory_is_bounded() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for n in range(job_json._ISO_MAX + 10):
        value = start + timedelta(seconds=n)
        assert iso(value) == value.isoformat().replace("+00:00", "Z")
    assert len(job_json._ISO) <= job_json._ISO_MAX
