"""`exportd keys create|ls|revoke`: API keys for machine callers, from a shell.

The same rules as /api/v1/admin/keys (both go through `daemon.api_keys`).
`create` prints the key alone on stdout — `KEY=$(exportd keys create --owner
billing)` keeps it — and what was made on stderr; it is the only time the
key is shown: the database keeps its hash.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from rich.markup import escape
from rich.table import Column, Table

from daemon import api_keys
from daemon.cli.output import EXIT_OK, console
from daemon.config import Settings
from daemon.db import keys as key_store
from daemon.db.connect import aconnect, database_url
from daemon.db.keys import ApiKey


def add_command(commands: Any) -> None:
    keys = commands.add_parser("keys", help="create, list or revoke API keys")
    actions = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser(
        "create",
        help="make a key (printed once)",
        description="Make an API key acting as OWNER; it is printed once, on stdout.",
    )
    create.add_argument("--owner", required=True, help="the subject the key acts as")
    create.add_argument("--name", default="", help="what it is for (shown by ls)")
    create.add_argument("--admin", action="store_true", help="the key is an admin's")
    create.add_argument(
        "--expires",
        type=int,
        default=None,
        metavar="DAYS",
        help=f"refused after this many days (1-{api_keys.MAX_EXPIRES_DAYS}; default: never)",
    )
    create.add_argument(
        "--rate-limit",
        default=None,
        metavar="RATE",
        help="its own limit ('600/minute', 'off'); default: its owner's, EXPORTD_RATE_LIMIT",
    )
    create.set_defaults(handler=cmd_keys_create)
    ls = actions.add_parser("ls", help="list the keys, newest first (never the keys themselves)")
    ls.add_argument("--owner", default=None, help="only the keys acting as this subject")
    ls.add_argument("--json", action="store_true", help='print {"data": [...]} as the API does')
    ls.set_defaults(handler=cmd_keys_ls)
    revoke = actions.add_parser("revoke", help="revoke a key: refused within seconds")
    revoke.add_argument("prefix", metavar="PREFIX", help="the key's prefix, as ls shows it")
    revoke.set_defaults(handler=cmd_keys_revoke)


def _run(settings: Settings, action: Callable[[str], Coroutine[Any, Any, int]]) -> int:
    with database_url(settings) as url:
        return asyncio.run(action(url))


def cmd_keys_create(args: argparse.Namespace, settings: Settings) -> int:
    async def go(url: str) -> int:
        async with aconnect(url) as conn:
            made = await api_keys.create_key(
                conn,
                owner_id=args.owner,
                name=args.name,
                admin=args.admin,
                expires_in_days=args.expires,
                rate_limit=args.rate_limit,
            )
        record = made.record
        facts = [f"for {record.owner_id}"]
        if record.admin:
            facts.append("admin")
        if record.expires_at:
            facts.append(f"expires {_day(record.expires_at)}")
        if record.rate_limit:
            facts.append(f"rate limit {record.rate_limit}")
        print(made.key)
        print(
            f"created API key {record.prefix} ({', '.join(facts)}); "
            "it is shown only this once: store it now",
            file=sys.stderr,
        )
        return EXIT_OK

    return _run(settings, go)


def cmd_keys_ls(args: argparse.Namespace, settings: Settings) -> int:
    async def go(url: str) -> int:
        async with aconnect(url) as conn:
            keys = await key_store.list_keys(conn, owner_id=args.owner)
        if args.json:
            print(json.dumps({"data": [api_keys.describe_key(k) for k in keys]}, indent=2))
            return EXIT_OK
        console.print(_table(keys, datetime.now(UTC)))
        return EXIT_OK

    return _run(settings, go)


def _table(keys: list[ApiKey], now: datetime) -> Table:
    # Six columns fit 80: the prefix whole at any width (it is typed back
    # into revoke); in a narrower terminal owner and name are cut instead
    # (`--json` has everything, to the second).
    table = Table(
        Column("prefix", no_wrap=True, min_width=api_keys.PREFIX_LENGTH),
        "owner",
        "name",
        Column("created", no_wrap=True),
        Column("last used", no_wrap=True),
        Column("state", no_wrap=True),
        box=None,
        pad_edge=False,
    )
    for key in keys:
        table.add_row(
            key.prefix,
            escape(key.owner_id) + (" (admin)" if key.admin else ""),
            escape(key.name or "-"),
            _day(key.created_at),
            _ago(key.last_used_at, now),
            _state(key, now),
        )
    return table


def _day(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d") if value else "-"


def _ago(value: datetime | None, now: datetime) -> str:
    """How long ago, as a person asks it ("is the old key still used?")."""
    if value is None:
        return "never"
    seconds = max(0.0, (now - value).total_seconds())
    if seconds < 60:
        return "just now"
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return "just now"


def _state(key: ApiKey, now: datetime) -> str:
    state = api_keys.key_state(key, now)
    if state == "revoked":
        return f"revoked {_day(key.revoked_at)}"
    if key.expires_at is not None:
        return f"{'expired' if state == 'expired' else 'expires'} {_day(key.expires_at)}"
    return state


def cmd_keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    async def go(url: str) -> int:
        async with aconnect(url) as conn:
            key = await api_keys.revoke_key(conn, args.prefix)
        console.print(
            f"API key {key.prefix} ({escape(key.owner_id)}) revoked at {_time(key.revoked_at)}"
        )
        return EXIT_OK

    return _run(settings, go)


def _time(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if value else "-"
