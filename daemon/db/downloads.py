"""Data access for `exportd.downloads`: one row per download answered 200/206.

A row is written when a response starts and closed when it ends, so an
operator sees downloads in flight (`finished_at IS NULL`), aborted ones
(`completed = false`) and how many bytes each really sent. The job's
`download_count` counts completed downloads only — a response that delivered
the file's last byte — and responses completing within
`SESSION_SECONDS` of the previous completed download are the same download,
so a download resumed three times, or fetched in eight pieces by a
multi-connection client, counts once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection
from psycopg.rows import class_row

from daemon.db.queries import named_queries

Q = named_queries("downloads")
# A completed response that starts less than this long after the job's
# previous completed download is part of that download (see finish_download
# in sql/queries/downloads.sql).
SESSION_SECONDS = 60

Connection = AsyncConnection[Any]


@dataclass(frozen=True)
class Download:
    """A row of `exportd.downloads`."""

    download_id: int
    job_id: UUID
    subject: str | None
    range_header: str | None
    status_code: int
    bytes_sent: int | None  # None: a 302 to object storage
    started_at: datetime
    finished_at: datetime | None
    completed: bool


async def start_download(
    conn: Connection,
    job_id: UUID,
    *,
    subject: str | None,
    range_header: str | None,
    status_code: int,
    now: datetime | None = None,
) -> int:
    """Record a download whose response is starting; returns its id."""
    cur = await conn.execute(
        Q["start_download"],
        {
            "job_id": job_id,
            "subject": subject,
            # A Range header is client input: keep it, but bounded.
            "range_header": range_header[:1000] if range_header is not None else None,
            "status_code": status_code,
            "now": now,
        },
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def finish_download(
    conn: Connection,
    download_id: int,
    *,
    bytes_sent: int,
    completed: bool,
    now: datetime | None = None,
) -> None:
    """Close a download row; count it on the job when it reached the end."""
    await conn.execute(
        Q["finish_download"],
        {
            "download_id": download_id,
            "bytes_sent": bytes_sent,
            "completed": completed,
            "now": now,
            "session_seconds": SESSION_SECONDS,
        },
    )


async def close_stale_downloads(
    conn: Connection,
    *,
    max_open_seconds: float,
    limit: int,
    now: datetime | None = None,
) -> int:
    """Close the next batch of rows open longer than `max_open_seconds` (their
    web process died mid-response) as not completed; how many. One statement:
    on an autocommit connection, its own transaction."""
    cur = await conn.execute(
        Q["close_stale_downloads"],
        {"max_open_seconds": max_open_seconds, "limit": limit, "now": now},
    )
    return cur.rowcount


async def count_stale_downloads(
    conn: Connection, *, max_open_seconds: float, now: datetime | None = None
) -> int:
    """How many rows `close_stale_downloads` would close (the dry run)."""
    cur = await conn.execute(
        Q["count_stale_downloads"], {"max_open_seconds": max_open_seconds, "now": now}
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def downloads_of_job(conn: Connection, job_id: UUID) -> list[Download]:
    async with conn.cursor(row_factory=class_row(Download)) as cur:
        await cur.execute(Q["downloads_of_job"], {"job_id": job_id})
        return await cur.fetchall()
