"""`exportd cleanup [--dry-run]`: the retention tasks, now, from the shell.

The same code the periodic task runs (daemon/maintenance/cleanup.py), once, printing
what it did — or, with --dry-run, what it would do, changing nothing.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from rich.table import Table

from daemon.cli.output import console
from daemon.config import Settings
from daemon.db.connect import aconnect, database_url
from daemon.maintenance.cleanup import Cleanup, CleanupReport
from daemon.storage.select import open_storage


def add_command(commands: Any) -> None:
    cleanup = commands.add_parser(
        "cleanup",
        help="run the retention tasks now",
        description="Expire packages, prune finished job and queue rows, remove orphan "
        "files — what the periodic task does — once.",
    )
    cleanup.add_argument(
        "--dry-run", action="store_true", help="list what would be done, change nothing"
    )
    cleanup.set_defaults(handler=cmd_cleanup)


async def _cleanup(settings: Settings, url: str, dry_run: bool) -> CleanupReport:
    async with aconnect(url) as conn:
        return await Cleanup(settings, open_storage(settings)).run(conn, dry_run=dry_run)


def cmd_cleanup(args: argparse.Namespace, settings: Settings) -> int:
    with database_url(settings) as url:
        report = asyncio.run(_cleanup(settings, url, args.dry_run))
    verb = "would" if report.dry_run else "did"
    table = Table("task", f"{verb} delete", title="exportd cleanup" + (" (dry run)" * args.dry_run))
    table.add_row("expired packages", str(report.packages_deleted))
    table.add_row(
        f"job rows finished > {settings.job_retention_days} days ago"
        if settings.job_retention_days
        else "job rows (retention off)",
        str(report.jobs_pruned),
    )
    table.add_row(
        f"queue rows finished > {settings.queue_retention_hours} h ago",
        str(report.queue_rows_pruned),
    )
    table.add_row("orphan files", str(report.orphans_removed))
    table.add_row("download rows left open > 24 h (closed)", str(report.downloads_closed))
    table.add_row("bytes", f"{report.bytes_freed:,}")
    console.print(table)
    if report.planned:
        items = Table("action", "what", title="items (up to 1000 per action)")
        for action, what in report.planned:
            items.add_row(action, what)
        console.print(items)
    if report.failures:
        console.print(f"{report.failures} file(s) could not be deleted (see the log)")
        return 1
    return 0
