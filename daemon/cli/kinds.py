"""`exportd kinds ls`: the export kinds this configuration knows, with their params.

The same facts as `GET /api/v1/kinds` (`Kind.describe()`), as a table or,
with `--json`, as the API's `{"data": [...]}`. It reads the configuration
only (exports file, EXPORTD_KINDS, entry points): no database is needed, and
none is started.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.markup import escape
from rich.table import Table

from daemon.cli.output import EXIT_OK, console
from daemon.config import Settings
from daemon.kinds.catalog import load_kinds


def add_command(commands: Any) -> None:
    kinds = commands.add_parser("kinds", help="list the export kinds and their parameters")
    actions = kinds.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = actions.add_parser("ls", help="list the kinds, by name")
    ls.add_argument("--json", action="store_true", help='print {"data": [...]} as the API does')
    ls.set_defaults(handler=cmd_kinds_ls)


def cmd_kinds_ls(args: argparse.Namespace, settings: Settings) -> int:
    # SQL kinds remember which database they read; listing them reads none,
    # so the configured URL (or none, with the embedded server) is enough.
    kinds = load_kinds(settings, settings.database_url or "").describe()
    if args.json:
        print(json.dumps({"data": kinds}, indent=2))
        return EXIT_OK
    table = Table("kind", "title", "params", "paused")
    for kind in kinds:
        table.add_row(
            escape(kind["kind"]),
            escape(kind["title"] or "-"),
            escape("\n".join(_param(name, spec) for name, spec in kind["params"].items()) or "-"),
            "yes" if kind["paused"] else "no",
        )
    console.print(table)
    return EXIT_OK


def _param(name: str, spec: dict[str, Any]) -> str:
    """`since: date, default "1970-01-01"` / `text: text, required`."""
    text = f"{name}: {spec['type']}"
    if spec["required"]:
        text += ", required"
    if spec["default"] is not None:
        text += f", default {json.dumps(spec['default'])}"
    return text
