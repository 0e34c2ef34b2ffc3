"""The example environment file names only real settings, with valid values."""

from __future__ import annotations

import re
from pathlib import Path

from daemon.config import NON_SETTING_VARIABLES, load_settings, variable_name
from daemon.config_values import PARSERS

EXAMPLE = Path(__file__).resolve().parents[2] / "systemd" / "exportd.env.example"


def test_every_variable_in_the_example_is_a_setting() -> None:
    names = re.findall(r"^#?\s*(EXPORTD_[A-Z_]+)=", EXAMPLE.read_text(), flags=re.MULTILINE)
    known = {variable_name(k) for k in PARSERS} | NON_SETTING_VARIABLES
    assert names
    assert set(names) <= known


def test_the_active_lines_load() -> None:
    values = dict(
        line.split("=", 1)
        for line in EXAMPLE.read_text().splitlines()
        if line.startswith("EXPORTD_")
    )
    settings = load_settings(values)
    assert settings.log_format == "json"
    assert settings.database_url is not None
