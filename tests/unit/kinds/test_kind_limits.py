"""Per-kind limits (DESIGN §13) in the exports file and the decorator API:
`max_running`, `timeout`, `max_package_bytes`; and the owner caps' settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from daemon.config import load_settings
from daemon.errors import ConfigError, KindError
from daemon.kinds.exports_file import load_exports_file
from daemon.kinds.registry import Kind, KindRegistry

OWN_DB = "postgresql://exportd@localhost/exportd"


def load(tmp_path: Path, keys: str, kind_type: str = "sql") -> Kind:
    body = (
        '[[exports.k.queries]]\nname = "q"\nsql = "SELECT 1"\n'
        if kind_type == "sql"
        else 'root = "/srv/{owner_id}"\n'
    )
    path = tmp_path / "exports.toml"
    path.write_text(f'[exports.k]\ntype = "{kind_type}"\n{keys}\n{body}')
    (kind,) = load_exports_file(path, default_database_url=OWN_DB)
    return kind


@pytest.mark.parametrize("kind_type", ["sql", "files"])
def test_the_exports_file_sets_every_limit(tmp_path: Path, kind_type: str) -> None:
    kind = load(
        tmp_path,
        'max_running = 2\ntimeout = "10min"\nmax_package_bytes = "1.5GB"',
        kind_type,
    )
    assert (kind.max_running, kind.timeout, kind.max_package_bytes) == (2, 600.0, 1_500_000_000)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1000", 1000),
        ("500kB", 500_000),
        ("2 MiB", 2 * 1024**2),
        ("3gib", 3 * 1024**3),
        ("1TB", 10**12),
        ("7b", 7),
        ("12", 12),
    ],
)
def test_package_sizes(tmp_path: Path, value: str, expected: int) -> None:
    assert load(tmp_path, f'max_package_bytes = "{value}"').max_package_bytes == expected
    assert load(tmp_path, f"max_package_bytes = {expected}").max_package_bytes == expected


@pytest.mark.parametrize(
    ("value", "expected"), [('"2s"', 2.0), ('"1500ms"', 1.5), ('"1h"', 3600.0), ("250", 0.25)]
)
def test_timeouts_are_durations(tmp_path: Path, value: str, expected: float) -> None:
    assert load(tmp_path, f"timeout = {value}").timeout == expected


def test_no_limits_by_default(tmp_path: Path) -> None:
    kind = load(tmp_path, "")
    assert (kind.max_running, kind.timeout, kind.max_package_bytes) == (None, None, None)


@pytest.mark.parametrize(
    ("keys", "problem"),
    [
        ("max_running = 0", "exports.k.max_running: must be an integer >= 1"),
        ("max_running = true", "exports.k.max_running: must be an integer >= 1"),
        ('max_running = "2"', "exports.k.max_running: must be an integer >= 1"),
        ('timeout = "soon"', "exports.k.timeout: must be a duration like '30s'"),
        ("timeout = 0", "exports.k.timeout: must be between 1ms and about 24 days"),
        ('max_package_bytes = "lots"', "exports.k.max_package_bytes: must be a number of bytes"),
        ('max_package_bytes = "5 parsecs"', "exports.k.max_package_bytes: must be a number"),
        ("max_package_bytes = 0", "exports.k.max_package_bytes: must be at least 1 byte"),
        ("max_package_bytes = -5", "exports.k.max_package_bytes: must be at least 1 byte"),
        ("max_package_bytes = 1.5", "exports.k.max_package_bytes: must be a number of bytes"),
    ],
)
def test_bad_limits_are_one_line_naming_the_key(tmp_path: Path, keys: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, keys)
    assert info.value.variable == "EXPORTD_EXPORTS_FILE"
    assert problem in info.value.problem
    assert "\n" not in str(info.value)


async def nothing(ctx: Any) -> None:
    return None


def test_the_decorator_api_takes_the_limits() -> None:
    kind = Kind("report", max_running=1, timeout=90, max_package_bytes=10**9)
    kind.add_step("Nothing", nothing)
    other = Kind("other")
    other.add_step("Nothing", nothing)
    registry = KindRegistry([kind, other])
    assert registry.running_limits() == {"report": 1}
    assert kind.timeout == 90 and kind.max_package_bytes == 10**9
    assert [k["paused"] for k in registry.describe(paused={"report"})] == [False, True]


@pytest.mark.parametrize(
    ("limits", "problem"),
    [
        ({"max_running": 0}, "max_running must be an integer >= 1"),
        ({"max_running": 1.5}, "max_running must be an integer >= 1"),
        ({"max_running": True}, "max_running must be an integer >= 1"),
        ({"max_package_bytes": 0}, "max_package_bytes must be an integer >= 1"),
        ({"timeout": 0}, "timeout must be a number of seconds > 0"),
        ({"timeout": -1.0}, "timeout must be a number of seconds > 0"),
        ({"timeout": float("nan")}, "timeout must be a number of seconds > 0"),
        ({"timeout": 10**9}, "timeout must be a number of seconds > 0"),
        ({"timeout": "2s"}, "timeout must be a number of seconds > 0"),
    ],
)
def test_the_decorator_api_refuses_bad_limits(limits: dict[str, Any], problem: str) -> None:
    with pytest.raises(KindError, match=problem):
        Kind("report", **limits)


def test_owner_caps_default_and_parse() -> None:
    settings = load_settings({})
    assert (settings.owner_max_running, settings.owner_max_pending) == (2, 100)
    settings = load_settings({"EXPORTD_OWNER_MAX_RUNNING": "5", "EXPORTD_OWNER_MAX_PENDING": "0"})
    assert (settings.owner_max_running, settings.owner_max_pending) == (5, 0)
    for name in ("EXPORTD_OWNER_MAX_RUNNING", "EXPORTD_OWNER_MAX_PENDING"):
        with pytest.raises(ConfigError) as info:
            load_settings({name: "-1"})
        assert info.value.variable == name
