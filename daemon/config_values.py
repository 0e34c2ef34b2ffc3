"""How each EXPORTD_* value is read: one parser per setting.

Each parser takes the raw value (a string from the environment, or any TOML
value) and returns the typed value or raises ValueError with a reason that
never repeats a secret. `daemon.config` names the variable in the message.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from daemon.db.urls import check_database_url
from daemon.storage.s3_names import parse_storage_url
from daemon.webhooks.endpoints import parse_endpoints, parse_hosts, parse_secret, parse_url

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
PUBLIC_KEY_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
# An HS256 secret shorter than the hash output is brute-forceable offline.
MIN_HMAC_SECRET_BYTES = 32
# Every secret value shown in exportd's own files (systemd/exportd.env.example,
# the docs). Anyone can read them, so a deployment that kept one accepts
# tokens anyone can sign. Kept here, not read from the files: an installed
# wheel has no checkout (tests/unit/test_config.py checks the files' values
# are all listed).
EXAMPLE_SECRETS = frozenset(
    {
        "change-me-to-a-long-random-secret-of-at-least-32-bytes",
    }
)
# How an obvious placeholder begins, once lower-cased and stripped of
# everything but letters and digits ("Change-Me…", "changeme", "secret_…").
PLACEHOLDER_PREFIXES = (
    "changeme",
    "changethis",
    "replaceme",
    "secret",
    "yoursecret",
    "mysecret",
    "placeholder",
    "example",
    "xxxx",
)
# A random secret of 32 bytes or more has many distinct characters; "aaaa…"
# or "abab…" has a handful.
MIN_DISTINCT_SECRET_CHARS = 5

RATE_PERIODS = {"second": 1.0, "minute": 60.0, "hour": 3600.0}


@dataclass(frozen=True)
class RateLimit:
    """A token bucket: `requests` per `period_seconds` for each subject."""

    requests: int
    period_seconds: float

    def __str__(self) -> str:
        unit = {v: k for k, v in RATE_PERIODS.items()}[self.period_seconds]
        return f"{self.requests}/{unit}"


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


def parse_rate_limit(raw: Any) -> RateLimit | None:
    """A rate limit as EXPORTD_RATE_LIMIT reads it ('60/minute'; None for
    'off'), for values set elsewhere: an API key's own limit (daemon/api_keys.py)."""
    return _rate_limit(raw)


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


def _storage_url(raw: Any) -> str:
    """`file:///absolute/path` or `s3://BUCKET/PREFIX` (DESIGN §10)."""
    text = _text(raw).strip()
    if text.startswith("file://"):
        path = text.removeprefix("file://")
        if not path.startswith("/"):
            raise ValueError("a file URL needs an absolute path: file:///var/lib/exportd/packages")
        return text
    if text.startswith("s3://"):
        parse_storage_url(text)
        return text
    raise ValueError("must be file:///PATH or s3://BUCKET/PREFIX")


def _http_url(raw: Any) -> str:
    """An http(s) URL with a host, without a trailing slash, query or fragment."""
    text = _text(raw).strip().rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if parts.query or parts.fragment or not text.isascii() or " " in text:
        raise ValueError("must be a plain URL (no query, fragment or spaces)")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValueError("has an invalid port") from None
    return text


def _s3_download(raw: Any) -> str:
    text = _text(raw).strip().lower()
    if text not in {"redirect", "proxy"}:
        raise ValueError(f"must be 'redirect' or 'proxy', got {raw!r}")
    return text


def _url_ttl(raw: Any) -> int:
    value = _int_at_least(1)(raw)
    if value > 7 * 24 * 3600:
        raise ValueError("must be at most 604800 seconds (7 days, S3's limit)")
    return value


_BYTES = re.compile(r"^\s*(\d+)\s*([kmgt]i?b|b)?\s*$", re.IGNORECASE)
_BYTE_UNITS: dict[str, int] = {"b": 1} | {
    f"{prefix}{infix}b": (1024 if infix else 1000) ** power
    for power, prefix in enumerate("kmgt", start=1)
    for infix in ("", "i")
}


