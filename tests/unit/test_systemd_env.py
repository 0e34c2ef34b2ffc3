"""The example environment file names only real settings, with valid values."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

import pytest

from daemon.config import NON_SETTING_VARIABLES, load_settings, variable_name
from daemon.config_values import PARSERS
from daemon.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "systemd" / "exportd.env.example"


def test_every_variable_in_the_example_is_a_setting() -> None:
    names = re.findall(r"^#?\s*(EXPORTD_[A-Z_]+)=", EXAMPLE.read_text(), flags=re.MULTILINE)
    known = {variable_name(k) for k in PARSERS} | NON_SETTING_VARIABLES
    assert names
    assert set(names) <= known


def active_lines() -> dict[str, str]:
    return dict(
        line.split("=", 1)
        for line in EXAMPLE.read_text().splitlines()
        if line.startswith("EXPORTD_")
    )


def test_the_active_lines_load_once_the_secret_is_replaced() -> None:
    values = active_lines()
    values["EXPORTD_JWT_SECRET"] = secrets.token_urlsafe(48)
    settings = load_settings(values)
    assert settings.log_format == "json"
    assert settings.database_url is not None


def test_the_example_secret_left_in_place_stops_exportd() -> None:
    """Copied unchanged, the file must not give a server whose tokens anyone can sign."""
    with pytest.raises(ConfigError) as info:
        load_settings(active_lines())
    assert info.value.variable == "EXPORTD_JWT_SECRET"
