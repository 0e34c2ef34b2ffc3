"""`exportd webhooks ls|redeliver|health`: the webhook outbox from a shell.

`ls` lists events newest first, one line per endpoint with where its
delivery stands (`--failed`: only the endpoints that have not got it after
at least one attempt); `redeliver EVENT_ID` queues an event again to its
endpoints (same event id: a receiver that already has it can tell), with a
fresh retry window; `health` prints the `exportd.webhook_health` view.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any
from uuid import UUID

from rich.table import Column, Table

from daemon.cli.output import EXIT_FAILED, EXIT_OK, console
from daemon.config import Settings
from daemon.db import webhooks as store
from daemon.db.connect import aconnect, database_url
from daemon.webhooks.endpoints import parse_url

ID_WIDTH = 36
MAX_LIMIT = 1000


def add_command(commands: Any) -> None:
    hooks = commands.add_parser("webhooks", help="list, redeliver and check webhook events")
    actions = hooks.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = actions.add_parser("ls", help="webhook events, newest first, one line per endpoint")
    ls.add_argument(
        "--failed", action="store_true", help="only endpoints not reached after an attempt"
    )
    ls.add_argument("--limit", type=int, default=50)
    ls.set_defaults(handler=cmd_webhooks_ls)
    redeliver = actions.add_parser("redeliver", help="queue an event again to its endpoints")
    redeliver.add_argument("event_id", type=_event_id, metavar="EVENT_ID")
    redeliver.add_argument("--url", type=_url, default=None, help="only this endpoint")
    redeliver.set_defaults(handler=cmd_webhooks_redeliver)
    health = actions.add_parser("health", help="per endpoint: pending, delivered, failing")
    health.set_defaults(handler=cmd_webhooks_health)


def _event_id(text: str) -> UUID:
    try:
        return UUID(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not an event id (a UUID)") from None


def _url(text: str) -> str:
    try:
        return parse_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--url {exc}") from None


def _run(settings: Settings, coro_factory: Any) -> int:
    with database_url(settings) as url:
        result: int = asyncio.run(coro_factory(url))
        return result


def cmd_webhooks_ls(args: argparse.Namespace, settings: Settings) -> int:
    async def go(url: str) -> int:
        async with aconnect(url) as conn:
            rows = await store.list_deliveries(
                conn, failed=args.failed, limit=max(1, min(args.limit, MAX_LIMIT))
            )
        table = Table(
            Column("event id", no_wrap=True, min_width=ID_WIDTH),
            "type",
            Column("job id", no_wrap=True, min_width=ID_WIDTH),
            "created",
            "endpoint",
            "state",
            "attempts",
            "last status",
            "last error",
        )
        for row in rows:
            table.add_row(
                str(row.event_id),
                row.type,
                str(row.job_id),
                row.created_at.isoformat(timespec="seconds"),
                row.url or "-",
                row.state,
                str(row.attempts),
                str(row.last_status) if row.last_status is not None else "-",
                row.last_error or "",
            )
        console.print(table)
        return EXIT_OK

    return _run(settings, go)


def cmd_webhooks_redeliver(args: argparse.Namespace, settings: Settings) -> int:
    async def go(url: str) -> int:
        async with aconnect(url) as conn:
            queued = await store.redeliver(conn, args.event_id, url=args.url)
        if queued is None:
            console.print(f"no webhook event {args.event_id}")
            return EXIT_FAILED
        if queued == 0:
            console.print(
                f"event {args.event_id}: nothing queued (no endpoint wants it now, "
                "or its deliveries are already queued)"
            )
            return EXIT_FAILED
        console.print(
            f"event {args.event_id}: {queued} deliver{'y' if queued == 1 else 'ies'} queued"
        )
        return EXIT_OK

    return _run(settings, go)


def cmd_webhooks_health(args: argparse.Namespace, settings: Settings) -> int:
    async def go(url: str) -> int:
        async with aconnect(url) as conn:
            rows = await store.health(conn)
        table = Table(
            "endpoint", "configured", "pending", "delivered", "failing", "oldest", "last error"
        )
        for row in rows:
            oldest = row.oldest_undelivered_seconds
            table.add_row(
                row.url,
                "yes" if row.configured else "no",
                str(row.pending),
                str(row.delivered),
                str(row.failing),
                f"{oldest:.0f} s" if oldest is not None else "-",
                row.last_error or "",
            )
        console.print(table)
        return EXIT_OK

    return _run(settings, go)
