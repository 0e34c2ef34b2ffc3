"""Data access for `exportd.jobs`: the only module that runs its statements.

Every function takes the connection to use, so a caller can put several
statements in one transaction (creating a job and deferring its queue entry
commit together). Statements come from `sql/queries/jobs.sql`. psycopg
errors are translated here into `daemon.errors` so that the pipeline and the
HTTP layer never see driver exceptions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, LiteralString
from uuid import UUID

from psycopg import AsyncConnection, AsyncCursor, errors
from psycopg.rows import RowMaker, class_row, dict_row
from psycopg.types.json import Jsonb

from daemon.db.queries import named_queries
from daemon.errors import (
    ConstraintViolation,
    IdempotencyConflict,
    InvalidTransition,
    JobNotFound,
    TooManyExports,
)
from daemon.models import Job, JobStatus, NewJob

Q = named_queries("jobs")
MAX_PAGE = 200
# `exportd jobs show 0513`: shorter prefixes match too much to be useful.
MIN_ID_PREFIX = 4
# Job's fields in order: the columns of the `get_job` statement.
JOB_FIELDS = tuple(f.name for f in fields(Job))
_JOB_COLUMNS = frozenset(JOB_FIELDS)

Connection = AsyncConnection[Any]


@dataclass(frozen=True)
class Cursor:
    """Position after the last row of a page: (created_at, job_id) of that row."""

    created_at: datetime
    job_id: UUID


@asynccontextmanager
async def _translated() -> AsyncIterator[None]:
    """Turn constraint and trigger failures into exportd errors."""
    try:
        yield
    except errors.UniqueViolation as exc:
        if exc.diag.constraint_name == "jobs_owner_idempotency_key":
            raise IdempotencyConflict("this idempotency key is already used") from None
        raise ConstraintViolation(f"duplicate value ({exc.diag.constraint_name})") from None
    except errors.CheckViolation as exc:
        if exc.diag.constraint_name == "job_status_transition":
            raise InvalidTransition(exc.diag.message_primary or "status change refused") from None
        raise ConstraintViolation(f"value out of range ({exc.diag.constraint_name})") from None


def _job(row: Mapping[str, Any]) -> Job:
    """A `Job` from a row of `exportd.jobs`, leaving out the columns `Job` does
    not carry (`request_hash`: only the idempotency replay reads it)."""
    return Job(**{name: value for name, value in row.items() if name in _JOB_COLUMNS})


def job_row(cursor: AsyncCursor[Any]) -> RowMaker[Job]:
    """psycopg row factory: whole rows of `exportd.jobs` as `Job`.

    The columns `Job` carries are found once per result, not per row, and
    each row becomes one dict (the status API reads a row per request)."""
    # The names straight from the result: `cursor.description` would build a
    # Column object per column for every result.
    result = cursor.pgresult
    count = 0 if result is None else result.nfields
    names = [(result.fname(i) or b"").decode() for i in range(count)] if result else []
    kept = [(i, name) for i, name in enumerate(names) if name in _JOB_COLUMNS]

    def make(values: Sequence[Any]) -> Job:
        return Job(**{name: values[i] for i, name in kept})

    return make


def job_in_order(cursor: AsyncCursor[Any]) -> RowMaker[Job]:
    """psycopg row factory of a statement that selects JOB_FIELDS, in order.

    The status API reads one row per request: `Job(*values)` names no
    column at all, where `job_row` decodes the result's column names and
    builds a dict per row (together about 40 % of reading the row)."""
    result = cursor.pgresult
    if result is not None and result.nfields != len(JOB_FIELDS):
        raise RuntimeError(f"a job statement returned {result.nfields} columns, not Job's fields")

    def make(values: Sequence[Any]) -> Job:
        return Job(*values)

    return make


async def _fetch_one(
    conn: Connection, query: LiteralString, params: Mapping[str, Any]
) -> Job | None:
    async with _translated(), conn.cursor(row_factory=job_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchone()


async def create_job(
    conn: Connection,
    new: NewJob,
    *,
    queue: str,
    task: str,
    now: datetime | None = None,
    request_hash: str | None = None,
    max_pending: int | None = None,
) -> Job:
    """Insert a pending job and defer its queue entry, atomically (one statement).

    An (owner, idempotency key) already used raises IdempotencyConflict and
    writes nothing, queue entry included. `request_hash` is stored for a later
    replay of the key to compare with (`find_stored_request`). An owner who
    already has `max_pending` jobs waiting gets TooManyExports, and nothing
    is written either (None: no limit).
    """
    job = await _fetch_one(
        conn,
        Q["create_job"],
        {
            "kind": new.kind,
            "owner_id": new.owner_id,
            "params": Jsonb(new.params),
            "priority": new.priority,
            "max_attempts": new.max_attempts,
            "idempotency_key": new.idempotency_key,
            "scheduled_at": new.scheduled_at,
            "request_hash": request_hash,
            "max_pending": max_pending,
            "notify_url": new.notify_url,
            "queue": queue,
            "task": task,
            "now": now,
        },
    )
    if job is None:
        raise TooManyExports(f"at most {max_pending} exports may wait to run per owner")
    return job


async def retry_job(
    conn: Connection, job_id: UUID, *, queue: str, task: str, now: datetime | None = None
) -> Job | None:
    """Start a new run of a finished job; None when the job is not retryable now.

    A completed job is retryable once its package is gone, which is exactly
    when a download answers 410: deleted, found missing, or past its expiry
    though the cleanup has not deleted it yet. In that last case the row
    first lets go of the file (release_gone_package), in the same
    transaction as the new run, so the state machine sees no package.
    """
    async with conn.transaction():
        await conn.execute(Q["release_gone_package"], {"job_id": job_id, "now": now})
        return await _fetch_one(
            conn, Q["retry_job"], {"job_id": job_id, "queue": queue, "task": task, "now": now}
        )


async def mark_package_missing(
    conn: Connection, job_id: UUID, *, package_path: str, now: datetime | None = None
) -> Job | None:
    """Record that the job's package file is not in storage (the download
    found it missing): the row no longer points at `package_path` and
    `package_deleted_at` says since when. None when the row no longer points
    there (expired, re-exported meanwhile)."""
    return await _fetch_one(
        conn,
        Q["mark_package_missing"],
        {"job_id": job_id, "package_path": package_path, "now": now},
    )


async def request_cancel(conn: Connection, job_id: UUID) -> Job:
    """Cancel a pending job, or ask the worker running it to stop.

    Returns the job after the request (cancelled, cancelling, or unchanged when
    it had already finished: the caller decides whether that is an error).
    """
    job = await _fetch_one(conn, Q["request_cancel"], {"job_id": job_id})
    if job is None or job.job_id is None:
        raise JobNotFound(f"no job {job_id}")
    return job


async def get_job(conn: Connection, job_id: UUID) -> Job:
    # A read: no constraint or trigger to translate (`_translated`).
    async with conn.cursor(row_factory=job_in_order) as cur:
        await cur.execute(Q["get_job"], {"job_id": job_id})
        job = await cur.fetchone()
    if job is None:
        raise JobNotFound(f"no job {job_id}")
    return job


@dataclass(frozen=True)
class StoredRequest:
    """The job an idempotency key created, and the hash of the request that
    created it (None for jobs created before migration 0005)."""

    job: Job
    request_hash: str | None


async def find_stored_request(conn: Connection, owner_id: str, key: str) -> StoredRequest | None:
    async with _translated(), conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            Q["get_job_by_idempotency_key"], {"owner_id": owner_id, "idempotency_key": key}
        )
        row = await cur.fetchone()
    if row is None:
        return None
    return StoredRequest(_job(row), row.get("request_hash"))


def id_prefix_bounds(prefix: str) -> tuple[UUID, UUID] | None:
    """The lowest and highest job id starting with `prefix` (hex digits; dashes
    are ignored); None when it is not such a prefix."""
    digits = prefix.strip().lower().replace("-", "")
    if not MIN_ID_PREFIX <= len(digits) <= 32 or any(c not in "0123456789abcdef" for c in digits):
        return None
    return UUID(digits.ljust(32, "0")), UUID(digits.ljust(32, "f"))


async def find_by_id_prefix(conn: Connection, prefix: str) -> list[Job]:
    """Up to two jobs whose id starts with `prefix`: one is a match, two an
    ambiguous prefix. ValueError when `prefix` is not at least MIN_ID_PREFIX
    hex digits."""
    bounds = id_prefix_bounds(prefix)
    if bounds is None:
        raise ValueError(f"a job id prefix is {MIN_ID_PREFIX} to 32 hex digits")
    low, high = bounds
    async with _translated(), conn.cursor(row_factory=job_row) as cur:
        await cur.execute(Q["find_jobs_by_id_prefix"], {"low": low, "high": high})
        return await cur.fetchall()


async def list_jobs(
    conn: Connection,
    *,
    owner_id: str | None,
    status: JobStatus | None = None,
    kind: str | None = None,
    after: Cursor | None = None,
    limit: int = 50,
) -> list[Job]:
    """A page of jobs, newest first; owner_id None lists every owner's (admin)."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE}")
    params = {
        "owner_id": owner_id,
        "status": status.value if status else None,
        "kind": kind,
        "after_created_at": after.created_at if after else None,
        "after_job_id": after.job_id if after else None,
        "limit": limit,
    }
    query = Q["list_all_jobs"] if owner_id is None else Q["list_owner_jobs"]
    async with _translated(), conn.cursor(row_factory=job_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()


async def set_status(
    conn: Connection,
    job_id: UUID,
    status: JobStatus,
    *,
    expected: JobStatus | None = None,
    error_message: str | None = None,
    now: datetime | None = None,
) -> Job | None:
    """Move a job to `status`; None when `expected` no longer matches (lost a race).

    Raises InvalidTransition when the state machine forbids the change and
    JobNotFound when there is no such job.
    """
    job = await _fetch_one(
        conn,
        Q["set_status"],
        {
            "job_id": job_id,
            "status": status.value,
            "expected_status": expected.value if expected else None,
            "error_message": error_message,
            "now": now,
        },
    )
    if job is None and expected is None:
        raise JobNotFound(f"no job {job_id}")
    return job


async def update_progress(
    conn: Connection,
    job_id: UUID,
    done: int,
    total: int,
    current_step: str | None,
    percentage: int | None = None,
) -> JobStatus | None:
    """Record progress of a running job; returns its status (None if not running).

    The status comes back in the same round trip so the pipeline learns about
    a cancellation without asking separately.
    """
    async with _translated(), conn.cursor() as cur:
        await cur.execute(
            Q["update_progress"],
            {
                "job_id": job_id,
                "steps_completed": done,
                "steps_total": total,
                "current_step": current_step[:255] if current_step else None,
                "percentage": percentage if percentage is not None else _percentage(done, total),
            },
        )
        row = await cur.fetchone()
    return JobStatus(row[0]) if row else None


def _percentage(done: int, total: int) -> int:
    return 0 if total <= 0 else min(99, (100 * done) // total)


@dataclass(frozen=True)
class ExpiringPackage:
    job_id: UUID
    package_path: str
    package_expires_at: datetime


async def packages_due_for_expiry(
    conn: Connection, *, limit: int = 500, now: datetime | None = None
) -> list[ExpiringPackage]:
    """The next batch of live packages past their expiry (served by the expiry index)."""
    async with conn.cursor(row_factory=class_row(ExpiringPackage)) as cur:
        await cur.execute(Q["packages_due_for_expiry"], {"limit": limit, "now": now})
        return await cur.fetchall()