def _byte_count(raw: Any) -> int:
    """Bytes: an integer, or one with a unit (`500MB`, `1GiB`; kB = 1000)."""
    match = None if isinstance(raw, bool) else _BYTES.match(str(raw))
    if match is None:
        raise ValueError(
            f"must be a number of bytes like 1073741824, '500MB' or '1GiB', got {raw!r}"
        )
    return int(match[1]) * _BYTE_UNITS[(match[2] or "b").lower()]


def is_placeholder_secret(secret: str) -> bool:
    """A value from exportd's examples, or one that looks like a placeholder."""
    text = secret.strip()
    squashed = re.sub(r"[^a-z0-9]", "", text.lower())
    return (
        text in EXAMPLE_SECRETS
        or squashed.startswith(PLACEHOLDER_PREFIXES)
        or len(set(text)) < MIN_DISTINCT_SECRET_CHARS
    )


def _secret(raw: Any) -> str:
    """A signing secret: long enough, and not a value anyone can look up."""
    secret = _text(raw)
    if len(secret.encode()) < MIN_HMAC_SECRET_BYTES:
        raise ValueError(f"must be at least {MIN_HMAC_SECRET_BYTES} bytes long")
    if is_placeholder_secret(secret):
        raise ValueError(
            "is a placeholder (an example value, or one that looks like one); generate one "
            "with `python3 -c 'import secrets; print(secrets.token_urlsafe(48))'`"
        )
    return secret


def _private_hosts(raw: Any) -> tuple[str, ...]:
    hosts = parse_hosts(raw)
    if "*" in hosts:
        raise ValueError("must list hosts one by one ('*' would let any name reach any address)")
    return hosts


def _retry_hours(raw: Any) -> float:
    try:
        value = float(str(raw).strip())
    except ValueError:
        raise ValueError(f"must be a number of hours > 0, got {raw!r}") from None
    if not 0 < value <= 24 * 30:
        raise ValueError(f"must be a number of hours > 0 and at most 720, got {raw!r}")
    return value


def _webhook_timeout(raw: Any) -> float:
    value = _positive_seconds(raw)
    if value > 60:
        raise ValueError("must be at most 60 seconds")
    return value


def _compression_level(raw: Any) -> int:
    text = str(raw).strip()
    if isinstance(raw, bool) or text not in {"0", "1", "2", "3"}:
        raise ValueError(f"must be an ISA-L level from 0 (fastest) to 3 (smallest), got {raw!r}")
    return int(text)


# name (without prefix) -> parser. The order is the documentation order.
PARSERS: dict[str, Callable[[Any], Any]] = {
    "database_url": _database_url,
    "data_dir": _path,
    "storage_dir": _path,
    "storage_url": _storage_url,
    "work_dir": _path,
    "s3_endpoint_url": _http_url,
    "s3_region": _text,
    "s3_url_ttl": _url_ttl,
    "s3_download": _s3_download,
    "public_url": _http_url,
    "link_secret": _secret,
    "exports_file": _readable_file,
    "kinds": _modules,
    "jwt_secret": _secret,
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
    "compression_level": _compression_level,
    "min_free_bytes": _byte_count,
    "owner_max_running": _int_at_least(0),
    "owner_max_pending": _int_at_least(0),
    "shutdown_grace_seconds": _seconds,
    "retry_base_seconds": _seconds,
    "retry_max_seconds": _seconds,
    "heartbeat_seconds": _positive_seconds,
    "stalled_after_seconds": _positive_seconds,
    "poll_seconds": _positive_seconds,
    "rate_limit": _rate_limit,
    "host": _text,
    "port": _port,
    "header_timeout_seconds": _positive_seconds,
    "max_connections": _int_at_least(1),
    "log_format": _log_format,
    "accel_redirect": _accel_prefix,
    "webhook_url": parse_url,
    "webhooks": parse_endpoints,
    "webhook_secret": parse_secret,
    "webhook_allowed_hosts": parse_hosts,
    "webhook_private_hosts": _private_hosts,
    "webhook_retry_hours": _retry_hours,
    "webhook_retry_base_seconds": _positive_seconds,
    "webhook_timeout_seconds": _webhook_timeout,
    "webhook_concurrency": _int_at_least(1),
}
