"""Row pruning: finished job rows after `EXPORTD_JOB_RETENTION_DAYS`, and
procrastinate's finished queue rows after `EXPORTD_QUEUE_RETENTION_HOURS`
(so the table the workers poll stays small; exportd.jobs keeps the history).

Batch after batch until one comes back short: each batch is one statement
and one transaction (daemon/db/maintenance.py), so a large backlog is worked
off without long locks, and `max_batches` lets the periodic task leave the
rest to its next tick.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING

from daemon.db import maintenance
from daemon.db.connect import Connection

if TYPE_CHECKING:
    # Only for annotations: cleanup.py imports this module to run it.
    from daemon.maintenance.cleanup import CleanupReport


async def prune_jobs(
    conn: Connection,
    report: CleanupReport,
    *,
    days: int,
    batch_size: int,
    now: datetime | None,
    max_batches: int | None,
) -> None:
    """Delete job rows (with their attempts and downloads) finished `days` ago."""

    async def batch() -> int:
        return await maintenance.prune_jobs_batch(conn, days=days, limit=batch_size, now=now)

    await in_batches(batch, report, "jobs_pruned", batch_size, max_batches)


async def prune_queue(
    conn: Connection,
    report: CleanupReport,
    *,
    hours: int,
    batch_size: int,
    now: datetime | None,
    max_batches: int | None,
) -> None:
    """Delete procrastinate's queue rows finished `hours` ago."""

    async def batch() -> int:
        return await maintenance.prune_queue_batch(conn, hours=hours, limit=batch_size, now=now)

    await in_batches(batch, report, "queue_rows_pruned", batch_size, max_batches)


async def in_batches(
    batch: Callable[[], Awaitable[int]],
    report: CleanupReport,
    figure: str,
    batch_size: int,
    max_batches: int | None,
) -> None:
    """Run `batch` until it changes fewer than `batch_size` rows (or after
    `max_batches`), adding each count to the report's `figure` as it goes (a
    failure keeps what was done). Every batched maintenance task runs here."""
    done = 0
    while max_batches is None or done < max_batches:
        deleted = await batch()
        done += 1
        report.batches += 1
        setattr(report, figure, getattr(report, figure) + deleted)
        if deleted < batch_size:
            return
