"""Where the database is, and opening connections to it.

With `EXPORTD_DATABASE_URL` set, that server is used; without it, the
embedded server in `$EXPORTD_DATA_DIR/pg` is started for as long as the
caller needs it (created only for `up` and `migrate`). Connection failures
become `DatabaseUnavailable` with one line that names the server but never
its password, and so does any loss of the connection while it is used
(`translated_errors`): callers above this package handle exportd's errors
only, never the driver's. A command's connection (`aconnect`) also turns
"no such table" into "run `exportd migrate`": against exportd's own queries
that is what it means.
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
from daemon.errors import ConfigError, ConstraintViolation, DatabaseUnavailable, MigrationError

CONNECT_TIMEOUT_SECONDS = 10

# A connection to exportd's database, as the store modules take it.
Connection = psycopg.AsyncConnection[Any]
SyncConnection = psycopg.Connection[tuple[object, ...]]


def application_name(role: str) -> str:
    """Shown in pg_stat_activity and recorded as the worker of each attempt."""
    return f"exportd-{role} {socket.gethostname()}:{os.getpid()}"[:63]


@contextmanager
def database_url(settings: Settings, *, create: bool = False) -> Iterator[str]:
    """Yield a connection string, starting the embedded server if none is configured.

    Only a caller passing `create` (`exportd up`, `exportd migrate`) may
    initialise a new embedded server: any other command run where there is
    none (another directory, a typo in EXPORTD_DATA_DIR) says so in one line
    instead of leaving a database cluster behind.
    """
    if settings.database_url:
        yield settings.database_url
        return
    pgdata = settings.embedded_pg_dir
    if not create and not EmbeddedPostgres.exists(pgdata):
        raise ConfigError(
            "EXPORTD_DATABASE_URL",
            f'not set, and no embedded server in {pgdata}: set it, or run "exportd up" first',
        )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with EmbeddedPostgres(pgdata, create=create) as server:
        yield server.url()


# SQLSTATEs that mean "no usable connection": the connection exception class,
# and the server shutting down, starting up, dropping the database, closing
# an idle session or refusing one more client.
_CONNECTION_CLASS = "08"
_CONNECTION_STATES = frozenset({"57P01", "57P02", "57P03", "57P04", "57P05", "53300"})
# SQLSTATE class of a statement the server refuses by its own limits (an
# index row too large, a statement too complex): the input's fault.
_PROGRAM_LIMIT_CLASS = "54"


@contextmanager
def translated_errors() -> Iterator[None]:
    """Lost or refused connections, and a pool with none to give, become
    `DatabaseUnavailable` (synchronous and asynchronous code alike); a value
    beyond the server's limits becomes `ConstraintViolation` (a 400, never a
    503: retrying the same input fails the same way). Other driver errors are
    left as they are: they are bugs or server faults, not an outage."""
    try:
        yield
    except PoolTimeout as exc:
        raise DatabaseUnavailable(_reason(exc)) from exc
    except psycopg.OperationalError as exc:
        state = exc.sqlstate
        if state is None or state.startswith(_CONNECTION_CLASS) or state in _CONNECTION_STATES:
            # No SQLSTATE: psycopg's own "the connection is closed/lost".
            raise DatabaseUnavailable(_reason(exc)) from exc
        if state.startswith(_PROGRAM_LIMIT_CLASS):
            raise ConstraintViolation(
                "a value is too large for the database to store or index"
            ) from None
        raise


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
        with translated_errors(), _missing_schema_as_migration_error():
            yield conn


# SQLSTATEs of a statement naming a schema, table, column, function or type
# that does not exist. A command's statements are exportd's own queries, so
# they mean a database that was never migrated, or is behind this version.
_MISSING_OBJECT_STATES = frozenset({"3F000", "42P01", "42703", "42883", "42704"})
NOT_MIGRATED = "the database schema is not up to date; run `exportd migrate`"


@contextmanager
def _missing_schema_as_migration_error() -> Iterator[None]:
    try:
        yield
    except psycopg.Error as exc:
        if exc.sqlstate in _MISSING_OBJECT_STATES:
            raise MigrationError(NOT_MIGRATED) from None
        raise


def _reason(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    # libpq: "connection failed: connection to server at ... failed: <reason>"
    return lines[0].rsplit(": ", 1)[-1].strip() if lines else type(exc).__name__
