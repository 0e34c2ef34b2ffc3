"""What a PostgreSQL connection string may be, and how to name one safely.

One validator for every place a URL comes from (`EXPORTD_DATABASE_URL`, a
kind's `database_url` in the exports file): messages never repeat the value,
which may carry a password.
"""

from __future__ import annotations

from psycopg import ProgrammingError
from psycopg.conninfo import conninfo_to_dict


def check_database_url(raw: str) -> str:
    """The stripped URL, or ValueError saying what is wrong (without the value)."""
    url = raw.strip()
    if not url:
        raise ValueError("must be a non-empty string")
    if "://" in url and not url.startswith(("postgresql://", "postgres://")):
        raise ValueError("must be a postgresql:// URL or a libpq connection string")
    try:
        conninfo_to_dict(url)
    except ProgrammingError:
        raise ValueError("is not a valid PostgreSQL connection string") from None
    return url


def describe(url: str) -> str:
    """`dbname on host:port` — safe to print (no password, no options)."""
    params = conninfo_to_dict(url)
    host = str(params.get("host") or "localhost")
    port = str(params.get("port") or "5432")
    where = host if host.startswith("/") else f"{host}:{port}"
    return f"database {params.get('dbname') or params.get('user') or '?'} on {where}"
