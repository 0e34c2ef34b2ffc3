"""`exportd migrate [--down N] [--status]`: schema management."""

from __future__ import annotations

import argparse
from typing import Any

from daemon.config import Settings
from daemon.db.connect import connect, database_url
from daemon.db.migrations import Migrator
from daemon.db.urls import describe


def add_command(commands: Any) -> None:
    migrate = commands.add_parser(
        "migrate",
        help="apply, roll back or list schema migrations",
        description="Apply procrastinate's schema and exportd's migrations (default), "
        "roll back to a version, or list them.",
    )
    group = migrate.add_mutually_exclusive_group()
    group.add_argument("--down", type=int, metavar="N", help="roll back to version N (0 = all)")
    group.add_argument("--status", action="store_true", help="list migrations and their state")
    migrate.set_defaults(handler=cmd_migrate)


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    # Applying migrations is setting a database up: like `up`, it may create
    # the embedded server. Listing or rolling back needs one that exists.
    create = not args.status and args.down is None
    with database_url(settings, create=create) as url, connect(url, autocommit=True) as conn:
        migrator = Migrator(conn)
        if args.status:
            print(f"{'version':<8} {'name':<32} {'state':<8} applied at")
            for state in migrator.status():
                applied = (
                    state.applied_at.isoformat(timespec="seconds") if state.applied_at else "-"
                )
                print(f"{state.version:04d}     {state.name:<32} {state.state:<8} {applied}")
            pending_queue = migrator.pending_queue_migrations()
            print(f"procrastinate schema: {len(pending_queue)} pending migration(s)")
            return 0
        if args.down is not None:
            done = migrator.downgrade(args.down)
            verb = "rolled back"
        else:
            done = migrator.upgrade()
            verb = "applied"
        for label in done:
            print(f"{verb} {label}")
        if not done:
            print(f"nothing to do: {describe(url)} is up to date")
    return 0
