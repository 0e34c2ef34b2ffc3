"""The admin dashboard's figures, read in one snapshot.

GET /api/v1/admin/dashboard (web/admin.py) shows an operator what they would
otherwise ask `psql`: queue health per kind, workers, running and stalled
exports, the last failures, the webhook endpoints that keep failing. Every
statement is in `sql/queries/dashboard.sql`
and runs in ONE read-only REPEATABLE READ transaction, so the counts, the
running list and the failures describe the same moment (a job never shows
as both running and failed). Each list is bounded: the page stays small
however large the backlog.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar
from uuid import UUID

from psycopg import errors
from psycopg.rows import class_row

from daemon.db.connect import Connection
from daemon.db.queries import named_queries
from daemon.errors import DatabaseUnavailable

Q = named_queries("dashboard")
T = TypeVar("T")

# How long one statement of a refresh may take (PostgreSQL's interval syntax).
STATEMENT_TIMEOUT = "5s"
# How many rows each list may have.
MAX_WORKERS = 100
MAX_RUNNING = 200
MAX_STALLED = 200
MAX_FAILURES = 50
MAX_WEBHOOKS = 50


@dataclass(frozen=True)
class KindFigures:
    """One kind's queue health (a kind with no active job and no pause has no row)."""

    kind: str
    pending: int  # due now
    scheduled_later: int  # pending, not due yet (delay_seconds, retry backoff)
    running: int  # in_progress or cancelling
    failed_last_hour: int  # ended failed or rolled_back in the last hour
    oldest_pending_seconds: float | None  # age of the oldest due pending job
    paused: bool
    paused_at: datetime | None
    paused_by: str | None


@dataclass(frozen=True)
class WorkerFigures:
    worker_id: int
    last_heartbeat: datetime | None
    heartbeat_age_seconds: float | None
    running_jobs: int


@dataclass(frozen=True)
class RunningJob:
    job_id: UUID
    kind: str
    owner_id: str | None
    status: str
    attempts: int
    max_attempts: int
    progress_percentage: int
    current_step: str | None
    started_at: datetime | None
    worker_id: int | None  # procrastinate's worker id
    worker: str | None  # "exportd-worker host:pid#id", from the open attempt
    heartbeat_age_seconds: float | None


@dataclass(frozen=True)
class StalledJob:
    job_id: UUID
    kind: str
    owner_id: str | None
    status: str
    attempts: int
    max_attempts: int
    started_at: datetime | None
    worker_id: int | None
    heartbeat_age_seconds: float | None  # None: the worker is gone


@dataclass(frozen=True)
class FailedJob:
    job_id: UUID
    kind: str
    owner_id: str | None
    status: str
    attempts: int
    max_attempts: int
    error_message: str | None
    failed_at: datetime


@dataclass(frozen=True)
class FailingWebhook:
    """A webhook endpoint whose receiver keeps refusing or timing out."""

    url: str
    configured: bool  # from the configuration (False: a job's notify_url)
    pending: int
    failing: int  # events not delivered after at least one attempt
    last_error: str | None
    last_error_at: datetime | None
    oldest_undelivered_seconds: float | None


@dataclass(frozen=True)
class Dashboard:
    taken_at: datetime
    kinds: list[KindFigures]
    workers: list[WorkerFigures]
    running: list[RunningJob]
    stalled: list[StalledJob]
    failures: list[FailedJob]
    webhooks: list[FailingWebhook]


async def _rows(conn: Connection, row: type[T], query: str, limit: int | None = None) -> list[T]:
    async with conn.cursor(row_factory=class_row(row)) as cur:
        await cur.execute(Q[query], None if limit is None else {"limit": limit})
        return await cur.fetchall()


async def read_dashboard(conn: Connection) -> Dashboard:
    """Everything the admin page shows, as of one snapshot of the database.

    A read slower than STATEMENT_TIMEOUT (a database too busy, a table
    locked by a migration) is DatabaseUnavailable: try again shortly.
    """
    try:
        return await _read(conn)
    except errors.QueryCanceled:
        raise DatabaseUnavailable(
            f"the dashboard's figures took longer than {STATEMENT_TIMEOUT} to read"
        ) from None


async def _read(conn: Connection) -> Dashboard:
    async with conn.transaction():
        await conn.execute(Q["begin_snapshot"])
        await conn.execute(Q["limit_reads"], {"timeout": STATEMENT_TIMEOUT})
        moment = await (await conn.execute(Q["snapshot_time"])).fetchone()
        assert moment is not None
        return Dashboard(
            taken_at=moment[0],
            kinds=await _rows(conn, KindFigures, "kind_figures"),
            workers=await _rows(conn, WorkerFigures, "workers", MAX_WORKERS),
            running=await _rows(conn, RunningJob, "running_jobs", MAX_RUNNING),
            stalled=await _rows(conn, StalledJob, "stalled_jobs", MAX_STALLED),
            failures=await _rows(conn, FailedJob, "recent_failures", MAX_FAILURES),
            webhooks=await _rows(conn, FailingWebhook, "failing_webhooks", MAX_WEBHOOKS),
        )
