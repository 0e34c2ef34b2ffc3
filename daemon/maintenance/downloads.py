"""Download rows left open: close what no process will ever close.

`exportd web` writes a row of `exportd.downloads` when a response starts and
closes it when the response ends, however it ends — unless the process
itself dies (SIGKILL, OOM, host loss): then `finished_at` stays NULL for
ever and the row reads as a download in flight. This periodic piece of the
cleanup closes rows open longer than `MAX_OPEN` as not completed (bytes_sent
as it was; nothing counted on the job).

A row carries no sign of life while its response streams (it is written at
the start and at the end only), so the bound is generous: a day. A response
that really does stream longer is closed too, and when it ends its own
update writes the real figures over these (daemon/db/downloads.py).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from daemon.db import downloads
from daemon.db.connect import Connection
from daemon.maintenance.prune import in_batches

if TYPE_CHECKING:
    # Only for annotations: cleanup.py imports this module to run it.
    from daemon.maintenance.cleanup import CleanupReport

# A download row still open this long after its response started belongs to
# a web process that died.
MAX_OPEN = timedelta(hours=24)


async def close_stale_downloads(
    conn: Connection,
    report: CleanupReport,
    *,
    batch_size: int,
    now: datetime | None,
    max_batches: int | None,
) -> None:
    """Close open rows older than MAX_OPEN, batch after batch until one comes
    back short (or after `max_batches`), counting them in the report."""

    async def batch() -> int:
        return await downloads.close_stale_downloads(
            conn, max_open_seconds=MAX_OPEN.total_seconds(), limit=batch_size, now=now
        )

    await in_batches(batch, report, "downloads_closed", batch_size, max_batches)


async def count_stale_downloads(conn: Connection, *, now: datetime | None) -> int:
    """The dry run: how many rows `close_stale_downloads` would close."""
    return await downloads.count_stale_downloads(
        conn, max_open_seconds=MAX_OPEN.total_seconds(), now=now
    )
