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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.config_values import (
    HMAC_ALGORITHMS,
    PARSERS,
    RateLimit,
)
from daemon.errors import ConfigError
from daemon.webhooks.endpoints import Endpoint

PREFIX = "EXPORTD_"

# Variables that are read elsewhere and are not settings; they must not be
# reported as unknown.
NON_SETTING_VARIABLES = frozenset({"EXPORTD_CONFIG", "EXPORTD_TEST_DATABASE_URL"})


@dataclass(frozen=True)
class Settings:
    """Everything configurable, after validation. Frozen: read it, never patch it."""

    # Connection string; None means "start the embedded server in data_dir/pg".
    database_url: str | None = None
    # Where `up` keeps the embedded database, the generated JWT secret and,
    # unless storage_dir says otherwise, the packages.
    data_dir: Path = Path(".exportd")
    storage_dir: Path = Path(".exportd/packages")
    # Where packages live (DESIGN §10): None or file:///PATH is the local
    # directory storage_dir; s3://BUCKET/PREFIX an S3-compatible bucket, with
    # credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or boto3's
    # other sources). With S3, work directories of running steps stay on this
    # host's disk, under work_dir.
    storage_url: str | None = None
    work_dir: Path = Path(".exportd/work")
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    # Downloads with S3: a 302 to a presigned URL valid this long, or the
    # object streamed through exportd ("proxy").
    s3_url_ttl: int = 300
    s3_download: str = "redirect"
    # Signed download links (DESIGN §11): their absolute URLs start with
    # public_url (default http://HOST:PORT); they are signed with link_secret
    # (`up` generates one and keeps it in the data directory).
    public_url: str | None = None
    link_secret: str | None = field(default=None, repr=False)
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
    # ISA-L deflate level of packages, 0 (fastest) to 3; 1 keeps a package
    # within a few per cent of `gzip -6` at several times its speed.
    compression_level: int = 1
    # A worker starts no export while its work volume or the storage volume
    # (local backend) has less free space than this; 0 = no floor.
    min_free_bytes: int = 1024**3
    # Fairness (DESIGN §13): at most this many of one owner's exports run at
    # once across all workers, and at most this many wait to run (more: 429
    # TOO_MANY_EXPORTS). 0 = no limit.
    owner_max_running: int = 2
    owner_max_pending: int = 100
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
    # A connection that has not sent a complete request head this long after
    # it opened (or after its previous response) is closed: silent and
    # slowloris connections cannot pile up. Idle keep-alive connections are
    # closed sooner (daemon/cli/serve.py, KEEP_ALIVE_SECONDS).
    header_timeout_seconds: float = 30.0
    # Connections one API process keeps open at once; more are closed as they
    # arrive. systemd/exportd-web.service's LimitNOFILE fits this default.
    max_connections: int = 1000
    log_format: str = "text"
    # URL prefix of an nginx `internal` location mapped to storage_dir. When
    # set, authorised downloads are answered with X-Accel-Redirect and nginx
    # streams the file.
    accel_redirect: str | None = None
    # Webhooks (DESIGN §12). Configured endpoints: webhook_url (every event)
    # and the [[webhooks]] tables of the config file (url, events, secret),
    # signed with their own secret or webhook_secret (whsec_… form).
    webhook_url: str | None = None
    webhooks: tuple[Endpoint, ...] = ()
    webhook_secret: str | None = field(default=None, repr=False)
    # Hosts a job's notify_url may name (empty: no notify_url accepted), and
    # hosts any endpoint may resolve to a non-public address (loopback,
    # private, link-local) — two different questions, two lists.
    webhook_allowed_hosts: tuple[str, ...] = ()
    webhook_private_hosts: tuple[str, ...] = ()
    # A delivery is retried with backoff (base * 2^(attempt-1), at most an
    # hour) until this long after its event; one attempt may take timeout.
    webhook_retry_hours: float = 24.0
    webhook_retry_base_seconds: float = 10.0
    webhook_timeout_seconds: float = 10.0
    # Deliveries one worker runs at once, beside (not within) its exports.
    webhook_concurrency: int = 4

    @property
    def embedded_pg_dir(self) -> Path:
        """Data directory of the embedded PostgreSQL server."""
        return self.data_dir / "pg"

    @property
    def secret_file(self) -> Path:
        """Where `exportd up` keeps the JWT secret it generated."""
        return self.data_dir / "jwt_secret"

    @property
    def link_secret_file(self) -> Path:
        """Where `exportd up` keeps the link-signing secret it generated."""
        return self.data_dir / "link_secret"

    @property
    def uses_s3(self) -> bool:
        return self.storage_url is not None and self.storage_url.startswith("s3://")

    @property
    def base_url(self) -> str:
        """Absolute URLs handed out (signed links) start with this."""
        if self.public_url is not None:
            return self.public_url
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def webhook_endpoints(self) -> tuple[Endpoint, ...]:
        """Every configured endpoint, each with the secret it is signed with."""
        configured = ((Endpoint(self.webhook_url),) if self.webhook_url else ()) + self.webhooks
        return tuple(Endpoint(e.url, e.events, e.secret or self.webhook_secret) for e in configured)

    def retry_delay(self, attempt: int) -> float:
        """Seconds before retrying after failed attempt number `attempt`:
        exponential from `retry_base_seconds`, capped at `retry_max_seconds`."""
        exponent = min(max(attempt - 1, 0), 30)
        return float(min(self.retry_max_seconds, self.retry_base_seconds * 2**exponent))


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
    _storage_dir_from_url(values)
    values.setdefault("storage_dir", data_dir / "packages")
    values.setdefault("work_dir", data_dir / "work")
    _check_jwt(values, explicit_algorithms="jwt_algorithms" in values)
    settings = Settings(**values)
    if settings.stalled_after_seconds < 2 * settings.heartbeat_seconds:
        raise ConfigError(
            "EXPORTD_STALLED_AFTER_SECONDS",
            "must be at least twice EXPORTD_HEARTBEAT_SECONDS (a missed beat is no crash)",
        )
    if settings.retry_max_seconds < settings.retry_base_seconds:
        raise ConfigError("EXPORTD_RETRY_MAX_SECONDS", "must be >= EXPORTD_RETRY_BASE_SECONDS")
    _check_webhooks(settings)
    return settings


