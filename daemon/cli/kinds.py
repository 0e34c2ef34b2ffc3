"""`exportd kinds ls|pause|resume`: the export kinds this configuration knows,
with their params, and holding one kind while, say, its source database is
under maintenance (DESIGN §13).

`ls` prints the same facts as `GET /api/v1/kinds` (`Kind.describe()`, with
`paused` from the database), as a table or, with `--json`, as the API's
`{"data": [...]}`. A pause is stored in PostgreSQL (`daemon.kinds.pauses`):
every worker on every host passes over the kind's pending jobs from its next
fetch on, and still does after a restart; running jobs finish. `resume` lets
them start at once.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
from collections.abc import Awaitable, Callable
from typing import Any

from rich.markup import escape
from rich.table import Table

from daemon.cli.output import EXIT_OK, console
from daemon.config import Settings
from daemon.db.connect import Connection, aconnect, database_url
from daemon.kinds import pauses
from daemon.kinds.catalog import load_kinds
from daemon.kinds.registry import KindRegistry


def add_command(commands: Any) -> None:
    kinds = commands.add_parser("kinds", help="list, pause or resume the export kinds")
    actions = kinds.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = actions.add_parser("ls", help="list the kinds, by name, and whether each is paused")
    ls.add_argument("--json", action="store_true", help='print {"data": [...]} as the API does')
    ls.set_defaults(handler=cmd_kinds_ls)
    pause = actions.add_parser(
        "pause", help="hold a kind: its pending jobs wait (on every worker), running ones finish"
    )
    pause.add_argument("kind", metavar="KIND")
    pause.set_defaults(handler=cmd_kinds_pause)
    resume = actions.add_parser("resume", help="let a paused kind's jobs run again")
    resume.add_argument("kind", metavar="KIND")
    resume.set_defaults(handler=cmd_kinds_resume)


def _run(settings: Settings, action: Callable[[Connection, KindRegistry], Awaitable[int]]) -> int:
    """`action` on a connection to exportd's database, with this configuration's kinds."""
    with database_url(settings) as url:
        registry = load_kinds(settings, url)

        async def go() -> int:
            async with aconnect(url) as conn:
                return await action(conn, registry)

        return asyncio.run(go())


def cmd_kinds_ls(args: argparse.Namespace, settings: Settings) -> int:
    async def ls(conn: Connection, registry: KindRegistry) -> int:
        kinds = await pauses.describe_kinds(conn, registry)
        if args.json:
            print(json.dumps({"data": kinds}, indent=2))
            return EXIT_OK
        table = Table("kind", "title", "params", "paused")
        for kind in kinds:
            table.add_row(
                escape(kind["kind"]),
                escape(kind["title"] or "-"),
                escape(
                    "\n".join(_param(name, spec) for name, spec in kind["params"].items()) or "-"
                ),
                "yes" if kind["paused"] else "no",
            )
        console.print(table)
        return EXIT_OK

    return _run(settings, ls)


def cmd_kinds_pause(args: argparse.Namespace, settings: Settings) -> int:
    async def pause(conn: Connection, registry: KindRegistry) -> int:
        kind = await pauses.pause_kind(conn, registry, args.kind, by=getpass.getuser())
        console.print(
            f"kind {escape(kind['kind'])} is paused: its pending jobs wait, running ones finish"
        )
        return EXIT_OK

    return _run(settings, pause)


def cmd_kinds_resume(args: argparse.Namespace, settings: Settings) -> int:
    async def resume(conn: Connection, registry: KindRegistry) -> int:
        kind = await pauses.resume_kind(conn, registry, args.kind)
        console.print(f"kind {escape(kind['kind'])} runs again")
        return EXIT_OK

    return _run(settings, resume)


def _param(name: str, spec: dict[str, Any]) -> str:
    """`since: date, default "1970-01-01"` / `text: text, required`."""
    text = f"{name}: {spec['type']}"
    if spec["required"]:
        text += ", required"
    if spec["default"] is not None:
        text += f", default {json.dumps(spec['default'])}"
    return text
