"""The `exportd` command (also `python -m daemon`).

Each subcommand is a small function taking the parsed arguments and the
settings. Errors exportd can explain (bad configuration, unreachable
database, refused migration) end the program with one line on stderr and a
non-zero status; tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points

from daemon import __version__
from daemon.catalog import load_kinds
from daemon.cli_cleanup import add_command as add_cleanup_command
from daemon.cli_jobs import add_commands
from daemon.config import Settings, load_settings
from daemon.database import connect, database_url, describe
from daemon.errors import ConfigError, ExportdError
from daemon.logs import configure_logging
from daemon.migrations import Migrator
from daemon.tokens import mint_token
from daemon.worker import run_worker

COMMANDS_GROUP = "exportd.commands"
EXIT_ERROR = 1
EXIT_CONFIG = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="exportd",
        description="Postgres-native export job daemon.",
        epilog="Configuration comes from EXPORTD_* variables; see docs/operations.md.",
    )
    parser.add_argument("--version", action="version", version=f"exportd {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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

    token = commands.add_parser(
        "token",
        help="mint a development token (HS256, with the configured secret)",
        description="Print a signed JWT for SUB, for curl sessions and tests.",
    )
    token.add_argument("--sub", required=True, help="the subject (owner id)")
    token.add_argument("--admin", action="store_true", help="add the admin role claim")
    token.add_argument(
        "--ttl", type=int, default=3600, metavar="SECONDS", help="lifetime (default 3600)"
    )
    token.set_defaults(handler=cmd_token)

    worker = commands.add_parser(
        "worker",
        help="run the worker daemon (systemd Type=notify)",
        description="Execute export jobs until SIGTERM/SIGINT; running exports may finish "
        "for EXPORTD_SHUTDOWN_GRACE_SECONDS.",
    )
    worker.add_argument("--concurrency", type=int, default=None, metavar="N")
    worker.add_argument(
        "--queue", action="append", default=None, metavar="Q", help="only these queues"
    )
    worker.set_defaults(handler=cmd_worker)

    add_commands(commands)
    add_cleanup_command(commands)
    # Commands of other packages (the HTTP API adds `web` and `up`): found by
    # entry point, so this package never imports them.
    for entry in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        entry.load()(commands)
    return parser


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    with database_url(settings) as url, connect(url, autocommit=True) as conn:
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


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    if args.concurrency is not None and args.concurrency < 1:
        raise ConfigError("--concurrency", "must be at least 1")
    with database_url(settings) as url:
        registry = load_kinds(settings, url)
        return asyncio.run(
            run_worker(settings, url, registry, concurrency=args.concurrency, queues=args.queue)
        )


def cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    try:
        print(mint_token(settings, subject=args.sub, admin=args.admin, ttl_seconds=args.ttl))
    except ValueError as exc:
        print(f"exportd token: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"exportd: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(settings.log_format)
    handler: Callable[[argparse.Namespace, Settings], int] = args.handler
    try:
        return handler(args, settings)
    except ConfigError as exc:
        print(f"exportd: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except ExportdError as exc:
        print(f"exportd: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
