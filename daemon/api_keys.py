"""API keys for machine callers: making, recognising, hashing and revoking them.

A key is `exk_` followed by 52 lower-case base32 characters: 32 bytes from
`secrets`, so 256 random bits. Base32 keeps it to letters and digits (a
double-click selects it whole; no `-` for a shell to read as an option).
Its first PREFIX_LENGTH characters after `exk_` are its public prefix: the
database finds the key by it, and operators name keys by it.

What is stored is the SHA-256 of the key, never the key: a slow password
hash protects guessable secrets; a 256-bit random one cannot be guessed, so
one hash is enough, and checking a key stays cheap on every request. The
key is printed once, when it is made (`exportd keys create`, POST
/api/v1/admin/keys), and exists nowhere else afterwards.

The CLI and the admin API both create and revoke keys through this module,
so their rules are the same.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from daemon.config_values import parse_rate_limit
from daemon.db import keys as key_store
from daemon.db.connect import Connection
from daemon.db.keys import ApiKey
from daemon.errors import ExportdError
from daemon.subjects import has_refused_characters, subject_problem

KEY_MARK = "exk_"
KEY_BYTES = 32
KEY_CHARACTERS = 52  # base32 of 32 bytes, without its "====" padding
PREFIX_LENGTH = 10
MAX_NAME = 200
MAX_EXPIRES_DAYS = 3650
# The most requests a per-key rate limit may grant per period (the column's CHECK).
MAX_RATE_REQUESTS = 999_999_999
_KEY = re.compile(
    rf"{KEY_MARK}([a-z2-7]{{{PREFIX_LENGTH}}})[a-z2-7]{{{KEY_CHARACTERS - PREFIX_LENGTH}}}"
)
_PREFIX = re.compile(rf"(?:{KEY_MARK})?([a-z2-7]{{{PREFIX_LENGTH}}})")
# New prefixes are random: a clash with an existing one is a once-in-a-lifetime
# event, and a few in a row means something else is wrong.
_PREFIX_TRIES = 5


class KeyNotFound(ExportdError):
    """No API key has this prefix."""


class KeyRequestError(ExportdError):
    """A value of a key to create is invalid; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class NewKey:
    """A key just made: the only moment its text exists outside its holder."""

    key: str
    record: ApiKey


def generate_key() -> str:
    raw = base64.b32encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")
    return KEY_MARK + raw.rstrip("=").lower()


def key_digest(key: str) -> bytes:
    """What the database stores and authentication compares: SHA-256 of the key's text."""
    return hashlib.sha256(key.encode("utf-8")).digest()


def key_prefix(key: str) -> str | None:
    """The public prefix of a well-formed key, or None when `key` is not one."""
    match = _KEY.fullmatch(key)
    return match[1] if match else None


def parse_prefix(text: str) -> str | None:
    """A prefix as an operator types it (with or without `exk_`), or None."""
    match = _PREFIX.fullmatch(text.strip())
    return match[1] if match else None


def check_rate_limit(text: str | None) -> str | None:
    """A per-key rate limit in its stored form ('600/minute', 'off'), or None."""
    if text is None:
        return None
    if len(text) > 32:
        raise KeyRequestError("rate_limit", "rate_limit must look like '600/minute' or 'off'")
    try:
        rate = parse_rate_limit(text)
    except ValueError as exc:
        raise KeyRequestError("rate_limit", f"rate_limit {exc}") from None
    if rate is None:
        return "off"
    if rate.requests > MAX_RATE_REQUESTS:
        raise KeyRequestError(
            "rate_limit", f"rate_limit may allow at most {MAX_RATE_REQUESTS} requests per period"
        )
    return str(rate)


def _check_request(owner_id: object, name: object, expires_in_days: object) -> None:
    problem = subject_problem(owner_id)
    if problem is not None:
        raise KeyRequestError("owner_id", f"the owner {problem}")
    if not isinstance(name, str) or len(name) > MAX_NAME or has_refused_characters(name):
        raise KeyRequestError(
            "name", f"name must be text of at most {MAX_NAME} characters, no control characters"
        )
    if expires_in_days is not None and (
        not isinstance(expires_in_days, int)
        or isinstance(expires_in_days, bool)
        or not 1 <= expires_in_days <= MAX_EXPIRES_DAYS
    ):
        raise KeyRequestError(
            "expires_in_days", f"expires_in_days must be an integer from 1 to {MAX_EXPIRES_DAYS}"
        )


async def create_key(
    conn: Connection,
    *,
    owner_id: str,
    name: str = "",
    admin: bool = False,
    expires_in_days: int | None = None,
    rate_limit: str | None = None,
    now: datetime | None = None,
) -> NewKey:
    """Make and store a key for `owner_id`; the returned text is never seen again.

    Raises KeyRequestError for a value the rules refuse (before anything is written).
    """
    _check_request(owner_id, name, expires_in_days)
    stored_rate = check_rate_limit(rate_limit)
    start = now or datetime.now(UTC)
    expires_at = start + timedelta(days=expires_in_days) if expires_in_days else None
    for _ in range(_PREFIX_TRIES):
        key = generate_key()
        prefix = key_prefix(key)
        assert prefix is not None
        record = await key_store.insert_key(
            conn,
            prefix=prefix,
            key_sha256=key_digest(key),
            owner_id=owner_id,
            name=name,
            admin=admin,
            rate_limit=stored_rate,
            expires_at=expires_at,
            now=now,
        )
        if record is not None:
            return NewKey(key, record)
    raise ExportdError("could not find an unused key prefix; try again")


async def revoke_key(conn: Connection, prefix_text: str, *, now: datetime | None = None) -> ApiKey:
    """Revoke the key named by its prefix (KeyRequestError when `prefix_text` is
    not one; KeyNotFound when no key has it).

    The row stays (who had it, when it was last used); every API process
    refuses the key within seconds."""
    prefix = parse_prefix(prefix_text)
    if prefix is None:
        raise KeyRequestError(
            "prefix",
            f"not a key prefix: {PREFIX_LENGTH} characters a-z and 2-7, as `exportd keys ls` shows",
        )
    revoked = await key_store.revoke_key(conn, prefix, now=now)
    if revoked is None:
        raise KeyNotFound(f"no API key has the prefix {prefix}")
    return revoked


def key_state(key: ApiKey, now: datetime | None = None) -> str:
    """'active', 'revoked' or 'expired' (as the view exportd.api_key_overview says)."""
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= (now or datetime.now(UTC)):
        return "expired"
    return "active"


def describe_key(key: ApiKey, now: datetime | None = None) -> dict[str, Any]:
    """A key as JSON (GET /api/v1/admin/keys, `exportd keys ls --json`): never its hash."""

    def iso(value: datetime | None) -> str | None:
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None

    return {
        "prefix": key.prefix,
        "owner_id": key.owner_id,
        "name": key.name,
        "admin": key.admin,
        "rate_limit": key.rate_limit,
        "state": key_state(key, now),
        "created_at": iso(key.created_at),
        "last_used_at": iso(key.last_used_at),
        "expires_at": iso(key.expires_at),
        "revoked_at": iso(key.revoked_at),
    }
