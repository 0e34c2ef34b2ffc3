"""Data access for retention: the statements of `sql/queries/maintenance.sql`.

Each batch function runs ONE statement that handles at most `limit` rows and,
on the autocommit connection the caller hands in, is its own transaction: a
backlog of a million rows neither holds locks for long nor loads them into
memory, and rows another cleanup has locked are skipped, so two cleanups
share the work. Deciding how many batches to run, and what to do with the
files, is daemon/maintenance's business.

`now` is None in production (the database's clock) and a fixed time in tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from daemon.db.connect import Connection
from daemon.db.queries import named_queries

Q = named_queries("maintenance")


@dataclass(frozen=True)
class ExpiredPackage:
    """A package whose row no longer points at it: its file is to be unlinked."""

    job_id: UUID
    package_path: str
    size_bytes: int


async def expire_packages_batch(
    conn: Connection, *, limit: int, now: datetime | None
) -> list[ExpiredPackage]:
    """Mark the next batch of expired packages deleted; committed on return
    (autocommit), so the caller unlinks files no row references any more."""
    cur = await conn.execute(Q["expire_packages"], {"limit": limit, "now": now})
    return [
        ExpiredPackage(job_id, package_path, int(size))
        for job_id, package_path, size in await cur.fetchall()
    ]


async def prune_jobs_batch(conn: Connection, *, days: int, limit: int, now: datetime | None) -> int:
    """Delete the next batch of job rows finished more than `days` ago; how many."""
    cur = await conn.execute(Q["prune_jobs"], {"days": days, "now": now, "limit": limit})
    return cur.rowcount


async def prune_queue_batch(
    conn: Connection, *, hours: int, limit: int, now: datetime | None
) -> int:
    """Delete the next batch of procrastinate's finished queue rows; how many."""
    cur = await conn.execute(Q["prune_queue"], {"hours": hours, "now": now, "limit": limit})
    return cur.rowcount


async def referenced_paths(conn: Connection, paths: list[str]) -> set[str]:
    """Which of these storage paths a job row still points at (never swept)."""
    cur = await conn.execute(Q["referenced_paths"], {"paths": paths})
    return {row[0] for row in await cur.fetchall()}


async def active_jobs(conn: Connection, job_ids: list[UUID]) -> set[str]:
    """Which of these jobs may still be writing files (their scratch is kept)."""
    cur = await conn.execute(Q["active_jobs"], {"job_ids": job_ids})
    return {str(row[0]) for row in await cur.fetchall()}


async def count_expired_packages(conn: Connection, *, now: datetime | None) -> tuple[int, int]:
    """How many packages expiry would delete, and their bytes (the dry run)."""
    count, size = await _one(conn, "count_expired_packages", {"now": now})
    return int(count), int(size)


async def count_prunable_jobs(conn: Connection, *, days: int, now: datetime | None) -> int:
    """How many job rows pruning would delete (the dry run)."""
    return int((await _one(conn, "count_prunable_jobs", {"days": days, "now": now}))[0])


async def count_prunable_queue(conn: Connection, *, hours: int, now: datetime | None) -> int:
    """How many queue rows pruning would delete (the dry run)."""
    return int((await _one(conn, "count_prunable_queue", {"hours": hours, "now": now}))[0])


async def _one(conn: Connection, query: str, params: dict[str, Any]) -> tuple[Any, ...]:
    cur = await conn.execute(Q[query], params)
    row = await cur.fetchone()
    assert row is not None  # an aggregate always returns its row
    return tuple(row)
