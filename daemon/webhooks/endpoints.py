"""Configured webhook endpoints and their secrets, as the settings hold them.

An endpoint is a URL, the event types it wants and, optionally, a secret of
its own (else `EXPORTD_WEBHOOK_SECRET`). Secrets are in the Standard Webhooks
form `whsec_` + base64 of 24 to 64 random bytes, so that any Standard
Webhooks library on the receiving side takes the same string. The parsers
raise ValueError with a reason that never repeats a secret;
`daemon.config_values` names the variable.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

EVENT_TYPES = ("export.completed", "export.failed", "export.cancelled", "export.expired")
SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix of the format, not a secret
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64
MAX_URL_LENGTH = 2048
# How to make a secret (shown in configuration errors).
SECRET_COMMAND = (
    "python3 -c 'import base64, secrets; "  # noqa: S105 - a command, not a secret
    'print("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode())\''
)


@dataclass(frozen=True)
class Endpoint:
    """Where events go; `secret` None means "the default secret"."""

    url: str
    events: tuple[str, ...] = EVENT_TYPES
    secret: str | None = field(default=None, repr=False)

    def wants(self, event_type: str) -> bool:
        return event_type in self.events


def secret_bytes(secret: str) -> bytes:
    """The HMAC key of a `whsec_…` secret (checked by `parse_secret` first)."""
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)


def parse_secret(raw: Any) -> str:
    """A signing secret in the `whsec_<base64>` form of Standard Webhooks."""
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError("must be a non-empty string")
    text = raw.strip()
    if not text.startswith(SECRET_PREFIX):
        raise ValueError(f"must start with {SECRET_PREFIX!r}; generate one with {SECRET_COMMAND}")
    try:
        key = secret_bytes(text)
    except (binascii.Error, ValueError):
        raise ValueError(f"must be {SECRET_PREFIX} followed by base64") from None
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise ValueError(
            f"must hold {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes; "
            f"generate one with {SECRET_COMMAND}"
        )
    if len(set(key)) < 8:
        raise ValueError(f"is not random; generate one with {SECRET_COMMAND}")
    return text


def parse_url(raw: Any) -> str:
    """An endpoint URL: http(s), a host, no credentials, no fragment."""
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError("must be a non-empty URL")
    text = raw.strip()
    if len(text) > MAX_URL_LENGTH or not text.isascii() or not text.isprintable() or " " in text:
        raise ValueError(f"must be a printable ASCII URL of at most {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ValueError("is not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL")
    if "@" in parts.netloc:
        raise ValueError("must not contain credentials (user:password@)")
    if not parts.hostname:
        raise ValueError("must name a host")
    if parts.fragment or text.endswith("#"):
        raise ValueError("must not have a fragment")
    if port == 0:
        raise ValueError("has an invalid port")
    return text


def parse_events(raw: Any) -> tuple[str, ...]:
    items = raw if isinstance(raw, list) else str(raw).split(",")
    events = tuple(dict.fromkeys(str(item).strip() for item in items if str(item).strip()))
    if not events:
        raise ValueError(f"events must name at least one of {', '.join(EVENT_TYPES)}")
    for event in events:
        if event not in EVENT_TYPES:
            raise ValueError(f"unknown event {event!r} (use {', '.join(EVENT_TYPES)})")
    return events


def parse_endpoints(raw: Any) -> tuple[Endpoint, ...]:
    """`[[webhooks]]` tables of the TOML config (a list of tables), or the
    same as a JSON array in `EXPORTD_WEBHOOKS`."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise ValueError("must be a JSON array of {url, events?, secret?} objects") from None
    if not isinstance(raw, list):
        raise ValueError("must be a list of tables ([[webhooks]] in the config file)")
    endpoints: list[Endpoint] = []
    for number, table in enumerate(raw, 1):
        if not isinstance(table, dict):
            raise ValueError(f"entry {number} must be a table with url, events and secret")
        unknown = sorted(set(table) - {"url", "events", "secret"})
        if unknown:
            raise ValueError(f"entry {number}: unknown key {unknown[0]!r}")
        try:
            url = parse_url(table.get("url"))
            events = parse_events(table["events"]) if "events" in table else EVENT_TYPES
            secret = parse_secret(table["secret"]) if "secret" in table else None
        except ValueError as exc:
            raise ValueError(f"entry {number}: {exc}") from None
        endpoints.append(Endpoint(url, events, secret))
    urls = [e.url for e in endpoints]
    if len(set(urls)) != len(urls):
        raise ValueError("the same url is listed twice")
    return tuple(endpoints)


def normalise_host(host: str) -> str:
    """How hosts are compared: lower case, no brackets, no trailing dot."""
    return host.strip().lower().removeprefix("[").removesuffix("]").rstrip(".")


def parse_hosts(raw: Any) -> tuple[str, ...]:
    """Comma-separated (or a TOML list of) host names, IP addresses, `*.domain`
    patterns, or `*` alone."""
    items = raw if isinstance(raw, list) else str(raw).split(",")
    hosts: list[str] = []
    for item in items:
        host = normalise_host(str(item))
        if not host:
            continue
        name = host.removeprefix("*.")
        if host != "*" and (
            not name.isascii()
            or not all(c.isalnum() or c in "-.:_" for c in name)
            or "*" in name
            or "/" in name
        ):
            raise ValueError(f"{str(item).strip()!r} is not a host name, address or *.domain")
        hosts.append(host)
    return tuple(dict.fromkeys(hosts))


def host_matches(host: str, patterns: tuple[str, ...]) -> bool:
    """Whether `host` is one of `patterns` (`*.example.com`: any name below it)."""
    host = normalise_host(host)
    for pattern in patterns:
        if pattern == "*" or pattern == host:
            return True
        if pattern.startswith("*.") and host.endswith(pattern[1:]):
            return True
    return False
