"""Where the database is, and opening connections to it.

With `EXPORTD_DATABASE_URL` set, that server is used; without it, the
embedded server in `$EXPORTD_DATA_DIR/pg` is started for as long as the
caller needs it. Connection failures become `DatabaseUnavailable` with one
line that names the server but never its password.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg.conninfo import conninfo_to_dict

from daemon.config import Settings
from daemon.embedded import EmbeddedPostgres
from daemon.errors import DatabaseUnavailable

CONNECT_TIMEOUT_SECONDS = 10
# How long a connection pool keeps retrying one failed connection (with
# psycopg_pool's doubling delay: 1, 2, 4 … s) before giving up; the next
# request that needs a connection starts a new attempt at once. Its default,
# 300 s, lets the delay grow past a minute: after an outage of a few minutes
# the API stayed 503 for up to a minute more with the database back.
POOL_RECONNECT_SECONDS = 2.0


@contextmanager
def database_url(settings: Settings) -> Iterator[str]:
    """Yield a connection string, starting the embedded server if none is configured."""
    if settings.database_url:
        yield settings.database_url
        return
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with EmbeddedPostgres(settings.embedded_pg_dir) as server:
        yield server.url()


def describe(url: str) -> str:
    """`dbname on host:port` — safe to print (no password, no options)."""
    params = conninfo_to_dict(url)
    host = str(params.get("host") or "localhost")
    port = str(params.get("port") or "5432")
    where = host if host.startswith("/") else f"{host}:{port}"
    return f"database {params.get('dbname') or params.get('user') or '?'} on {where}"


def connect(url: str, *, autocommit: bool = False) -> psycopg.Connection[tuple[object, ...]]:
    """Open a connection or raise DatabaseUnavailable with a one-line reason."""
    try:
        return psycopg.connect(url, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT_SECONDS)
    except psycopg.OperationalError as exc:
        lines = str(exc).strip().splitlines()
        # libpq: "connection failed: connection to server at ... failed: <reason>"
        reason = lines[0].rsplit(": ", 1)[-1].strip() if lines else "unknown error"
        raise DatabaseUnavailable(f"cannot connect to {describe(url)}: {reason}") from None
