"""Declared params refuse what JSON or PostgreSQL's jsonb cannot hold."""

from __future__ import annotations

import math
import sys

import pytest

from daemon.actions import ExportRequest, _check_request
from daemon.errors import ParamError
from daemon.kinds.params import Param


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_float_params_must_be_finite(value: float) -> None:
    with pytest.raises(ParamError, match="finite"):
        Param("float").check(value, "ratio")


@pytest.mark.parametrize("delay", [math.nan, math.inf])
def test_delay_must_be_finite(delay: float) -> None:
    with pytest.raises(ParamError) as info:
        _check_request(ExportRequest(kind="noop", delay_seconds=delay))
    assert info.value.field == "delay_seconds"


def test_text_refuses_nul() -> None:
    with pytest.raises(ParamError, match="NUL"):
        Param("text").check("a\x00b", "name")


# Boundaries: exactly what PostgreSQL accepts for a value bound into an
# export query (tests/integration/kinds/test_param_ranges.py runs them).


@pytest.mark.parametrize("value", [-(2**63) + 1, -1, 0, 2**63 - 1])
def test_int_params_within_bigint_are_accepted(value: int) -> None:
    assert Param("int").check(value, "n") == value


@pytest.mark.parametrize("value", [-(2**63), 2**63, -(2**64), 10**30])
def test_int_params_beyond_bigint_are_refused(value: int) -> None:
    with pytest.raises(ParamError, match="between -9223372036854775807 and 9223372036854775807"):
        Param("int").check(value, "n")


@pytest.mark.parametrize(
    "value", [sys.float_info.max, -sys.float_info.max, 5e-324, 2**63, 10**300, -0.0]
)
def test_finite_floats_are_accepted(value: float) -> None:
    assert Param("float").check(value, "ratio") == float(value)


@pytest.mark.parametrize("value", [10**400, -(10**400)])
def test_integers_beyond_any_float_are_refused(value: int) -> None:
    with pytest.raises(ParamError, match="finite"):
        Param("float").check(value, "ratio")


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("2024-01-01T00:00:00Z", "2024-01-01T00:00:00+00:00"),
        ("2024-01-01T00:00:00+15:59:59", "2024-01-01T00:00:00+15:59:59"),
        ("2024-01-01T00:00:00-15:59:59", "2024-01-01T00:00:00-15:59:59"),
        ("2024-01-01T00:00:00-15:59", "2024-01-01T00:00:00-15:59"),
        ("0001-01-01T00:00:00+15:59", "0001-01-01T00:00:00+15:59"),
        ("9999-12-31T23:59:59.999999-15:59", "9999-12-31T23:59:59.999999-15:59"),
    ],
)
def test_timestamps_with_offsets_postgresql_accepts(value: str, stored: str) -> None:
    assert Param("timestamp").check(value, "since") == stored


@pytest.mark.parametrize(
    "value",
    [
        "2024-01-01T00:00:00-23:59",
        "2024-01-01T00:00:00+16:00",
        "2024-01-01T00:00:00-16:00",
        "2024-01-01T00:00:00+15:59:59.5",  # a fraction of a second
        "2024-01-01T00:00:00+05:30:00.000001",
    ],
)
def test_timestamp_offsets_postgresql_refuses_are_refused(value: str) -> None:
    with pytest.raises(ParamError, match="whole seconds within ±15:59:59"):
        Param("timestamp").check(value, "since")


def test_timestamps_need_an_offset() -> None:
    with pytest.raises(ParamError, match="time zone offset"):
        Param("timestamp").check("2024-01-01T00:00:00", "since")


@pytest.mark.parametrize("value", ["0001-01-01", "9999-12-31"])
def test_dates_of_every_year_python_knows_are_accepted(value: str) -> None:
    assert Param("date").check(value, "since") == value


@pytest.mark.parametrize("value", ["0000-12-31", "10000-01-01", "2024-02-30"])
def test_dates_beyond_are_refused(value: str) -> None:
    with pytest.raises(ParamError, match="not a valid date"):
        Param("date").check(value, "since")


def test_text_refuses_lone_surrogates() -> None:
    with pytest.raises(ParamError, match="valid Unicode"):
        Param("text").check("a\ud800b", "name")
    assert Param("text").check("emoji 🎉", "name") == "emoji 🎉"


def test_a_default_is_checked_like_a_value() -> None:
    with pytest.raises(ParamError, match="between"):
        Param("int", default=-(2**63))
