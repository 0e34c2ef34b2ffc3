"""Retention: expire packages, prune finished job rows and queue rows, sweep
orphan files. Run by a procrastinate periodic task (so one worker per tick)
and by `exportd cleanup`.

Every database step works in batches of `batch_size` rows, one statement
(and one transaction) per batch with `FOR UPDATE SKIP LOCKED`, so a backlog
of a million rows neither holds locks for long nor loads them into memory,
and two cleanups running at once share the work. Statements are in
`sql/queries/retention.sql`.

Package expiry marks the row first (committed) and unlinks the file after:
a download that already opened the file finishes it, a new request sees the
row and gets 410. A file that cannot be unlinked (permissions) is logged; its
row no longer points at it, so the orphan sweep of the next tick tries again
— it never blocks the other packages.

The orphan sweep removes what no row references and is older than the grace
period: a package whose job row is gone or never committed, a temp file or
work directory left by a crash. It walks the storage root without following
symbolic links (a symlink found there is removed as a link; its target is
never touched) and keeps anything of a job that may still be running.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import stat
import time
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from prometheus_client import Counter
from psycopg import AsyncConnection

from daemon.config import Settings
from daemon.db import jobs as job_store
from daemon.db.queries import named_queries
from daemon.storage.local import TMP_DIR, WORK_DIR, PackageStorage, UnsafePath

log = logging.getLogger(__name__)

Q = named_queries("retention")
Connection = AsyncConnection[Any]
# Upper bound on what a dry run lists item by item (it counts everything).
DRY_RUN_LIST = 1000

CLEANUP_COUNTERS = {
    name: Counter(f"exportd_cleanup_{name}", help_text)
    for name, help_text in (
        ("packages_deleted", "Expired packages deleted"),
        ("bytes_freed", "Bytes of expired packages and orphans deleted"),
        ("jobs_pruned", "Finished job rows deleted by retention"),
        ("queue_rows_pruned", "Finished procrastinate queue rows deleted"),
        ("orphans_removed", "Files and directories in storage no row referenced"),
        ("failures", "Files retention could not delete (retried next tick)"),
        ("runs", "Cleanup runs"),
    )
}


@dataclass
class CleanupReport:
    """What one cleanup did (or, dry, would do)."""

    packages_deleted: int = 0
    bytes_freed: int = 0
    jobs_pruned: int = 0
    queue_rows_pruned: int = 0
    orphans_removed: int = 0
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
            f"{self.orphans_removed} orphans; {self.bytes_freed} bytes; "
            f"{self.failures} failures; {self.batches} batches in {self.seconds:.2f} s"
        )


@dataclass
class _Orphan:
    path: Path
    relative: str
    size: int
    is_dir: bool


class Cleanup:
    """The retention tasks against one database and one storage root."""

    def __init__(
        self,
        settings: Settings,
        storage: PackageStorage,
        *,
        batch_size: int | None = None,
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.batch_size = batch_size or settings.cleanup_batch_size

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
            await self.expire_packages(conn, report, now=now, max_batches=max_batches)
            if self.settings.job_retention_days > 0:
                await self._batches(
                    conn,
                    report,
                    "prune_jobs",
                    {"days": self.settings.job_retention_days, "now": now},
                    "jobs_pruned",
                    max_batches,
                )
            await self._batches(
                conn,
                report,
                "prune_queue",
                {"hours": self.settings.queue_retention_hours, "now": now},
                "queue_rows_pruned",
                max_batches,
            )
            await self.sweep_orphans(conn, report, now=now)
        report.seconds = time.monotonic() - started
        if not dry_run:
            self._count(report)
        log.info(report.summary(), extra={"action": "cleanup", **_figures(report)})
        return report

    # -- package expiry ----------------------------------------------------------

    async def expire_packages(
        self,
        conn: Connection,
        report: CleanupReport,
        *,
        now: datetime | None = None,
        max_batches: int | None = None,
    ) -> None:
        while max_batches is None or report.batches < max_batches:
            cur = await conn.execute(Q["expire_packages"], {"limit": self.batch_size, "now": now})
            rows = await cur.fetchall()  # committed: autocommit
            report.batches += 1
            # File system work in a thread: a worker's event loop keeps
            # running exports (and heartbeats) while a batch is unlinked.
            await asyncio.to_thread(self._unlink_batch, rows, report)
            if len(rows) < self.batch_size:
                return

    def _unlink_batch(self, rows: list[tuple[Any, ...]], report: CleanupReport) -> None:
        for job_id, relative, size in rows:
            if self._unlink_package(job_id, relative):
                report.packages_deleted += 1
                report.bytes_freed += int(size)
            else:
                report.failures += 1

    def _unlink_package(self, job_id: UUID, relative: str) -> bool:
        try:
            path = self.storage.resolve(relative)
            path.unlink()
        except FileNotFoundError:
            pass  # already gone: the goal is reached
        except UnsafePath:
            log.warning(
                "expired package path leaves the storage root; not touched",
                extra={"job_id": str(job_id), "action": "cleanup.expire"},
            )
        except OSError as exc:
            log.warning(
                "cannot delete an expired package (%s); the orphan sweep retries it",
                exc.strerror,
                extra={"job_id": str(job_id), "action": "cleanup.expire"},
            )
            return False
        else:
            _remove_empty_parents(path.parent, self.storage.root)
        return True

    # -- row pruning ---------------------------------------------------------------

    async def _batches(
        self,
        conn: Connection,
        report: CleanupReport,
        query: str,
        params: dict[str, Any],
        figure: str,
        max_batches: int | None,
    ) -> None:
        done = 0
        while max_batches is None or done < max_batches:
            cur = await conn.execute(Q[query], {**params, "limit": self.batch_size})
            done += 1
            report.batches += 1
            setattr(report, figure, getattr(report, figure) + cur.rowcount)
            if cur.rowcount < self.batch_size:
                return

    # -- orphan sweep ----------------------------------------------------------------

    async def sweep_orphans(
        self, conn: Connection, report: CleanupReport, *, now: datetime | None = None
    ) -> list[_Orphan]:
        """Remove (dry run: list) what no row references, past the grace period."""
        # The walk (an lstat per file: seconds for 100 K packages) and the
        # removals run in a thread, off the event loop that runs exports.
        found = await asyncio.to_thread(self._old_entries, now)
        orphans = await self._unreferenced(conn, found)
        if report.dry_run:
            return orphans
        await asyncio.to_thread(self._remove_orphans, orphans, report)
        return orphans

    def _remove_orphans(self, orphans: list[_Orphan], report: CleanupReport) -> None:
        for orphan in orphans:
            if _remove(orphan):
                report.orphans_removed += 1
                report.bytes_freed += orphan.size
                if not orphan.is_dir:
                    _remove_empty_parents(orphan.path.parent, self.storage.root)
            else:
                report.failures += 1

    def _old_entries(self, now: datetime | None) -> list[_Orphan]:
        """Entries of the storage root older than the grace period (lstat, no following)."""
        root = self.storage.root
        if not root.is_dir():
            return []
        cutoff = (now or datetime.now(UTC)).timestamp() - self.settings.orphan_grace_seconds
        entries: list[_Orphan] = []
        for top in _scandir(root):
            if top.name == WORK_DIR:
                # Work directories as a whole, by the job id their name starts with.
                entries.extend(
                    self._entry(Path(e.path), root, cutoff, is_dir=e.is_dir(follow_symlinks=False))
                    for e in _scandir(Path(top.path))
                )
                continue
            if top.is_symlink() or not top.is_dir(follow_symlinks=False):
                entries.append(self._entry(Path(top.path), root, cutoff, is_dir=False))
                continue
            for dirpath, dirnames, filenames in os.walk(top.path, followlinks=False):
                # os.walk lists symlinks to directories in dirnames; treat them as files.
                links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
                dirnames[:] = [d for d in dirnames if d not in links]
                for name in filenames + links:
                    entries.append(self._entry(Path(dirpath, name), root, cutoff, is_dir=False))
        return [e for e in entries if e.size >= 0]

    @staticmethod
    def _entry(path: Path, root: Path, cutoff: float, *, is_dir: bool) -> _Orphan:
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return _Orphan(path, "", -1, is_dir)
        if info.st_mtime > cutoff:
            return _Orphan(path, "", -1, is_dir)  # too young: marked to be dropped
        size = _tree_size(path) if is_dir else (info.st_size if stat.S_ISREG(info.st_mode) else 0)
        return _Orphan(path, path.relative_to(root).as_posix(), size, is_dir)

    async def _unreferenced(self, conn: Connection, entries: list[_Orphan]) -> list[_Orphan]:
        referenced: set[str] = set()
        active: set[str] = set()
        for start in range(0, len(entries), self.batch_size):
            chunk = entries[start : start + self.batch_size]
            cur = await conn.execute(Q["referenced_paths"], {"paths": [e.relative for e in chunk]})
            referenced.update(row[0] for row in await cur.fetchall())
            job_ids = [j for j in (_job_id_of(e.relative) for e in chunk) if j is not None]
            if job_ids:
                cur = await conn.execute(Q["active_jobs"], {"job_ids": job_ids})
                active.update(str(row[0]) for row in await cur.fetchall())
        return [
            e
            for e in entries
            if e.relative not in referenced and str(_job_id_of(e.relative)) not in active
        ]

    # -- dry run ---------------------------------------------------------------------

    async def _plan(self, conn: Connection, report: CleanupReport, now: datetime | None) -> None:
        cur = await conn.execute(Q["count_expired_packages"], {"now": now})
        count, size = await _one(cur)
        report.packages_deleted, report.bytes_freed = int(count), int(size)
        for package in await job_store.packages_due_for_expiry(conn, limit=DRY_RUN_LIST, now=now):
            report.planned.append(("expire package", f"job {package.job_id}"))
        if self.settings.job_retention_days > 0:
            cur = await conn.execute(
                Q["count_prunable_jobs"], {"days": self.settings.job_retention_days, "now": now}
            )
            report.jobs_pruned = int((await _one(cur))[0])
        cur = await conn.execute(
            Q["count_prunable_queue"], {"hours": self.settings.queue_retention_hours, "now": now}
        )
        report.queue_rows_pruned = int((await _one(cur))[0])
        orphans = await self.sweep_orphans(conn, report, now=now)
        report.orphans_removed = len(orphans)
        report.bytes_freed += sum(o.size for o in orphans)
        report.planned.extend(("remove orphan", o.relative) for o in orphans[:DRY_RUN_LIST])

    @staticmethod
    def _count(report: CleanupReport) -> None:
        CLEANUP_COUNTERS["runs"].inc()
        for item in fields(report):
            if item.name in CLEANUP_COUNTERS:
                CLEANUP_COUNTERS[item.name].inc(getattr(report, item.name))


async def _one(cur: Any) -> tuple[Any, ...]:
    row = await cur.fetchone()
    assert row is not None
    return tuple(row)


def _figures(report: CleanupReport) -> dict[str, Any]:
    return {f.name: getattr(report, f.name) for f in fields(report) if f.name != "planned"}


def _scandir(path: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as entries:
            return list(entries)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _job_id_of(relative: str) -> UUID | None:
    """The job a storage entry belongs to: `<aa>/<job_id>/…`, `.tmp/<job_id>-…`,
    `.work/<job_id>-…`."""
    parts = relative.split("/")
    candidates = [parts[1]] if len(parts) >= 2 and parts[0] not in (TMP_DIR, WORK_DIR) else []
    if len(parts) >= 2 and parts[0] in (TMP_DIR, WORK_DIR):
        candidates.append(parts[1][:36])
    for text in candidates:
        try:
            return UUID(text)
        except ValueError:
            continue
    return None


def _tree_size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path, followlinks=False):
        for name in files:
            try:
                info = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            if stat.S_ISREG(info.st_mode):
                total += info.st_size
    return total


def _remove(orphan: _Orphan) -> bool:
    try:
        if orphan.is_dir:
            shutil.rmtree(orphan.path)  # does not follow symlinks inside
        else:
            orphan.path.unlink()  # a symlink is removed as a link
    except FileNotFoundError:
        return True
    except OSError as exc:
        log.warning(
            "cannot remove an orphan in storage (%s)",
            exc.strerror,
            extra={"action": "cleanup.orphan", "path": orphan.relative},
        )
        return False
    return True


def _remove_empty_parents(directory: Path, root: Path) -> None:
    """Drop the `<aa>/<job_id>/` directories a deletion left empty."""
    while directory != root and root in directory.parents:
        if directory.name in (TMP_DIR, WORK_DIR):
            return
        try:
            directory.rmdir()
        except OSError:
            return
        directory = directory.parent
