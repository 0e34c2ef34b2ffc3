"""The `exportd` command (also `python -m daemon`).

Each subcommand is a small function taking the parsed arguments and the
settings. Errors exportd can explain (bad configuration, unreachable
database, refused migration) end the program with one line on stderr and a
non-zero status; tracebacks are for bugs only. SIGINT and SIGTERM stop any
command at any moment, stopping what it started (`daemon.cli.stop`): `up`,
`web` and `worker` then exit 0, other commands 128 + the signal's number.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points

from daemon import __version__
from daemon.cli import (
    cleanup,
    export,
    jobs,
    keys,
    kinds,
    migrate,
    stop,
    token,
    up,
    web,
    webhooks,
    worker,
)
from daemon.cli.output import EXIT_CONFIG, EXIT_FAILED, EXIT_OK
from daemon.config import Settings, load_settings
from daemon.errors import ConfigError, ExportdError
from daemon.logs import configure_logging

COMMANDS_GROUP = "exportd.commands"
# Commands that run until stopped: SIGINT/SIGTERM is their normal end, at any
# moment (startup included), with status 0.
DAEMONS = frozenset({"up", "web", "worker"})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="exportd",
        description="Postgres-native export job daemon.",
        epilog="Configuration comes from EXPORTD_* variables; see docs/operations.md.",
    )
    parser.add_argument("--version", action="version", version=f"exportd {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (migrate, token, keys, worker, export, jobs, kinds, webhooks, cleanup, web, up):
        group.add_command(commands)
    # Commands of other installed packages, found by entry point.
    for entry in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        entry.load()(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    previous = {signum: signal.getsignal(signum) for signum in stop.STOP_SIGNALS}
    stop.install()
    try:
        return _run(argv)
    finally:
        for signum, handler in previous.items():
            if handler is not None:
                signal.signal(signum, handler)


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        try:
            settings = load_settings()
        except ConfigError as exc:
            print(f"exportd: configuration error: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        configure_logging(settings.log_format)
        handler: Callable[[argparse.Namespace, Settings], int] = args.handler
        return handler(args, settings)
    except ConfigError as exc:
        print(f"exportd: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except ExportdError as exc:
        print(f"exportd: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt as exc:
        # Whatever was started has been stopped on the way out.
        if args.command in DAEMONS:
            return EXIT_OK  # how a daemon is meant to end, startup included
        signum = exc.signum if isinstance(exc, stop.Interrupted) else signal.SIGINT
        return 128 + signum
