"""Data access for the webhook outbox (migration 0010): endpoints, events, attempts.

Events are written by a trigger of `exportd.jobs` in the statement that
changes the job, with one queue entry per endpoint; this module reads an
event for its delivery, records each attempt (and the running total of its
outcome) in one statement, and serves `exportd webhooks` and the health
view. Statements come from `sql/queries/webhooks.sql`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg.rows import class_row, dict_row
from psycopg.types.json import Jsonb

from daemon.db.connect import Connection
from daemon.db.pools import Pool, pooled
from daemon.db.queries import named_queries
from daemon.models import Job
from daemon.webhooks.endpoints import Endpoint

Q = named_queries("webhooks")
_JOB_COLUMNS = frozenset(f.name for f in fields(Job))


@dataclass(frozen=True)
class Delivery:
    """What one delivery attempt needs to know."""

    event_type: str
    event_created_at: datetime
    job: Job  # as the event recorded it
    already_delivered: bool  # by this queue entry, before a crash
    package_live: bool  # the package the event announced is still downloadable


@dataclass(frozen=True)
class DeliveryRow:
    """One event and one of its endpoints, as `exportd webhooks ls` shows them."""

    event_id: UUID
    type: str
    job_id: UUID
    created_at: datetime
    url: str | None
    attempts: int
    last_status: int | None
    last_error: str | None
    delivered_at: datetime | None
    state: str  # delivered, pending, retrying, failed, no endpoint


@dataclass(frozen=True)
class EndpointHealth:
    """A row of `exportd.webhook_health`."""

    url: str
    configured: bool
    pending: int
    delivered: int
    failing: int
    last_error: str | None
    last_error_at: datetime | None
    oldest_undelivered_seconds: float | None


async def sync_endpoints(conn: Connection, endpoints: Sequence[Endpoint]) -> None:
    """Make the configured endpoints (never their secrets) what the trigger reads."""
    rows = [{"url": e.url, "events": list(e.events)} for e in endpoints]
    await conn.execute(Q["sync_endpoints"], {"endpoints": Jsonb(rows)})


async def delivery(pool: Pool, event_id: UUID, url: str, queue_job_id: int) -> Delivery | None:
    """The event to deliver to `url`; None when it no longer exists (pruned)."""
    async with pooled(pool) as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            Q["delivery"], {"event_id": event_id, "url": url, "queue_job_id": queue_job_id}
        )
        row = await cur.fetchone()
    if row is None:
        return None
    job = Job(**{name: value for name, value in row.items() if name in _JOB_COLUMNS})
    return Delivery(
        event_type=row["event_type"],
        event_created_at=row["event_created_at"],
        job=job,
        already_delivered=bool(row["already_delivered"]),
        package_live=bool(row["package_live"]),
    )


async def record_attempt(
    pool: Pool,
    *,
    event_id: UUID,
    url: str,
    queue_job_id: int,
    outcome: str,
    status_code: int | None,
    duration_ms: int,
    error: str | None,
    attempted_at: datetime,
) -> int | None:
    """Record one attempt; its number, or None when the event is gone."""
    async with pooled(pool) as conn:
        cur = await conn.execute(
            Q["record_attempt"],
            {
                "event_id": event_id,
                "url": url,
                "queue_job_id": queue_job_id,
                "outcome": outcome,
                "status_code": status_code,
                "duration_ms": duration_ms,
                "error": error,
                "attempted_at": attempted_at,
            },
        )
        row = await cur.fetchone()
    return int(row[0]) if row else None


async def list_deliveries(conn: Connection, *, failed: bool, limit: int) -> list[DeliveryRow]:
    async with conn.cursor(row_factory=class_row(DeliveryRow)) as cur:
        await cur.execute(Q["list_deliveries"], {"failed": failed, "limit": limit})
        return await cur.fetchall()


async def redeliver(conn: Connection, event_id: UUID, *, url: str | None = None) -> int | None:
    """Queue the event again to its endpoints (or `url`); how many deliveries
    were queued, None when there is no such event."""
    cur = await conn.execute(Q["redeliver"], {"event_id": event_id, "url": url})
    row: Any = await cur.fetchone()
    return None if row is None else int(row[0])


async def health(conn: Connection) -> list[EndpointHealth]:
    async with conn.cursor(row_factory=class_row(EndpointHealth)) as cur:
        await cur.execute(Q["health"])
        return await cur.fetchall()
