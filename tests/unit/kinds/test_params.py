"""Declared params refuse what JSON or PostgreSQL's jsonb cannot hold."""

from __future__ import annotations

import math

import pytest

from daemon.actions import ExportRequest, _check_request
from daemon.kinds.registry import Param, ParamError


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
