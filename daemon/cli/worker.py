"""`exportd worker [--concurrency N] [--queue Q]`: the worker daemon."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from daemon.cli import stop
from daemon.config import Settings
from daemon.db.connect import database_url
from daemon.errors import ConfigError
from daemon.kinds.catalog import load_kinds


def add_command(commands: Any) -> None:
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


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    if args.concurrency is not None and args.concurrency < 1:
        raise ConfigError("--concurrency", "must be at least 1")
    # Loaded here, not at import: other commands (`exportd web`) never load
    # procrastinate's task code and the pipeline.
    from daemon.worker.process import run_worker

    with database_url(settings) as url:
        registry = load_kinds(settings, url)
        try:
            return asyncio.run(
                run_worker(settings, url, registry, concurrency=args.concurrency, queues=args.queue)
            )
        finally:
            stop.shutting_down()
