"""Data access for `exportd.job_attempts`: settling attempts, rescuing lost ones.

Each settle is ONE statement of `sql/queries/attempts.sql` that updates the
job row, closes the attempt row and finishes (or retries) procrastinate's
job — the commit procrastinate would have made anyway. Every statement is
guarded by the attempt's identity, so an attempt that lost its job (cancelled,
rescued) changes nothing and gets `False`.

The worker hands in procrastinate's pool; driver errors leave as
`DatabaseUnavailable`, which the settler retries through a short outage.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, LiteralString
from uuid import UUID

import psycopg
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from daemon.db.connect import Connection, translated_errors
from daemon.db.pools import Pool
from daemon.db.queries import named_queries

Q = named_queries("attempts")


@dataclass(frozen=True)
class AttemptIds:
    """Which attempt a settle is about (the guard of every statement)."""

    job_id: UUID
    run: int
    attempt: int
    queue_job_id: int


@dataclass(frozen=True)
class AttemptRow:
    """A row of `exportd.job_attempts`."""

    job_id: UUID
    run: int
    attempt: int
    queue_job_id: int | None
    worker: str | None
    started_at: datetime
    finished_at: datetime | None
    outcome: str | None
    error: str | None
    resumed_from_step: int | None = None  # 1-based; None: the attempt started at step 1


async def _one(pool: Pool, query: LiteralString, params: dict[str, Any]) -> tuple[Any, ...] | None:
    with translated_errors():
        async with pool.connection() as conn:
            await conn.set_autocommit(True)
            cur = await conn.execute(query, params)
            row: tuple[Any, ...] | None = await cur.fetchone()
            return row


def _params(ids: AttemptIds, **extra: Any) -> dict[str, Any]:
    return {
        "job_id": ids.job_id,
        "run": ids.run,
        "attempt": ids.attempt,
        "queue_job_id": ids.queue_job_id,
        "now": None,
        **extra,
    }


async def complete_attempt(
    pool: Pool,
    ids: AttemptIds,
    *,
    steps_total: int,
    result: dict[str, Any],
    package_path: str,
    package_size_bytes: int,
    package_sha256: str,
    retention_days: int,
) -> bool:
    """in_progress -> completed with its package; False when the row refused."""
    row = await _one(
        pool,
        Q["complete_attempt"],
        _params(
            ids,
            steps_total=steps_total,
            result=Jsonb(result),
            package_path=package_path,
            package_size_bytes=package_size_bytes,
            package_sha256=package_sha256,
            retention_days=retention_days,
        ),
    )
    return bool(row and row[0])


async def mark_failed(pool: Pool, ids: AttemptIds, *, error: str) -> bool:
    """A final failure is 'failed' while its rollback runs."""
    return await _one(pool, Q["mark_failed"], _params(ids, error=error)) is not None


async def fail_attempt(
    pool: Pool,
    ids: AttemptIds,
    *,
    retry_at: datetime | None,
    final_status: str,
    outcome: str,
    error: str,
) -> bool:
    """Retry at `retry_at` (in_progress -> pending), or, with None, end the run
    (failed -> `final_status`)."""
    row = await _one(
        pool,
        Q["fail_attempt"],
        _params(
            ids,
            retry=retry_at is not None,
            retry_at=retry_at,
            final_status=final_status,
            outcome=outcome,
            error=error,
        ),
    )
    return bool(row and row[0])


async def cancel_attempt(pool: Pool, ids: AttemptIds, *, error: str) -> bool:
    """cancelling -> cancelled after the pipeline stopped and rolled back."""
    row = await _one(pool, Q["cancel_attempt"], _params(ids, error=error))
    return bool(row and row[0])


async def rescue_lost(pool: Pool, queue_job_id: int, *, retry_at: datetime) -> str:
    """Record a lost attempt; 'retried', 'failed', 'cancelled', 'skipped' or 'gone'."""
    row = await _one(pool, Q["rescue_lost"], {"queue_job_id": queue_job_id, "retry_at": retry_at})
    return str(row[0]) if row else "gone"


async def record_resume(pool: Pool, job_id: UUID, run: int, attempt: int, *, step: int) -> None:
    """The attempt continues its run at `step` (1-based)."""
    await _one(
        pool, Q["record_resume"], {"job_id": job_id, "run": run, "attempt": attempt, "step": step}
    )


async def end_run(conn: Connection, job_id: UUID, run: int) -> bool:
    """Claim the end of a run's kept steps: True for the one caller that
    must roll them back; False once claimed, or when the job is gone.
    `conn` is in autocommit mode."""
    try:
        with translated_errors():
            cur = await conn.execute(Q["end_run"], {"job_id": job_id, "run": run})
            return await cur.fetchone() is not None
    except psycopg.errors.ForeignKeyViolation:
        return False  # the job row was deleted meanwhile


@dataclass(frozen=True)
class RunState:
    """What the checkpoint sweep may do with one run's checkpoint (see
    `run_states` in sql/queries/attempts.sql), and the job to roll back for."""

    job_id: UUID
    run: int
    state: str  # live, open, completed, ended, gone
    kind: str | None
    owner_id: str | None
    params: dict[str, Any] | None
    created_at: datetime | None
    attempts: int | None


async def run_states(
    conn: Connection, runs: list[tuple[UUID, int]], *, rollback_grace: float
) -> list[RunState]:
    with translated_errors():
        async with conn.cursor(row_factory=class_row(RunState)) as cur:
            await cur.execute(
                Q["run_states"],
                {
                    "job_ids": [job for job, _ in runs],
                    "runs": [run for _, run in runs],
                    "rollback_grace": rollback_grace,
                },
            )
            states: list[RunState] = await cur.fetchall()
            return states


async def attempts_of_job(conn: Connection, job_id: UUID) -> list[AttemptRow]:
    async with conn.cursor(row_factory=class_row(AttemptRow)) as cur:
        await cur.execute(Q["attempts_of_job"], {"job_id": job_id})
        return await cur.fetchall()
