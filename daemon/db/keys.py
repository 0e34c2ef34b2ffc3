"""Data access for `exportd.api_keys`: the only module that runs its statements.

A row holds a key's public prefix and the SHA-256 of the key, never the key
(`daemon/api_keys.py` makes keys and says why a hash is enough). Listing and
revoking return `ApiKey`, which has no hash at all; only authentication reads
the hash, as a `KeyCredential`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection, errors
from psycopg.rows import class_row

from daemon.db.queries import named_queries

Q = named_queries("keys")
# `last_used_at` is written at most this often per key, by all processes together.
TOUCH_INTERVAL_SECONDS = 60

Connection = AsyncConnection[Any]


@dataclass(frozen=True)
class ApiKey:
    """A key as an operator sees it (`exportd keys ls`, GET /api/v1/admin/keys)."""

    prefix: str
    owner_id: str
    name: str
    admin: bool
    rate_limit: str | None  # '600/minute', 'off', or None: the owner's per-subject limit
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class KeyCredential:
    """What authenticating a request with a key reads: the hash and the grant."""

    prefix: str
    key_sha256: bytes = field(repr=False)
    owner_id: str
    admin: bool
    rate_limit: str | None
    expires_at: datetime | None
    revoked_at: datetime | None


async def insert_key(
    conn: Connection,
    *,
    prefix: str,
    key_sha256: bytes,
    owner_id: str,
    name: str,
    admin: bool,
    rate_limit: str | None,
    expires_at: datetime | None,
    now: datetime | None = None,
) -> ApiKey | None:
    """Store a new key; None when its prefix is already taken (the caller
    makes another key: with 50 random bits that is a once-in-a-lifetime event)."""
    params = {
        "prefix": prefix,
        "key_sha256": key_sha256,
        "owner_id": owner_id,
        "name": name,
        "admin": admin,
        "rate_limit": rate_limit,
        "expires_at": expires_at,
        "now": now,
    }
    try:
        async with conn.cursor(row_factory=class_row(ApiKey)) as cur:
            await cur.execute(Q["insert_key"], params)
            return await cur.fetchone()
    except errors.UniqueViolation as exc:
        if exc.diag.constraint_name == "api_keys_prefix_unique":
            return None
        raise


async def credential(conn: Connection, prefix: str) -> KeyCredential | None:
    async with conn.cursor(row_factory=class_row(KeyCredential)) as cur:
        await cur.execute(Q["credential_by_prefix"], {"prefix": prefix})
        return await cur.fetchone()


async def list_keys(conn: Connection, *, owner_id: str | None = None) -> list[ApiKey]:
    async with conn.cursor(row_factory=class_row(ApiKey)) as cur:
        await cur.execute(Q["list_keys"], {"owner_id": owner_id})
        return await cur.fetchall()


async def revoke_key(
    conn: Connection, prefix: str, *, now: datetime | None = None
) -> ApiKey | None:
    """Revoke the key; None when no key has this prefix. Revoking again is harmless."""
    async with conn.cursor(row_factory=class_row(ApiKey)) as cur:
        await cur.execute(Q["revoke_key"], {"prefix": prefix, "now": now})
        return await cur.fetchone()


async def touch_key(conn: Connection, prefix: str, *, now: datetime | None = None) -> bool:
    """Record a use of the key unless one was recorded within
    TOUCH_INTERVAL_SECONDS; True when the row was written."""
    cur = await conn.execute(
        Q["touch_key"],
        {"prefix": prefix, "now": now, "interval_seconds": TOUCH_INTERVAL_SECONDS},
    )
    return cur.rowcount == 1
