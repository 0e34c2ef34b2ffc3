"""Where the database is, and opening connections to it.

With `EXPORTD_DATABASE_URL` set, that server is used; without it, the
embedded server in `$EXPORTD_DATA_DIR/pg` is started for as long as the
caller needs it. Connection failures become `DatabaseUnavailable` with one
line that names the server but never its password, and so does any loss of
the connection while it is used (`translated_errors`): callers above this
package handle exportd's errors only, never the driver's.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import psycopg
from psycopg_pool import PoolTimeout

from daemon.config import Settings
from daemon.db.embedded import EmbeddedPostgres
from daemon.db.urls import describe
from daemon.errors import DatabaseUnavailable

CONNECT_TIMEOUT_SECONDS = 10

# A connection to exportd's database, as the store modules take it.
Connection = psycopg.AsyncConnection[Any]
SyncConnection = psycopg.Connection[tuple[object, ...]]


def application_name(role: str) -> str:
    """Shown in pg_stat_activity and recorded as the worker of each attempt."""
    return f"exportd-{role} {socket.gethostname()}:{os.getpid()}"[:63]


@contextmanager
def database_url(settings: Settings) -> Iterator[str]:
    """Yield a connection string, starting the embedded server if none is configured."""
    if settings.database_url:
        yield settings.database_url
        return
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with EmbeddedPostgres(settings.embedded_pg_dir) as server:
        yield server.url()


@contextmanager
def translated_errors() -> Iterator[None]:
    """Lost or refused connections, and a pool with none to give, become
    `DatabaseUnavailable` (synchronous and asynchronous code alike)."""
    try:
        yield
    except (psycopg.OperationalError, PoolTimeout) as exc:
        raise DatabaseUnavailable(_reason(exc)) from exc


def connect(url: str, *, autocommit: bool = False) -> SyncConnection:
    """Open a connection or raise DatabaseUnavailable with a one-line reason."""
    try:
        return psycopg.connect(url, autocommit=autocommit, connect_timeout=CONNECT_TIMEOUT_SECONDS)
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"cannot connect to {describe(url)}: {_reason(exc)}") from None


@asynccontextmanager
async def aconnect(url: str, *, role: str = "cli") -> AsyncIterator[Connection]:
    """One autocommit connection for a command; errors translated while it is used."""
    try:
        conn = await psycopg.AsyncConnection.connect(
            url,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            application_name=application_name(role),
        )
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"cannot connect to {describe(url)}: {_reason(exc)}") from None
    async with conn:
        with translated_errors():
            yield conn


def _reason(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    # libpq: "connection failed: connection to server at ... failed: <reason>"
    return lines[0].rsplit(": ", 1)[-1].strip() if lines else type(exc).__name__
