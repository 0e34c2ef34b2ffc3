"""The orphan sweep: remove what no row references, past the grace period.

An orphan is a package whose job row is gone or never committed, a package
expiry could not delete, a temp file, work directory or unfinished multipart
upload left by a crash. The backend lists what is old (`Storage.old_entries`:
a walk that follows no symlink, or a paginated listing of the bucket prefix);
here anything a row references or a job that may still be running owns is
kept. The grace period covers a package being published: it exists a moment
before the row that references it commits.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import TYPE_CHECKING

from daemon.db import maintenance
from daemon.db.connect import Connection
from daemon.storage.backend import Orphan, Storage
from daemon.storage.layout import is_checkpoint, job_id_of

if TYPE_CHECKING:
    # Only for annotations: cleanup.py imports this module to run it.
    from daemon.maintenance.cleanup import CleanupReport


async def sweep_orphans(
    conn: Connection,
    storage: Storage,
    report: CleanupReport,
    *,
    grace_seconds: float,
    batch_size: int,
    now: datetime | None,
) -> list[Orphan]:
    """Remove (dry run: only list) the orphans; returns them either way."""
    # The walk or listing (an lstat per file, a request per 1,000 objects) and
    # the removals run in a thread, off the event loop that runs exports.
    found = await asyncio.to_thread(storage.old_entries, grace_seconds, now)
    orphans = await _unreferenced(conn, found, batch_size)
    if report.dry_run:
        return orphans
    removed, freed, failures = await asyncio.to_thread(storage.remove_orphans, orphans)
    report.orphans_removed += removed
    report.bytes_freed += freed
    report.failures += failures
    return orphans


async def _unreferenced(conn: Connection, entries: list[Orphan], batch_size: int) -> list[Orphan]:
    """The entries no row points at and no possibly running job owns."""
    referenced: set[str] = set()
    active: set[str] = set()
    for start in range(0, len(entries), batch_size):
        chunk = entries[start : start + batch_size]
        referenced |= await maintenance.referenced_paths(conn, [e.relative for e in chunk])
        job_ids = [j for j in (job_id_of(e.relative) for e in chunk) if j is not None]
        if job_ids:
            active |= await maintenance.active_jobs(conn, job_ids)
    return [
        e
        for e in entries
        if e.relative not in referenced
        and str(job_id_of(e.relative)) not in active
        and not is_checkpoint(e.relative)  # the checkpoint sweep's: it knows runs
    ]
