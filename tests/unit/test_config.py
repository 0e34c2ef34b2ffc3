"""Settings: defaults, sources, and one clear line for every bad value."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.config import Settings, load_settings, variable_name
from daemon.config_values import EXAMPLE_SECRETS, PARSERS, RateLimit, is_placeholder_secret
from daemon.errors import ConfigError

SECRET = "a-unit-test-secret-of-32-bytes-or-more-4f9c"
ROOT = Path(__file__).resolve().parents[2]
EXPORTD = str(Path(sys.executable).with_name("exportd"))


def test_defaults_match_the_documented_ones() -> None:
    s = load_settings({})
    assert s.database_url is None
    assert s.data_dir == Path(".exportd")
    assert s.storage_dir == Path(".exportd/packages")
    assert (s.package_retention_days, s.job_retention_days) == (30, 90)
    assert s.worker_concurrency == 4
    assert s.shutdown_grace_seconds == 60
    assert s.rate_limit == RateLimit(60, 60.0)
    assert (s.host, s.port, s.log_format) == ("127.0.0.1", 8000, "text")
    assert s.jwt_algorithms == ("HS256",) and s.jwt_role_claim == "role"


def test_every_setting_is_documented() -> None:
    doc = (ROOT / "docs" / "operations.md").read_text()
    for key in PARSERS:
        assert variable_name(key) in doc, variable_name(key)


def test_environment_values_are_parsed() -> None:
    s = load_settings(
        {
            "EXPORTD_DATABASE_URL": "postgresql://u@db.example/exportd",
            "EXPORTD_DATA_DIR": "/var/lib/exportd",
            "EXPORTD_KINDS": "myapp.kinds, other.kinds",
            "EXPORTD_JWT_SECRET": SECRET,
            "EXPORTD_PACKAGE_RETENTION_DAYS": "7",
            "EXPORTD_JOB_RETENTION_DAYS": "0",
            "EXPORTD_RATE_LIMIT": "10/second",
            "EXPORTD_SHUTDOWN_GRACE_SECONDS": "2.5",
            "EXPORTD_LOG_FORMAT": "JSON",
            "EXPORTD_PORT": "9000",
        }
    )
    assert s.storage_dir == Path("/var/lib/exportd/packages")
    assert s.kinds == ("myapp.kinds", "other.kinds")
    assert s.job_retention_days == 0
    assert s.rate_limit == RateLimit(10, 1.0) and str(s.rate_limit) == "10/second"
    assert s.shutdown_grace_seconds == 2.5
    assert (s.log_format, s.port) == ("json", 9000)


def test_secret_is_not_in_repr() -> None:
    assert SECRET not in repr(load_settings({"EXPORTD_JWT_SECRET": SECRET}))


def test_rate_limit_can_be_turned_off() -> None:
    assert load_settings({"EXPORTD_RATE_LIMIT": "off"}).rate_limit is None


def test_config_file_sets_the_same_keys_and_environment_wins(tmp_path: Path) -> None:
    config = tmp_path / "exportd.toml"
    config.write_text('port = 9100\nlog_format = "json"\nEXPORTD_WORKER_CONCURRENCY = 8\n')
    s = load_settings({"EXPORTD_CONFIG": str(config), "EXPORTD_PORT": "9200"})
    assert (s.port, s.log_format, s.worker_concurrency) == (9200, "json", 8)


def test_public_key_pins_asymmetric_algorithms(tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    key.write_text("-----BEGIN PUBLIC KEY-----\n...\n-----END PUBLIC KEY-----\n")
    s = load_settings({"EXPORTD_JWT_PUBLIC_KEY_FILE": str(key)})
    assert s.jwt_algorithms == ("RS256",)
    assert s.jwt_public_key is not None and "PUBLIC KEY" in s.jwt_public_key
    es = load_settings({"EXPORTD_JWT_PUBLIC_KEY_FILE": str(key), "EXPORTD_JWT_ALGORITHMS": "ES256"})
    assert es.jwt_algorithms == ("ES256",)


INVALID = [
    ("EXPORTD_DATABASE_URL", "mysql://root@localhost/db"),
    ("EXPORTD_DATABASE_URL", "not a = valid = conninfo"),
    ("EXPORTD_PACKAGE_RETENTION_DAYS", "-1"),
    ("EXPORTD_PACKAGE_RETENTION_DAYS", "0"),
    ("EXPORTD_JOB_RETENTION_DAYS", "-5"),
    ("EXPORTD_JOB_RETENTION_DAYS", "ninety"),
    ("EXPORTD_WORKER_CONCURRENCY", "0"),
    ("EXPORTD_COMPRESSION_LEVEL", "6"),
    ("EXPORTD_COMPRESSION_LEVEL", "-1"),
    ("EXPORTD_COMPRESSION_LEVEL", "fast"),
    ("EXPORTD_SHUTDOWN_GRACE_SECONDS", "-1"),
    ("EXPORTD_SHUTDOWN_GRACE_SECONDS", "nan"),
    ("EXPORTD_RATE_LIMIT", "60 per minute"),
    ("EXPORTD_RATE_LIMIT", "0/minute"),
    ("EXPORTD_PORT", "70000"),
    ("EXPORTD_LOG_FORMAT", "xml"),
    ("EXPORTD_JWT_SECRET", "short"),
    ("EXPORTD_JWT_ALGORITHMS", "none"),
    ("EXPORTD_JWT_ALGORITHMS", "RS256"),  # without a public key file
    ("EXPORTD_JWT_PUBLIC_KEY_FILE", "/nonexistent/key.pem"),
    ("EXPORTD_EXPORTS_FILE", "/nonexistent/exports.toml"),
    ("EXPORTD_KINDS", "my-app.kinds"),
    ("EXPORTD_HOST", " "),
    ("EXPORTD_CONFIG", "/nonexistent/exportd.toml"),
    ("EXPORTD_RETENTION_DAYS", "30"),  # unknown variable (typo)
    ("EXPORTD_CLEANUP_INTERVAL_SECONDS", "0"),
    ("EXPORTD_CLEANUP_BATCH_SIZE", "0"),
    ("EXPORTD_ORPHAN_GRACE_SECONDS", "-1"),
    ("EXPORTD_QUEUE_RETENTION_HOURS", "0"),
    ("EXPORTD_ACCEL_REDIRECT", "protected/"),
    ("EXPORTD_ACCEL_REDIRECT", "/protected"),
    ("EXPORTD_ACCEL_REDIRECT", "/a/../b/"),
    ("EXPORTD_ACCEL_REDIRECT", "/with space/"),
    ("EXPORTD_HEADER_TIMEOUT_SECONDS", "0"),
    ("EXPORTD_HEADER_TIMEOUT_SECONDS", "soon"),
    ("EXPORTD_MAX_CONNECTIONS", "0"),
    ("EXPORTD_MIN_FREE_BYTES", "-1"),
    ("EXPORTD_MIN_FREE_BYTES", "1.5GB"),
    ("EXPORTD_MIN_FREE_BYTES", "lots"),
]


def test_retention_settings() -> None:
    defaults = load_settings({})
    assert (
        defaults.cleanup_interval_seconds,
        defaults.cleanup_batch_size,
        defaults.orphan_grace_seconds,
        defaults.queue_retention_hours,
    ) == (900.0, 500, 3600.0, 24)
    custom = load_settings(
        {"EXPORTD_CLEANUP_INTERVAL_SECONDS": "60", "EXPORTD_CLEANUP_BATCH_SIZE": "100"}
    )
    assert (custom.cleanup_interval_seconds, custom.cleanup_batch_size) == (60.0, 100)


def test_free_space_floor() -> None:
    assert load_settings({}).min_free_bytes == 1024**3
    for value, expected in [("0", 0), ("123", 123), ("500MB", 500 * 1000**2), ("2 GiB", 2 << 30)]:
        assert load_settings({"EXPORTD_MIN_FREE_BYTES": value}).min_free_bytes == expected


def test_compression_level() -> None:
    assert load_settings({}).compression_level == 1
    assert load_settings({"EXPORTD_COMPRESSION_LEVEL": "3"}).compression_level == 3
    with pytest.raises(ConfigError, match=r"^EXPORTD_COMPRESSION_LEVEL: must be an ISA-L level"):
        load_settings({"EXPORTD_COMPRESSION_LEVEL": "9"})


def test_accel_redirect_prefix() -> None:
    assert load_settings({}).accel_redirect is None
    assert load_settings({"EXPORTD_ACCEL_REDIRECT": "/protected/"}).accel_redirect == "/protected/"


@pytest.mark.parametrize(("variable", "value"), INVALID)
def test_invalid_value_names_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({variable: value})
    assert info.value.variable == variable


def test_unreadable_key_file_is_refused(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        # root reads anything; a directory is unreadable as a file for everyone
        path = tmp_path
    else:
        path = tmp_path / "key.pem"
        path.write_text("x")
        path.chmod(0)
    with pytest.raises(ConfigError, match="EXPORTD_JWT_PUBLIC_KEY_FILE: cannot read"):
        load_settings({"EXPORTD_JWT_PUBLIC_KEY_FILE": str(path)})


def test_secret_and_public_key_together_are_refused(tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    key.write_text("k")
    with pytest.raises(ConfigError, match="not both"):
        load_settings({"EXPORTD_JWT_SECRET": SECRET, "EXPORTD_JWT_PUBLIC_KEY_FILE": str(key)})


def test_hmac_with_public_key_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    key.write_text("k")
    with pytest.raises(ConfigError, match="EXPORTD_JWT_ALGORITHMS"):
        load_settings({"EXPORTD_JWT_PUBLIC_KEY_FILE": str(key), "EXPORTD_JWT_ALGORITHMS": "HS256"})


def test_unknown_key_in_config_file_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "exportd.toml"
    config.write_text("prot = 1\n")
    with pytest.raises(ConfigError, match="EXPORTD_PROT: unknown setting"):
        load_settings({"EXPORTD_CONFIG": str(config)})


def test_invalid_toml_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "exportd.toml"
    config.write_text("port = [\n")
    with pytest.raises(ConfigError, match="EXPORTD_CONFIG"):
        load_settings({"EXPORTD_CONFIG": str(config)})


def test_empty_variable_means_default() -> None:
    assert load_settings({"EXPORTD_PORT": ""}).port == Settings.port


@pytest.mark.parametrize(("variable", "value"), INVALID[:6] + INVALID[-3:])
def test_cli_exits_non_zero_with_one_line(variable: str, value: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXPORTD_")}
    env[variable] = value
    result = subprocess.run(
        [EXPORTD, "migrate", "--status"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"exportd: configuration error: {variable}:")
    assert "Traceback" not in result.stderr


# -- secrets anyone can read ---------------------------------------------------

PLACEHOLDERS = [
    "change-me-to-a-long-random-secret-of-at-least-32-bytes",  # systemd/exportd.env.example
    "CHANGE_ME_to_something_long_and_random_please_0123",
    "changeme" * 4,
    "change me, this is only an example value of 32+ bytes",
    "secret-secret-secret-secret-secret",
    "Secret_for_the_API_that_is_long_enough_1234",
    "your-secret-here-at-least-32-bytes-long",
    "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx",
    "x" * 40,
    "ab" * 20,
    "0" * 64,
]


@pytest.mark.parametrize("value", PLACEHOLDERS)
def test_a_placeholder_secret_is_refused_like_a_short_one(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"EXPORTD_JWT_SECRET": value})
    assert info.value.variable == "EXPORTD_JWT_SECRET"
    assert "placeholder" in info.value.problem
    assert value not in str(info.value)


def test_a_random_secret_is_accepted() -> None:
    for _ in range(20):
        value = secrets.token_urlsafe(48)
        assert load_settings({"EXPORTD_JWT_SECRET": value}).jwt_secret == value
    assert load_settings({"EXPORTD_JWT_SECRET": secrets.token_hex(32)}).jwt_secret


def secret_values_in(text: str) -> list[str]:
    """Values given to a *SECRET* variable: `X_SECRET=v`, `X_SECRET: v`, `"x_secret": "v"`."""
    pattern = re.compile(r"""(?i)\b[A-Z_]*SECRET[A-Z_]*["']?\s*[=:]\s*["'`]?([^\s"'`,;|]{8,})""")
    return [value for value in pattern.findall(text) if not value.startswith("$")]


def example_files() -> list[Path]:
    files = [ROOT / "systemd" / "exportd.env.example", ROOT / "README.md"]
    files += sorted((ROOT / "docs").rglob("*.md"))
    return [path for path in files if path.is_file()]


def test_every_secret_in_the_examples_and_docs_is_refused() -> None:
    """The list in code (the wheel has no checkout to read) covers every
    secret value the project shows: a copied example never starts."""
    found = {
        (path.relative_to(ROOT).as_posix(), value)
        for path in example_files()
        for value in secret_values_in(path.read_text())
    }
    assert (
        "systemd/exportd.env.example",
        "change-me-to-a-long-random-secret-of-at-least-32-bytes",
    ) in found
    for where, value in sorted(found):
        assert value in EXAMPLE_SECRETS, f"{where}: {value!r} is not in EXAMPLE_SECRETS"
        assert is_placeholder_secret(value), where


def test_the_secret_scan_finds_secrets() -> None:
    assert secret_values_in("EXPORTD_JWT_SECRET=abcdefgh123") == ["abcdefgh123"]
    assert secret_values_in('export EXPORTD_JWT_SECRET="q1w2e3r4t5"') == ["q1w2e3r4t5"]
    assert secret_values_in("| `EXPORTD_JWT_SECRET` | unset | HMAC secret |") == []
    assert secret_values_in('EXPORTD_JWT_SECRET="$(cat /etc/secret)"') == []


def test_cli_refuses_the_example_secret_in_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXPORTD_")}
    env["EXPORTD_JWT_SECRET"] = "change-me-to-a-long-random-secret-of-at-least-32-bytes"
    result = subprocess.run(
        [EXPORTD, "web"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("exportd: configuration error: EXPORTD_JWT_SECRET: is a placeholder")
    assert "change-me" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_header_timeout_and_connection_limit() -> None:
    defaults = load_settings({})
    assert (defaults.header_timeout_seconds, defaults.max_connections) == (30.0, 1000)
    custom = load_settings(
        {"EXPORTD_HEADER_TIMEOUT_SECONDS": "2.5", "EXPORTD_MAX_CONNECTIONS": "50"}
    )
    assert (custom.header_timeout_seconds, custom.max_connections) == (2.5, 50)
