"""`exportd token --sub ID [--admin] [--ttl]`: a development token."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from daemon.cli.output import EXIT_CONFIG
from daemon.config import Settings
from daemon.tokens import mint_token


def add_command(commands: Any) -> None:
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


def cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    try:
        print(mint_token(settings, subject=args.sub, admin=args.admin, ttl_seconds=args.ttl))
    except ValueError as exc:
        print(f"exportd token: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return 0
