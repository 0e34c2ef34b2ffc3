"""Settings: every EXPORTD_* variable, validated once at start.

Values come from the environment and, when `EXPORTD_CONFIG` names one, from a
TOML file that may set the same keys (lower case, without the prefix:
`package_retention_days = 7`). The environment wins over the file. Anything
unknown or invalid raises `ConfigError` naming the variable, so the program can
stop with one line instead of a traceback deep inside a worker.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.db.urls import check_database_url
from daemon.errors import ConfigError

PREFIX = "EXPORTD_"

# Variables that are read elsewhere and are not settings; they must not be
# reported as unknown.
NON_SETTING_VARIABLES = frozenset({"EXPORTD_CONFIG", "EXPORTD_TEST_DATABASE_URL"})

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
PUBLIC_KEY_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
# An HS256 secret shorter than the hash output is brute-forceable offline.
MIN_HMAC_SECRET_BYTES = 32

RATE_PERIODS = {"second": 1.0, "minute": 60.0, "hour": 3600.0}


@dataclass(frozen=True)
class RateLimit:
    """A token bucket: `requests` per `period_seconds` for each subject."""

    requests: int
    period_seconds: float

    def __str__(self) -> str:
        unit = {v: k for k, v in RATE_PERIODS.items()}[self.period_seconds]
        return f"{self.requests}/{unit}"


@dataclass(frozen=True)
class Settings:
    """Everything configurable, after validation. Frozen: read it, never patch it."""

    # Connection string; None means "start the embedded server in data_dir/pg".
    database_url: str | None = None
    # Where `up` keeps the embedded database, the generated JWT secret and,
    # unless storage_dir says otherwise, the packages.
    data_dir: Path = Path(".exportd")
    storage_dir: Path = Path(".exportd/packages")
    # TOML file declaring the built-in SQL and file export kinds.
    exports_file: Path | None = None
    # Python modules that register custom kinds.
    kinds: tuple[str, ...] = ()
    # JWT verification. Exactly one of secret (HMAC) or public key is used; the
    # algorithms accepted are pinned here, never taken from a token's header.
    jwt_secret: str | None = field(default=None, repr=False)
    jwt_public_key_file: Path | None = None
    jwt_public_key: str | None = field(default=None, repr=False)
    jwt_algorithms: tuple[str, ...] = ("HS256",)
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_role_claim: str = "role"
    # A package is downloadable this long after its job completed.
    package_retention_days: int = 30
    # Finished job rows are deleted this long after they finished (0 = never).
    job_retention_days: int = 90
    # Retention (daemon/maintenance): how often it runs, how many rows one
    # statement handles, how old an unreferenced file in storage must be
    # before the orphan sweep removes it, and how long procrastinate's
    # finished queue rows are kept.
    cleanup_interval_seconds: float = 900.0
    cleanup_batch_size: int = 500
    orphan_grace_seconds: float = 3600.0
    queue_retention_hours: int = 24
    worker_concurrency: int = 4
    # After SIGTERM, running steps may finish for this long before being
    # cancelled and rolled back.
    shutdown_grace_seconds: float = 60.0
    # Automatic retries wait base * 2^(attempt-1) seconds, at most max.
    retry_base_seconds: float = 5.0
    retry_max_seconds: float = 300.0
    # Workers heartbeat this often; a running export whose worker has not
    # heartbeaten for stalled_after_seconds is rescued (attempt recorded as lost).
    heartbeat_seconds: float = 10.0
    stalled_after_seconds: float = 30.0
    # How often an idle worker looks for jobs that became due without a
    # notification (retries scheduled for later, delayed jobs).
    poll_seconds: float = 2.0
    rate_limit: RateLimit | None = RateLimit(60, 60.0)
    host: str = "127.0.0.1"
    port: int = 8000
    log_format: str = "text"
    # URL prefix of an nginx `internal` location mapped to storage_dir. When
    # set, authorised downloads are answered with X-Accel-Redirect and nginx
    # streams the file.
    accel_redirect: str | None = None

    @property
    def embedded_pg_dir(self) -> Path:
        """Data directory of the embedded PostgreSQL server."""
        return self.data_dir / "pg"

    @property
    def secret_file(self) -> Path:
        """Where `exportd up` keeps the JWT secret it generated."""
        return self.data_dir / "jwt_secret"

    def retry_delay(self, attempt: int) -> float:
        """Seconds before retrying after failed attempt number `attempt`:
        exponential from `retry_base_seconds`, capped at `retry_max_seconds`."""
        exponent = min(max(attempt - 1, 0), 30)
        return float(min(self.retry_max_seconds, self.retry_base_seconds * 2**exponent))


# ---------------------------------------------------------------------------
# Parsers: each takes the raw value (a string from the environment, or any
# TOML value) and returns the typed value or raises ValueError with a reason.


def _text(raw: Any) -> str:
    if not isinstance(raw, str):
        raise ValueError(f"must be a string, got {raw!r}")
    if not raw.strip():
        raise ValueError("must not be empty")
    return raw


def _int_at_least(minimum: int) -> Callable[[Any], int]:
    def parse(raw: Any) -> int:
        try:
            value = int(str(raw).strip(), 10)
        except ValueError:
            raise ValueError(f"must be an integer >= {minimum}, got {raw!r}") from None
        if isinstance(raw, bool) or value < minimum:
            raise ValueError(f"must be an integer >= {minimum}, got {raw!r}")
        return value

    return parse


def _seconds(raw: Any) -> float:
    try:
        value = float(str(raw).strip())
    except ValueError:
        raise ValueError(f"must be a number of seconds >= 0, got {raw!r}") from None
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"must be a number of seconds >= 0, got {raw!r}")
    return value


def _positive_seconds(raw: Any) -> float:
    value = _seconds(raw)
    if value <= 0:
        raise ValueError(f"must be a number of seconds > 0, got {raw!r}")
    return value


def _port(raw: Any) -> int:
    value = _int_at_least(1)(raw)
    if value > 65535:
        raise ValueError(f"must be a TCP port 1-65535, got {raw!r}")
    return value


def _database_url(raw: Any) -> str:
    return check_database_url(_text(raw))


def _path(raw: Any) -> Path:
    return Path(_text(raw)).expanduser()


def _readable_file(raw: Any) -> Path:
    path = _path(raw)
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise ValueError(f"cannot read {str(path)!r}: {exc.strerror}") from None
    return path


def _modules(raw: Any) -> tuple[str, ...]:
    items = raw if isinstance(raw, list) else str(raw).split(",")
    names = tuple(str(item).strip() for item in items if str(item).strip())
    for name in names:
        if not all(part.isidentifier() for part in name.split(".")):
            raise ValueError(f"{name!r} is not a Python module name")
    return names


def _algorithms(raw: Any) -> tuple[str, ...]:
    items = raw if isinstance(raw, list) else str(raw).split(",")
    names = tuple(str(item).strip() for item in items if str(item).strip())
    if not names:
        raise ValueError("must name at least one algorithm")
    known = HMAC_ALGORITHMS | PUBLIC_KEY_ALGORITHMS
    for name in names:
        if name not in known:
            raise ValueError(f"{name!r} is not allowed (use one of {', '.join(sorted(known))})")
    return names


def _rate_limit(raw: Any) -> RateLimit | None:
    text = _text(raw).strip().lower()
    if text in {"off", "0", "none"}:
        return None
    count, _, unit = text.partition("/")
    if unit not in RATE_PERIODS or not count.isdigit() or int(count) < 1:
        raise ValueError(
            f"must look like '60/minute' (per second, minute or hour) or 'off', got {raw!r}"
        )
    return RateLimit(int(count), RATE_PERIODS[unit])


def _log_format(raw: Any) -> str:
    text = _text(raw).strip().lower()
    if text not in {"text", "json"}:
        raise ValueError(f"must be 'text' or 'json', got {raw!r}")
    return text


def _accel_prefix(raw: Any) -> str:
    text = _text(raw).strip()
    if not (text.startswith("/") and text.endswith("/")) or any(
        part in {".", ".."} for part in text.split("/")
    ):
        raise ValueError(f"must be a URL path that starts and ends with '/', got {raw!r}")
    if not text.isascii() or not text.isprintable() or " " in text:
        raise ValueError(f"must be printable ASCII without spaces, got {raw!r}")
    return text


def _jwt_secret(raw: Any) -> str:
    secret = _text(raw)
    if len(secret.encode()) < MIN_HMAC_SECRET_BYTES:
        raise ValueError(f"must be at least {MIN_HMAC_SECRET_BYTES} bytes long")
    return secret


# name (without prefix) -> parser. The order is the documentation order.
PARSERS: dict[str, Callable[[Any], Any]] = {
    "database_url": _database_url,
    "data_dir": _path,
    "storage_dir": _path,
    "exports_file": _readable_file,
    "kinds": _modules,
    "jwt_secret": _jwt_secret,
    "jwt_public_key_file": _readable_file,
    "jwt_algorithms": _algorithms,
    "jwt_issuer": _text,
    "jwt_audience": _text,
    "jwt_role_claim": _text,
    "package_retention_days": _int_at_least(1),
    "job_retention_days": _int_at_least(0),
    "cleanup_interval_seconds": _positive_seconds,
    "cleanup_batch_size": _int_at_least(1),
    "orphan_grace_seconds": _seconds,
    "queue_retention_hours": _int_at_least(1),
    "worker_concurrency": _int_at_least(1),
    "shutdown_grace_seconds": _seconds,
    "retry_base_seconds": _seconds,
    "retry_max_seconds": _seconds,
    "heartbeat_seconds": _positive_seconds,
    "stalled_after_seconds": _positive_seconds,
    "poll_seconds": _positive_seconds,
    "rate_limit": _rate_limit,
    "host": _text,
    "port": _port,
    "log_format": _log_format,
    "accel_redirect": _accel_prefix,
}


def variable_name(key: str) -> str:
    """`package_retention_days` -> `EXPORTD_PACKAGE_RETENTION_DAYS`."""
    return PREFIX + key.upper()


def _read_config_file(path_text: str) -> dict[str, Any]:
    path = Path(path_text).expanduser()
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError("EXPORTD_CONFIG", f"cannot read {path_text!r}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("EXPORTD_CONFIG", f"{path_text!r} is not valid TOML: {exc}") from None
    values: dict[str, Any] = {}
    for key, value in data.items():
        normalised = key.lower().removeprefix(PREFIX.lower())
        if normalised not in PARSERS:
            raise ConfigError(variable_name(normalised), f"unknown setting in {path_text!r}")
        values[normalised] = value
    return values


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read, validate and freeze the settings. Raises ConfigError on the first problem."""
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    if env.get("EXPORTD_CONFIG"):
        raw.update(_read_config_file(env["EXPORTD_CONFIG"]))
    for name, value in env.items():
        if not name.startswith(PREFIX) or name in NON_SETTING_VARIABLES:
            continue
        key = name[len(PREFIX) :].lower()
        if key not in PARSERS:
            raise ConfigError(name, "unknown variable (see docs/operations.md for the list)")
        if value == "":
            raw.pop(key, None)  # an empty variable means "use the default"
            continue
        raw[key] = value

    values: dict[str, Any] = {}
    for key, raw_value in raw.items():
        try:
            values[key] = PARSERS[key](raw_value)
        except ValueError as exc:
            raise ConfigError(variable_name(key), str(exc)) from None

    data_dir: Path = values.get("data_dir", Settings.data_dir)
    values.setdefault("storage_dir", data_dir / "packages")
    _check_jwt(values, explicit_algorithms="jwt_algorithms" in values)
    settings = Settings(**values)
    if settings.stalled_after_seconds < 2 * settings.heartbeat_seconds:
        raise ConfigError(
            "EXPORTD_STALLED_AFTER_SECONDS",
            "must be at least twice EXPORTD_HEARTBEAT_SECONDS (a missed beat is no crash)",
        )
    if settings.retry_max_seconds < settings.retry_base_seconds:
        raise ConfigError("EXPORTD_RETRY_MAX_SECONDS", "must be >= EXPORTD_RETRY_BASE_SECONDS")
    return settings


def _check_jwt(values: dict[str, Any], *, explicit_algorithms: bool) -> None:
    """Pin the algorithms to the kind of key configured (no key confusion)."""
    key_file: Path | None = values.get("jwt_public_key_file")
    if values.get("jwt_secret") and key_file:
        raise ConfigError(
            "EXPORTD_JWT_PUBLIC_KEY_FILE",
            "set either EXPORTD_JWT_SECRET or a public key file, not both",
        )
    if key_file is None:
        algorithms = values.get("jwt_algorithms", ("HS256",))
        if not set(algorithms) <= HMAC_ALGORITHMS:
            raise ConfigError(
                "EXPORTD_JWT_ALGORITHMS", "RS/ES/PS algorithms need EXPORTD_JWT_PUBLIC_KEY_FILE"
            )
        return
    values["jwt_public_key"] = key_file.read_text()
    if not explicit_algorithms:
        values["jwt_algorithms"] = ("RS256",)
    if set(values["jwt_algorithms"]) & HMAC_ALGORITHMS:
        raise ConfigError(
            "EXPORTD_JWT_ALGORITHMS", "HMAC algorithms cannot be used with a public key file"
        )
