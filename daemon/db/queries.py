"""Finding and parsing exportd's `.sql` files.

All SQL exportd runs lives in `sql/`: numbered migrations and named runtime
queries. A query file holds several statements, each introduced by a header
line `-- name: get_job`; the text up to the next header is the statement.
Files are parsed once per process.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import LiteralString

_HEADER = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


@cache
def sql_dir() -> Path:
    """`daemon/sql` in an installed wheel, `sql/` at the top of a checkout."""
    here = Path(__file__).resolve().parents[1]  # daemon/
    for candidate in (here / "sql", here.parent / "sql"):
        if (candidate / "migrations").is_dir():
            return candidate
    raise FileNotFoundError("exportd's sql/ directory is missing from this installation")


@cache
def named_queries(name: str) -> dict[str, LiteralString]:
    """Parse `sql/queries/<name>.sql` into {query name: statement}."""
    text = (sql_dir() / "queries" / f"{name}.sql").read_text()
    parts = _HEADER.split(text)
    queries: dict[str, LiteralString] = {}
    # parts = [preamble, name1, body1, name2, body2, ...]
    for query_name, body in zip(parts[1::2], parts[2::2], strict=True):
        statement = _strip_comments(body)
        if query_name in queries:
            raise ValueError(f"{name}.sql: query {query_name!r} is defined twice")
        if not statement:
            raise ValueError(f"{name}.sql: query {query_name!r} is empty")
        # The text comes from our own file, never from input: it is as
        # trustworthy as a literal in the source (mypy treats LiteralString as str).
        queries[query_name] = statement
    return queries


def _strip_comments(body: str) -> str:
    lines = [line for line in body.strip().splitlines() if not line.lstrip().startswith("--")]
    return "\n".join(lines).strip().rstrip(";").strip()
