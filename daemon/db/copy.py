"""Streaming one configured query out of PostgreSQL with COPY … TO STDOUT.

The query text comes only from the exports file (data, composed into the
COPY statement of `sql/queries/exports.sql` with `psycopg.sql`, never
formatted into a string); job params reach it as bound values. It runs on a
connection of its own — the export database may not be exportd's — in a
READ ONLY transaction with an optional statement timeout, so an export can
neither change data nor hold the server longer than the operator allowed.

Driver errors leave this module as `QueryFailed` (the server's one-line
message and SQLSTATE, never connection details) or `DatabaseUnavailable`.
A `QueryFailed` is marked permanent when its SQLSTATE says the same query
with the same values can never succeed (`never_transient`): the worker then
fails the job at once instead of retrying it (DESIGN §16).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import psycopg
from psycopg.sql import SQL

from daemon.db.queries import named_queries
from daemon.errors import DatabaseUnavailable, QueryFailed

Q = named_queries("copy")
FORMATS = ("csv", "jsonl")

# SQLSTATE classes no retry can fix: the query text, the objects it names,
# the role's rights or the bound values are wrong, and stay wrong.
PERMANENT_SQLSTATE_CLASSES = frozenset(
    {
        "0A",  # feature not supported
        "21",  # cardinality violation (a scalar subquery returned several rows)
        "22",  # data exception: a value the server rejects (overflow, bad datetime…)
        "26",  # invalid SQL statement name
        "2F",  # SQL routine exception
        "34",  # invalid cursor name
        "3F",  # invalid schema name
        "42",  # syntax error or access rule violation (42601, 42P01, 42703, 42501…)
        "44",  # WITH CHECK OPTION violation
        "54",  # program limit exceeded (statement too complex, too many columns)
    }
)
# Single codes of otherwise mixed classes.
PERMANENT_SQLSTATES = frozenset(
    {
        "25006",  # read_only_sql_transaction: the query writes, exports are read-only
    }
)
# Everything else stays retryable: connection loss (08), serialization
# failures and deadlocks (40), statement timeout and cancel, server shutdown
# (57), insufficient resources (53), lock not available (55P03), I/O and
# internal errors (58, XX), and errors raised by user functions (P0).


def never_transient(sqlstate: str | None) -> bool:
    """True when an error with this SQLSTATE will recur on every retry."""
    if not sqlstate:
        return False
    return sqlstate in PERMANENT_SQLSTATES or sqlstate[:2] in PERMANENT_SQLSTATE_CLASSES


class QueryCopy:
    """One read-only connection that COPYs one query at a time."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._conn = conn
        self.rows = 0  # from the server's "COPY n" command tag

    @classmethod
    async def connect(cls, url: str, *, application_name: str) -> QueryCopy:
        """Open the connection; DatabaseUnavailable carries the driver's reason
        for the operator's log (it names host and user: not for the owner)."""
        try:
            conn = await psycopg.AsyncConnection.connect(
                url, client_encoding="UTF8", application_name=application_name
            )
        except psycopg.Error as exc:
            raise DatabaseUnavailable(" ".join(str(exc).split())) from None
        try:
            await conn.set_read_only(True)
        except BaseException:
            await conn.close()
            raise
        return cls(conn)

    async def stream(
        self,
        query: str,
        params: dict[str, Any],
        *,
        fmt: str,
        statement_timeout_ms: int | None = None,
    ) -> AsyncGenerator[bytes]:
        """Yield the COPY output of `query` in the server's chunks, then commit."""
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}")
        # The text is the operator's, read from the exports file at start; no
        # request ever reaches it, so it may be treated as trusted SQL.
        statement = SQL(Q[f"copy_{fmt}"]).format(query=SQL(query))
        try:
            async with self._conn.cursor() as cur:
                if statement_timeout_ms is not None:
                    await cur.execute(Q["set_statement_timeout"], {"ms": str(statement_timeout_ms)})
                async with cur.copy(statement, params) as copy:
                    async for chunk in copy:
                        yield bytes(chunk)
                self.rows = max(cur.rowcount, 0)
            await self._conn.commit()
        except psycopg.Error as exc:
            raise QueryFailed(
                _describe(exc), sqlstate=exc.sqlstate, permanent=never_transient(exc.sqlstate)
            ) from exc

    async def cancel(self, *, wait_seconds: float) -> None:
        """Ask the server to cancel the running statement (safe to repeat)."""
        await self._conn.cancel_safe(timeout=wait_seconds)

    async def close(self) -> None:
        await self._conn.close()


def _describe(exc: psycopg.Error) -> str:
    """One line: the server's primary message and SQLSTATE, never connection details."""
    message = exc.diag.message_primary or (str(exc).splitlines() or [type(exc).__name__])[0]
    return f"{message} (SQLSTATE {exc.sqlstate})" if exc.sqlstate else message
