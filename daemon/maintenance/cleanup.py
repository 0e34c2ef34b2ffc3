"""Retention: expire packages, prune finished job rows and queue rows, sweep
orphan files. Run by a procrastinate periodic task (so one worker per tick)
and by `exportd cleanup`.

This module runs the tasks in order and accounts for them (the report, the
totals behind the `exportd_cleanup_*` counters, the dry-run plan); each task
is a module of its own:
`expire` (packages), `prune` (rows), `checkpoints` (the checkpoints of
ended runs), `sweep` (orphan files), `downloads`
(download rows a dead web process left open). Every database
step works in batches of `batch_size` rows, one statement and one transaction
per batch, skipping rows another cleanup holds, so a backlog of a million
rows neither holds locks for long nor loads them into memory, and two
cleanups running at once share the work (daemon/db/maintenance.py).
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from daemon.config import Settings
from daemon.db import jobs as job_store
from daemon.db import maintenance
from daemon.db.connect import Connection
from daemon.db.metrics import CLEANUP_TOTALS, add_cleanup_totals
from daemon.maintenance import checkpoints, expire, prune, sweep
from daemon.maintenance import downloads as open_downloads
from daemon.maintenance.checkpoints import EndRun
from daemon.storage.backend import Orphan, Storage

log = logging.getLogger(__name__)

# Upper bound on what a dry run lists item by item (it counts everything).
DRY_RUN_LIST = 1000


@dataclass
class CleanupReport:
    """What one cleanup did (or, dry, would do)."""

    packages_deleted: int = 0
    bytes_freed: int = 0
    jobs_pruned: int = 0
    queue_rows_pruned: int = 0
    orphans_removed: int = 0
    downloads_closed: int = 0  # rows left open by a dead web process
    failures: int = 0
    batches: int = 0
    seconds: float = 0.0
    dry_run: bool = False
    # Dry run: (action, subject) of up to DRY_RUN_LIST items per action.
    planned: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        return (
            f"cleanup {verb}: {self.packages_deleted} expired packages, "
            f"{self.jobs_pruned} job rows, {self.queue_rows_pruned} queue rows, "
            f"{self.orphans_removed} orphans, {self.downloads_closed} stale downloads closed; "
            f"{self.bytes_freed} bytes; "
            f"{self.failures} failures; {self.batches} batches in {self.seconds:.2f} s"
        )


class Cleanup:
    """The retention tasks against one database and one storage root."""

    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        *,
        batch_size: int | None = None,
        end_run: EndRun | None = None,
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.batch_size = batch_size or settings.cleanup_batch_size
        # A worker's: rolls back the kept steps of a run that ended without one.
        self.end_run = end_run

    async def run(
        self,
        conn: Connection,
        *,
        now: datetime | None = None,
        dry_run: bool = False,
        max_batches: int | None = None,
    ) -> CleanupReport:
        """Every task once, in order. `conn` must be in autocommit mode.

        `max_batches` stops each database task after that many batches (the
        periodic task leaves the rest to the next tick; tests simulate a crash
        mid-way with it).
        """
        started = time.monotonic()
        report = CleanupReport(dry_run=dry_run)
        if dry_run:
            await self._plan(conn, report, now)
        else:
            try:
                await self._delete(conn, report, now=now, max_batches=max_batches)
            except Exception:
                # Count what was deleted before the failure, if the database
                # still answers; the failure itself is what the caller sees.
                with contextlib.suppress(Exception):
                    await self._count(conn, report)
                raise
            await self._count(conn, report)
        report.seconds = time.monotonic() - started
        log.info(report.summary(), extra={"action": "cleanup", **_figures(report)})
        return report

    async def _delete(
        self,
        conn: Connection,
        report: CleanupReport,
        *,
        now: datetime | None,
        max_batches: int | None,
    ) -> None:
        """The tasks in order: packages, job rows, queue rows, orphans."""
        await self.expire_packages(conn, report, now=now, max_batches=max_batches)
        if self.settings.job_retention_days > 0:
            await prune.prune_jobs(
                conn,
                report,
                days=self.settings.job_retention_days,
                batch_size=self.batch_size,
                now=now,
                max_batches=max_batches,
            )
        await prune.prune_queue(
            conn,
            report,
            hours=self.settings.queue_retention_hours,
            batch_size=self.batch_size,
            now=now,
            max_batches=max_batches,
        )
        report.orphans_removed += await checkpoints.sweep_checkpoints(
            conn, self.storage, end_run=self.end_run
        )
        await self.sweep_orphans(conn, report, now=now)
        await open_downloads.close_stale_downloads(
            conn, report, batch_size=self.batch_size, now=now, max_batches=max_batches
        )

    async def expire_packages(
        self,
        conn: Connection,
        report: CleanupReport,
        *,
        now: datetime | None = None,
        max_batches: int | None = None,
    ) -> None:
        """Delete expired packages (see daemon.maintenance.expire)."""
        await expire.expire_packages(
            conn,
            self.storage,
            report,
            batch_size=self.batch_size,
            now=now,
            max_batches=max_batches,
        )

    async def sweep_orphans(
        self, conn: Connection, report: CleanupReport, *, now: datetime | None = None
    ) -> list[Orphan]:
        """Remove (dry run: list) what no row references, past the grace period."""
        return await sweep.sweep_orphans(
            conn,
            self.storage,
            report,
            grace_seconds=self.settings.orphan_grace_seconds,
            batch_size=self.batch_size,
            now=now,
        )

    async def _plan(self, conn: Connection, report: CleanupReport, now: datetime | None) -> None:
        """The dry run: counts of what each task would delete, and a list of
        up to DRY_RUN_LIST items per task for an operator to check first."""
        count, size = await maintenance.count_expired_packages(conn, now=now)
        report.packages_deleted, report.bytes_freed = count, size
        for package in await job_store.packages_due_for_expiry(conn, limit=DRY_RUN_LIST, now=now):
            report.planned.append(("expire package", f"job {package.job_id}"))
        if self.settings.job_retention_days > 0:
            report.jobs_pruned = await maintenance.count_prunable_jobs(
                conn, days=self.settings.job_retention_days, now=now
            )
        report.queue_rows_pruned = await maintenance.count_prunable_queue(
            conn, hours=self.settings.queue_retention_hours, now=now
        )
        orphans = await self.sweep_orphans(conn, report, now=now)
        report.orphans_removed = len(orphans)
        report.bytes_freed += sum(o.size for o in orphans)
        report.planned.extend(("remove orphan", o.relative) for o in orphans[:DRY_RUN_LIST])
        report.downloads_closed = await open_downloads.count_stale_downloads(conn, now=now)

    @staticmethod
    async def _count(conn: Connection, report: CleanupReport) -> None:
        """Add this run to the totals in PostgreSQL (one statement): the worker
        that ran it serves no /metrics, any API process reports them."""
        figures = {
            item.name: int(getattr(report, item.name))
            for item in fields(report)
            if item.name in CLEANUP_TOTALS
        }
        await add_cleanup_totals(conn, {**figures, "runs": 1})


def _figures(report: CleanupReport) -> dict[str, Any]:
    return {f.name: getattr(report, f.name) for f in fields(report) if f.name != "planned"}