def _check_webhooks(settings: Settings) -> None:
    """Every endpoint can be signed; one URL is configured once."""
    if settings.webhook_secret is None:
        if settings.webhook_url or any(e.secret is None for e in settings.webhooks):
            raise ConfigError(
                "EXPORTD_WEBHOOK_SECRET", "is needed to sign the configured webhook endpoints"
            )
        if settings.webhook_allowed_hosts:
            raise ConfigError(
                "EXPORTD_WEBHOOK_SECRET", "is needed to sign webhooks sent to a job's notify_url"
            )
    if settings.webhook_url and any(e.url == settings.webhook_url for e in settings.webhooks):
        raise ConfigError("EXPORTD_WEBHOOK_URL", "is also listed in [[webhooks]]; list it once")


def _storage_dir_from_url(values: dict[str, Any]) -> None:
    """`EXPORTD_STORAGE_URL=file:///PATH` is `EXPORTD_STORAGE_DIR=/PATH`; both
    set to different places is a mistake worth stopping for."""
    url: str | None = values.get("storage_url")
    if url is None or not url.startswith("file://"):
        return
    path = Path(url.removeprefix("file://"))
    given: Path | None = values.get("storage_dir")
    if given is not None and given.resolve() != path.resolve():
        raise ConfigError(
            "EXPORTD_STORAGE_URL", "names another directory than EXPORTD_STORAGE_DIR; set one"
        )
    values["storage_dir"] = path


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
