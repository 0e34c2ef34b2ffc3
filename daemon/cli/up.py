"""`exportd up`: everything on one host, for a first run.

Starts the embedded PostgreSQL server when no database is configured,
applies migrations, sets up the demo exports (without EXPORTD_EXPORTS_FILE),
and runs the API and a worker in one process; prints a banner with a token,
pasteable curl commands and a one-click link to the web page once both are
ready.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import shlex
import socket
from pathlib import Path
from typing import Any

from daemon import __version__
from daemon.cli import stop
from daemon.cli.serve import listen, serve_with_worker, server
from daemon.config import Settings
from daemon.db.connect import connect, database_url
from daemon.db.migrations import Migrator
from daemon.db.urls import describe
from daemon.kinds.catalog import load_kinds
from daemon.kinds.demo import install_demo
from daemon.tokens import ensure_link_secret, ensure_secret, mint_token


def add_command(commands: Any) -> None:
    up = commands.add_parser(
        "up",
        help="run everything on this host (embedded Postgres unless EXPORTD_DATABASE_URL is set)",
        description="Start the embedded PostgreSQL server when no database is configured, "
        "apply migrations, set up the demo exports (without EXPORTD_EXPORTS_FILE), and run "
        "the API and a worker in one process until interrupted.",
    )
    up.set_defaults(handler=cmd_up)


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    # The port first: when it is taken, say so before anything is started.
    sock = listen(settings.host, settings.port)
    with sock:
        return _up(settings, sock)


def _up(settings: Settings, sock: socket.socket) -> int:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.jwt_public_key_file is None:
        ensure_secret(settings)
    ensure_link_secret(settings)
    user = getpass.getuser() or "dev"
    # `up` is the command that may create the embedded server.
    with database_url(settings, create=True) as url:
        with connect(url, autocommit=True) as conn:
            for label in Migrator(conn).upgrade():
                print(f"applied {label}")
            if settings.exports_file is None:
                demo = install_demo(conn, settings, user)
                print(f"demo data: demo.orders; demo exports: {demo}")
        registry = load_kinds(settings, url)
        srv = server(settings, url, registry)
        base = f"http://{settings.host}:{settings.port}"

        def banner() -> None:
            """Printed once the API listens and the worker runs: pasteable at once."""
            print(f"exportd {__version__} is up: {base} ({describe(url)})")
            print(f"  kinds:       {', '.join(registry.names()) or '(none configured)'}")
            print(f"  inspect it:  psql {shlex.quote(url)}")
            if settings.jwt_public_key_file is None:
                token = mint_token(settings, subject=user, ttl_seconds=7 * 24 * 3600)
                print(f"  a token for {user!r} (7 days): {token}")
                print(f'  export TOKEN="{token}"')
                print(_demo_curl(base) if "orders" in registry else "")
                # The token rides in the fragment, which a browser never sends:
                # no server log or proxy sees it, and the page drops it at once.
                print(f"  or in a browser (one click signs you in): {base}/#token={token}")
            data_env = (
                ""
                if settings.data_dir == Path(".exportd")
                else f"EXPORTD_DATA_DIR={shlex.quote(str(settings.data_dir))} "
            )
            if "orders" in registry:
                print(
                    f"  or from the shell: {data_env}.venv/bin/exportd export orders "
                    "--wait --output orders.tar.gz"
                )
            print("Press Ctrl-C to stop.", flush=True)

        try:
            code = asyncio.run(
                serve_with_worker(settings, url, registry, srv, sock, on_ready=banner)
            )
        finally:
            stop.shutting_down()
    print("stopped")
    return code


def _demo_curl(base: str) -> str:
    return (
        "  create a demo export:\n"
        f'    curl -s -X POST {base}/api/v1/jobs -H "Authorization: Bearer $TOKEN" '
        "-H 'Content-Type: application/json' "
        '-d \'{"kind": "orders", "params": {"since": "2026-01-01"}}\'\n'
        "  then download it (use the job_id it printed):\n"
        f'    curl -OJ {base}/api/v1/jobs/JOB_ID/download -H "Authorization: Bearer $TOKEN"'
    )
