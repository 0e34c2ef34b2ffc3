"""Streaming one configured query out of PostgreSQL with COPY … TO STDOUT.

The query text comes only from the exports file (data, composed into the
COPY statement of `sql/queries/exports.sql` with `psycopg.sql`, never
formatted into a string); job params reach it as bound values. It runs on a
connection of its own — the export database may not be exportd's — in a
READ ONLY transaction with an optional statement timeout, so an export can
neither change data nor hold the server longer than the operator allowed.

Driver errors leave this module as `QueryFailed` (the server's one-line
message and SQLSTATE, never connection details) or `DatabaseUnavailable`.
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
            raise QueryFailed(_describe(exc), sqlstate=exc.sqlstate) from exc

    async def cancel(self, *, wait_seconds: float) -> None:
        """Ask the server to cancel the running statement (safe to repeat)."""
        await self._conn.cancel_safe(timeout=wait_seconds)

    async def close(self) -> None:
        await self._conn.close()


def _describe(exc: psycopg.Error) -> str:
    """One line: the server's primary message and SQLSTATE, never connection details."""
    message = exc.diag.message_primary or (str(exc).splitlines() or [type(exc).__name__])[0]
    return f"{message} (SQLSTATE {exc.sqlstate})" if exc.sqlstate else message
