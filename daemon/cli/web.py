"""`exportd web`: serve the HTTP API under uvicorn until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
from typing import Any

from daemon.cli.serve import listen, run_web
from daemon.config import Settings
from daemon.db.connect import database_url
from daemon.errors import ConfigError
from daemon.kinds.catalog import load_kinds


def add_command(commands: Any) -> None:
    web = commands.add_parser(
        "web",
        help="serve the HTTP API under uvicorn",
        description="Serve the HTTP API on EXPORTD_HOST:EXPORTD_PORT (or --host/--port) "
        "until SIGTERM/SIGINT.",
    )
    web.add_argument("--host", default=None)
    web.add_argument("--port", type=int, default=None)
    web.add_argument("--workers", type=int, default=1, metavar="N", help="uvicorn processes")
    web.set_defaults(handler=cmd_web)


def cmd_web(args: argparse.Namespace, settings: Settings) -> int:
    if args.workers < 1:
        raise ConfigError("--workers", "must be at least 1")
    if args.port is not None and not 1 <= args.port <= 65535:
        raise ConfigError("--port", "must be 1-65535")
    # The port first: when it is taken, say so before anything is started.
    sock = listen(args.host or settings.host, args.port or settings.port)
    with sock, database_url(settings) as url:
        registry = load_kinds(settings, url)
        return run_web(settings, url, registry, sock, workers=args.workers)
