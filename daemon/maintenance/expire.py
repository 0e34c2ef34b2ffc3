"""Package expiry: packages past `package_expires_at` leave storage.

The row is marked first (committed) and the file or object deleted after: a download
that already opened the file finishes it, a new request sees the row and gets
410. A file that cannot be unlinked (permissions) is logged; its row no
longer points at it, so the orphan sweep of the next tick tries again — it
never blocks the other packages.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import TYPE_CHECKING

from daemon.db import maintenance
from daemon.db.connect import Connection
from daemon.db.maintenance import ExpiredPackage
from daemon.errors import ExportdError
from daemon.storage.backend import Storage, UnsafeLocation

if TYPE_CHECKING:
    # Only for annotations: cleanup.py imports this module to run it.
    from daemon.maintenance.cleanup import CleanupReport

# The logger of every retention task, as before they had modules of their own.
log = logging.getLogger("daemon.maintenance.cleanup")


async def expire_packages(
    conn: Connection,
    storage: Storage,
    report: CleanupReport,
    *,
    batch_size: int,
    now: datetime | None,
    max_batches: int | None,
) -> None:
    """Expire batch after batch until one comes back short (or `max_batches`
    of `report.batches` are used)."""
    while max_batches is None or report.batches < max_batches:
        packages = await maintenance.expire_packages_batch(conn, limit=batch_size, now=now)
        report.batches += 1
        # File system work in a thread: a worker's event loop keeps
        # running exports (and heartbeats) while a batch is unlinked.
        await asyncio.to_thread(_unlink_batch, storage, packages, report)
        if len(packages) < batch_size:
            return


def _unlink_batch(storage: Storage, packages: list[ExpiredPackage], report: CleanupReport) -> None:
    for package in packages:
        if _unlink_package(storage, package):
            report.packages_deleted += 1
            report.bytes_freed += package.size_bytes
        else:
            report.failures += 1


def _unlink_package(storage: Storage, package: ExpiredPackage) -> bool:
    """False only when the package could not be deleted; a path exportd
    never writes is refused and counts as done (it is not ours to delete)."""
    try:
        storage.delete(package.package_path)
    except UnsafeLocation:
        log.warning(
            "expired package path is not one exportd writes; not touched",
            extra={"job_id": str(package.job_id), "action": "cleanup.expire"},
        )
    except (OSError, ExportdError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else str(exc)
        log.warning(
            "cannot delete an expired package (%s); the orphan sweep retries it",
            reason,
            extra={"job_id": str(package.job_id), "action": "cleanup.expire"},
        )
        return False
    return True
